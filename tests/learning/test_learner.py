"""Per-key prequential learning: round batching equals one event at a time."""

import numpy as np
import pytest
import torch
from torch.func import grad

from streamlearn.config import LearnerConfig
from streamlearn.learning.learner import OnlineLearner
from streamlearn.model.scaling import RunningStandardizer
from streamlearn.model.spec import ModelSpec
from streamlearn.state.keys import rounds
from tests.helpers import event_batch, per_key_rules


def _stream(n=60, d=3, n_keys=4, seed=0, unlabelled=0.25):
    rng = np.random.default_rng(seed)
    keys = [f"k{k}" for k in rng.integers(0, n_keys, n)]
    x = rng.normal(size=(n, d))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(float)
    y[rng.random(n) < unlabelled] = np.nan
    return keys, x, y


SPECS = [
    ModelSpec(3),
    ModelSpec(3, hidden=(4,)),
    ModelSpec(3, "multiclass", n_classes=3),
    ModelSpec(3, "regression"),
]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_round_batching_equals_one_event_at_a_time(spec):
    cfg = per_key_rules(learning_rate=0.3, proximal_lambda=0.05)
    theta0 = spec.init(seed=3, kind="normal")
    keys, x, y = _stream()
    if spec.task == "multiclass":
        y = np.where(np.isnan(y), np.nan, (np.abs(x[:, 2]) * 2).astype(int) % 3)
    batched = OnlineLearner(spec, cfg, theta0, standardize=False)
    single = OnlineLearner(spec, cfg, theta0, standardize=False)
    res = batched.process(event_batch(keys, x, y))
    for i in range(len(keys)):
        one = single.process(event_batch(keys[i : i + 1], x[i : i + 1], y[i : i + 1]))
        np.testing.assert_allclose(res.p[i], one.p[0], rtol=1e-5, atol=1e-6)
        if not np.isnan(y[i]):
            assert res.loss[i] == pytest.approx(one.loss[0], rel=1e-5, abs=1e-6)
    for k in set(keys):
        torch.testing.assert_close(batched.params_of(k), single.params_of(k))
        torch.testing.assert_close(batched.accum_of(k), single.accum_of(k))


def test_learner_equals_sequential_reference_built_on_torch_func():
    spec = ModelSpec(3, hidden=(4,))
    cfg = per_key_rules(learning_rate=0.2, proximal_lambda=0.1, adagrad_eps=1e-10)
    theta0 = spec.init(seed=1)
    keys, x, y = _stream(n=40, n_keys=3, seed=4)
    learner = OnlineLearner(spec, cfg, theta0, standardize=False)
    res = learner.process(event_batch(keys, x, y))

    def objective(w, xi, yi):
        return spec.loss_one(w, xi, yi) + 0.5 * cfg.proximal_lambda * ((w - theta0) ** 2).sum()

    w = {k: theta0.clone() for k in set(keys)}
    acc = {k: torch.full_like(theta0, cfg.initial_accumulator) for k in set(keys)}
    for i, k in enumerate(keys):
        xi = torch.tensor(x[i], dtype=torch.float32)
        p = torch.sigmoid(spec.forward_one(w[k], xi[None]))[0, 0]
        assert float(p) == pytest.approx(float(res.p[i]), abs=1e-5)
        if np.isnan(y[i]):
            continue
        g = grad(objective)(w[k], xi, torch.tensor(float(y[i])))
        acc[k] = acc[k] + g * g
        w[k] = w[k] - cfg.learning_rate * g / (acc[k].sqrt() + cfg.adagrad_eps)
    for k, expected in w.items():
        torch.testing.assert_close(learner.params_of(k), expected, rtol=1e-4, atol=1e-5)


def test_rounds_group_occurrences_within_key():
    order, sizes = rounds(np.array([5, 5, 2, 5, 2, 9]))
    assert sizes == [3, 2, 1]
    assert order.tolist() == [0, 2, 5, 1, 4, 3]


def test_unlabelled_events_predict_but_do_not_learn():
    spec = ModelSpec(2)
    learner = OnlineLearner(spec, per_key_rules(), spec.init(kind="zeros"), standardize=False)
    res = learner.process(event_batch(["a", "a"], [[1, 2], [3, 4]], [np.nan, np.nan]))
    assert res.p.tolist() == [0.5, 0.5]
    assert np.isnan(res.loss).all()
    assert torch.equal(learner.params_of("a"), torch.zeros(3))


def test_reset_returns_keys_to_theta0_and_fresh_adagrad_state():
    spec = ModelSpec(2)
    theta0 = torch.tensor([0.1, -0.2, 0.3])
    cfg = per_key_rules(initial_accumulator=0.1)
    learner = OnlineLearner(spec, cfg, theta0, standardize=False)
    learner.process(event_batch(["a", "b"], [[1, 2], [3, 4]], [1, 0]))
    assert not torch.equal(learner.params_of("a"), theta0)
    assert learner.reset(["a", "unknown"]) == 1
    torch.testing.assert_close(learner.params_of("a"), theta0)
    torch.testing.assert_close(learner.accum_of("a"), torch.full((3,), 0.1))
    assert not torch.equal(learner.params_of("b"), theta0)
    assert learner.reset_all() == 2
    torch.testing.assert_close(learner.params_of("b"), theta0)


def test_new_meta_init_applies_to_new_keys_and_resets():
    spec = ModelSpec(1)
    learner = OnlineLearner(spec, per_key_rules(), spec.init(kind="zeros"), standardize=False)
    learner.process(event_batch(["a"], [[1.0]], [1]))
    learner.set_theta0(torch.ones(2), version=3)
    assert learner.model_version == 3
    torch.testing.assert_close(learner.params_of("new"), torch.ones(2))
    learner.reset(["a"])
    torch.testing.assert_close(learner.params_of("a"), torch.ones(2))
    with pytest.raises(ValueError, match="theta0 shape"):
        learner.set_theta0(torch.ones(3), version=4)


def test_guard_rolls_back_non_finite_updates_per_key():
    spec = ModelSpec(1, "regression")
    learner = OnlineLearner(spec, per_key_rules(), spec.init(kind="zeros"), standardize=False)
    res = learner.process(event_batch(["bad", "ok"], [[1.0], [1.0]], [1e30, 1.0]))
    assert res.rollbacks == 1
    assert torch.equal(learner.params_of("bad"), torch.zeros(2))
    assert torch.equal(
        learner.accum_of("bad"), torch.full((2,), LearnerConfig().initial_accumulator)
    )
    assert float(learner.params_of("ok")[1]) > 0
    res = learner.process(event_batch(["bad"], [[1.0]], [1.0]))  # the key still learns afterwards
    assert res.rollbacks == 0
    assert float(learner.params_of("bad")[1]) > 0


def test_guard_rolls_back_steps_longer_than_the_limit():
    spec = ModelSpec(1, "regression")
    cfg = per_key_rules(learning_rate=10.0, max_step_norm=1.0)
    learner = OnlineLearner(spec, cfg, spec.init(kind="zeros"), standardize=False)
    res = learner.process(event_batch(["a"], [[1.0]], [5.0]))  # AdaGrad's first step: 10 per weight
    assert res.rollbacks == 1
    assert torch.equal(learner.params_of("a"), torch.zeros(2))


def test_capacity_grows_past_initial_table():
    spec = ModelSpec(1)
    learner = OnlineLearner(spec, per_key_rules(), spec.init(kind="zeros"))
    keys = [f"k{i}" for i in range(500)]
    learner.process(event_batch(keys, np.ones((500, 1)), np.ones(500)))
    assert learner.n_keys == 500
    assert float(learner.params_of("k499")[1]) != 0.0  # the bias (x standardises to 0)


def test_theta0_shape_is_validated():
    with pytest.raises(ValueError, match="theta0 has shape"):
        OnlineLearner(ModelSpec(2), per_key_rules(), torch.zeros(5))


def test_running_standardizer_matches_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    s = RunningStandardizer(4)
    for chunk in np.array_split(data, 7):
        s.update(chunk)
    np.testing.assert_allclose(s.mean, data.mean(0))
    np.testing.assert_allclose(s.std, data.std(0), rtol=1e-6)
    s2 = RunningStandardizer(4)
    s2.load_state_dict(s.state_dict())
    np.testing.assert_allclose(s2.transform(data[:3]), s.transform(data[:3]))


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_personal_hidden_scales_a_keys_own_steps_on_the_hidden_layers(fraction):
    """Oracle: AdaGrad by hand on torch.func's gradient, the hidden layers' rate times
    ``learner.personal_hidden``, the output layer's in full."""
    spec = ModelSpec(3, hidden=(4,))
    cfg = per_key_rules(learning_rate=0.3, proximal_lambda=0.1, personal_hidden=fraction)
    theta0 = spec.init(seed=2)
    keys, x, y = _stream(n=30, n_keys=2, seed=5, unlabelled=0.0)
    learner = OnlineLearner(spec, cfg, theta0, standardize=False)
    learner.process(event_batch(keys, x, y))

    def objective(w, xi, yi):
        return spec.loss_one(w, xi, yi) + 0.5 * cfg.proximal_lambda * ((w - theta0) ** 2).sum()

    head = torch.tensor(spec.head_mask())
    rate = torch.where(head, torch.tensor(1.0), torch.tensor(fraction)) * cfg.learning_rate
    w = {k: theta0.clone() for k in set(keys)}
    acc = {k: torch.full_like(theta0, cfg.initial_accumulator) for k in set(keys)}
    for i, k in enumerate(keys):
        g = grad(objective)(w[k], torch.tensor(x[i], dtype=torch.float32), torch.tensor(y[i]))
        acc[k] = acc[k] + g * g
        w[k] = w[k] - rate * g / (acc[k].sqrt() + cfg.adagrad_eps)
    for k, expected in w.items():
        got = learner.params_of(k)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        if fraction == 0.0:  # the hidden layers stay the shared start's
            assert torch.equal(got[~head], theta0[~head])
        assert not torch.allclose(got[head], theta0[head])


def test_personal_hidden_is_validated():
    with pytest.raises(ValueError, match="personal_hidden"):
        LearnerConfig(personal_hidden=1.5)

"""The compiled round loop against its reference, the numpy rounds (themselves held to
torch.func and torch.optim in test_learner.py), on every model family and learner option
the loop computes."""

import numpy as np
import pytest
import torch

from streamlearn.config import HypergradientConfig, LearnerConfig, SharedConfig
from streamlearn.learning import kernel
from streamlearn.learning.learner import OnlineLearner
from streamlearn.model.spec import ModelSpec
from tests.helpers import event_batch

SPECS = [
    ModelSpec(3),
    ModelSpec(3, hidden=(6, 5)),
    ModelSpec(3, hidden=(6,), activation="relu"),
    ModelSpec(3, "multiclass", n_classes=3, hidden=(4,)),
    ModelSpec(3, "regression", hidden=(4,)),
]
CONFIGS = {
    "per-key": LearnerConfig(learning_rate=0.3, shared=SharedConfig(enabled=False)),
    "shared": LearnerConfig(learning_rate=0.2, shared=SharedConfig(step_labels=3, forgetting=0.99)),
    "personal-hidden": LearnerConfig(learning_rate=0.2, personal_hidden=0.25),
    "no-proximal": LearnerConfig(proximal_lambda=0.0, shared=SharedConfig(enabled=False)),
}


def _polls(spec, n_polls=6, n=80, n_keys=5, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n_polls):
        keys = [f"k{k}" for k in rng.integers(0, n_keys, n)]
        x = rng.normal(size=(n, 3))
        if spec.task == "multiclass":
            y = (np.abs(x[:, 0]) * 2).astype(int) % 3 * 1.0
        elif spec.task == "regression":
            y = x[:, 0] - 0.5 * x[:, 1]
        else:
            y = (x[:, 0] * x[:, 1] > 0).astype(float)
        y[rng.random(n) < 0.3] = np.nan
        yield keys, x, y


def _pair(spec, cfg):
    theta0 = spec.init(seed=2, kind="normal")
    return (
        OnlineLearner(spec, cfg, theta0, compiled=True),
        OnlineLearner(spec, cfg, theta0, compiled=False),
    )


def _assert_same(a, b, ra, rb):
    np.testing.assert_allclose(ra.p, rb.p, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ra.loss, rb.loss, rtol=1e-4, atol=1e-5)
    assert ra.rollbacks == rb.rollbacks
    assert ra.mean_step == pytest.approx(rb.mean_step, rel=1e-4)
    np.testing.assert_allclose(a.tables()[0], b.tables()[0], rtol=1e-4, atol=1e-5)
    for k in a.keys.names():
        torch.testing.assert_close(a.accum_of(k), b.accum_of(k), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.theta0, b.theta0, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_compiled_rounds_equal_numpy_rounds(spec, config):
    cfg = CONFIGS[config]
    a, b = _pair(spec, cfg)
    assert a.compiled
    assert not b.compiled
    for keys, x, y in _polls(spec):
        _assert_same(a, b, a.process(event_batch(keys, x, y)), b.process(event_batch(keys, x, y)))


def test_compiled_rounds_equal_numpy_rounds_for_label_answers_and_pool_starts():
    spec = ModelSpec(3, hidden=(5,))
    cfg = LearnerConfig(shared=SharedConfig(step_labels=2))
    a, b = _pair(spec, cfg)
    pool = spec.init(seed=7)[None].repeat(2, 1) * torch.tensor([[0.5], [-0.5]])
    for i, (keys, x, y) in enumerate(_polls(spec, n_polls=4)):
        if i == 1:
            for lr in (a, b):
                lr.set_pool(pool)
                lr.reset(["k1", "k2"], start=1)
                lr.reset(["k3"], start=2)
        batch = event_batch(keys, x, y)
        _assert_same(a, b, a.process(batch), b.process(batch))
        # label answers: one round of distinct keys, cut every step_labels labels
        first = {k: j for j, k in reversed(list(enumerate(keys)))}
        rows = sorted(first.values())
        answers = event_batch([keys[j] for j in rows], x[rows], np.nan_to_num(y[rows]))
        ra = a.process(answers, update_scaler=False, cut_rounds=True)
        rb = b.process(answers, update_scaler=False, cut_rounds=True)
        _assert_same(a, b, ra, rb)


def test_compiled_guard_rolls_back_like_the_numpy_guard():
    spec = ModelSpec(2, "regression", hidden=(3,))
    cfg = LearnerConfig(max_step_norm=0.5, learning_rate=1.0, shared=SharedConfig(enabled=False))
    a, b = _pair(spec, cfg)
    x = np.array([[1.0, 2.0], [0.1, 0.0], [1e20, 1.0], [0.2, 0.1]])
    y = np.array([1e6, 0.1, 1.0, 0.3])
    keys = ["a", "b", "c", "a"]
    ra, rb = a.process(event_batch(keys, x, y)), b.process(event_batch(keys, x, y))
    assert ra.rollbacks == rb.rollbacks >= 1
    _assert_same(a, b, ra, rb)


def test_options_the_loop_does_not_compute_keep_the_numpy_rounds():
    spec = ModelSpec(3)
    assert kernel.supports(LearnerConfig(), per_round=False)
    assert not kernel.supports(LearnerConfig(), per_round=True)
    assert not kernel.supports(LearnerConfig(guard_loss_factor=2.0), per_round=False)
    hyper = LearnerConfig(hypergradient=HypergradientConfig(enabled=True))
    assert not OnlineLearner(spec, hyper, spec.init(kind="zeros")).compiled


def test_compiled_tanh_is_within_float32_rounding_of_tanh():
    x = np.concatenate(
        [np.linspace(-12, 12, 200_001), [0.0, -0.0, 1e-30, 50.0, -50.0, np.inf, -np.inf]]
    ).astype(np.float32)
    got = np.array([kernel.tanh_f32(v) for v in x[::50]] + [kernel.tanh_f32(v) for v in x[-7:]])
    ref = np.tanh(np.concatenate([x[::50], x[-7:]]).astype(np.float64))
    np.testing.assert_allclose(got, ref, rtol=0, atol=4e-7)
    assert np.isnan(kernel.tanh_f32(np.float32(np.nan)))

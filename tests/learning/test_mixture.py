"""The expert mixture against fixed share by hand, the linear expert against torch.optim, and
the learner's mixture: what it serves, and that a checkpoint carries it."""

import math

import numpy as np
import pytest
import torch

from streamlearn.config import (
    LearnerConfig,
    LinearExpertConfig,
    MixtureConfig,
    SharedConfig,
    SplineExpertConfig,
)
from streamlearn.learning.learner import OnlineLearner
from streamlearn.learning.linear import LinearExpert
from streamlearn.learning.mixture import ExpertMixture
from streamlearn.model.spec import ModelSpec
from tests.helpers import event_batch


def test_fixed_share_by_hand():
    share = 0.1
    a = np.array([[0.8], [0.3], [0.6]], np.float32)  # expert A: P(class 1) per event
    b = np.array([[0.4], [0.9], [0.5]], np.float32)
    y = np.array([1.0, 1.0, 0.0], np.float32)
    labelled = np.array([True, False, True])
    m = ExpertMixture(share)
    p, loss = m.mix([a, b], y, labelled)
    # event 0: weights 1/2, 1/2
    assert p[0, 0] == pytest.approx(0.6)
    assert loss[0] == pytest.approx(-math.log(0.6), rel=1e-6)
    va, vb = 0.5 * 0.8, 0.5 * 0.4
    va, vb = va / (va + vb), vb / (va + vb)  # 2/3, 1/3
    wa, wb = (1 - share) * va + share * vb, (1 - share) * vb + share * va
    # event 1: unlabelled, predicted with those weights, no update
    assert p[1, 0] == pytest.approx(wa * 0.3 + wb * 0.9, rel=1e-6)
    assert loss[1] == 0.0
    # event 2: label 0, so each expert's probability of it is 1 - p
    assert p[2, 0] == pytest.approx(wa * 0.6 + wb * 0.5, rel=1e-6)
    assert loss[2] == pytest.approx(-math.log(1 - (wa * 0.6 + wb * 0.5)), rel=1e-6)
    va, vb = wa * 0.4, wb * 0.5
    va, vb = va / (va + vb), vb / (va + vb)
    expected = [(1 - share) * va + share * vb, (1 - share) * vb + share * va]
    np.testing.assert_allclose(m.weights, expected, rtol=1e-6)


def test_fixed_share_over_three_classes_and_three_experts():
    experts = [
        np.array([[0.7, 0.2, 0.1]], np.float32),
        np.array([[0.2, 0.5, 0.3]], np.float32),
        np.array([[1 / 3, 1 / 3, 1 / 3]], np.float32),
    ]
    m = ExpertMixture(0.06, n_experts=3)
    p, loss = m.mix(experts, np.array([1.0], np.float32), np.array([True]))
    np.testing.assert_allclose(p[0], np.mean([e[0] for e in experts], axis=0), rtol=1e-6)
    assert loss[0] == pytest.approx(-math.log(p[0, 1]), rel=1e-6)
    v = np.array([0.2, 0.5, 1 / 3]) / (0.2 + 0.5 + 1 / 3)
    expected = [(1 - 0.06) * v[i] + 0.06 / 2 * (1 - v[i]) for i in range(3)]
    np.testing.assert_allclose(m.weights, expected, rtol=1e-6)


def test_a_saturated_expert_keeps_a_weight_and_the_mixture_stays_finite():
    m = ExpertMixture(0.001)
    _, loss = m.mix(
        [np.array([[0.0]], np.float32), np.array([[0.9]], np.float32)],
        np.array([1.0], np.float32),
        np.array([True]),
    )
    assert np.isfinite(loss).all()
    assert 0 < m.weights[0] < 0.01


def test_a_sleeping_expert_predicts_what_the_awake_ones_mix_by_hand():
    share = 0.1
    a = np.array([[0.8], [0.7]], np.float32)
    b = np.array([[0.4], [0.2]], np.float32)
    sleeper = np.array([[np.nan], [0.9]], np.float32)
    m = ExpertMixture(share, n_experts=3)
    p, _ = m.mix([a, b, sleeper], np.array([1.0, 1.0], np.float32), np.array([True, True]))
    # event 0: the awake experts' mixture, renormalised over their weights
    assert p[0, 0] == pytest.approx(0.6)
    # the sleeper is taken to have predicted that mixture (0.6)
    v = np.array([0.8, 0.4, 0.6]) / 3
    v /= v.sum()
    w = (1 - share) * v + share / 2 * (1 - v)
    assert p[1, 0] == pytest.approx(float(w @ [0.7, 0.2, 0.9]), rel=1e-6)
    # predict() agrees with mix() on what it serves
    m2 = ExpertMixture(share, n_experts=3)
    np.testing.assert_allclose(m2.predict([a[:1], b[:1], sleeper[:1]]), [[0.6]], rtol=1e-6)


def test_binary_calibration_is_one_adagrad_step_of_platt_scaling_by_hand():
    rate = 0.5
    m = ExpertMixture(0.0, n_experts=2, calibration_rate=rate)
    experts = [np.array([[0.8], [0.8]], np.float32), np.array([[0.3], [0.3]], np.float32)]
    p, _ = m.mix(experts, np.array([0.0, 0.0], np.float32), np.array([True, False]))
    z = math.log(0.8 / 0.2)
    # first event: identity calibration, so the plain mixture
    assert p[0, 0] == pytest.approx(0.55, rel=1e-6)
    # expert 0's step on label 0: g = q - y = 0.8; d/da = g z, d/db = g
    g = float(np.float32(0.8)) - 0.0
    a = 1.0 - rate * g * z / math.sqrt(1e-2 + (g * z) ** 2)
    b = -rate * g / math.sqrt(1e-2 + g * g)
    assert m.calibration[0] == pytest.approx([a, b], rel=1e-5)
    q0 = 1 / (1 + math.exp(-(a * z + b)))
    z1 = math.log(0.3 / 0.7)
    g1 = float(np.float32(0.3))
    a1 = 1.0 - rate * g1 * z1 / math.sqrt(1e-2 + (g1 * z1) ** 2)
    b1 = -rate * g1 / math.sqrt(1e-2 + g1 * g1)
    q1 = 1 / (1 + math.exp(-(a1 * z1 + b1)))
    assert p[1, 0] == pytest.approx(float(m.weights @ [q0, q1]), rel=1e-5)


def test_multiclass_calibration_keeps_each_experts_ranking_and_lowers_an_overconfident_loss():
    rng = np.random.default_rng(0)
    n = 3000
    y = rng.integers(0, 3, n)
    # an expert right 70% of the time, but sure of itself (0.98 on its pick)
    pick = np.where(rng.random(n) < 0.7, y, (y + rng.integers(1, 3, n)) % 3)
    sure = np.full((n, 3), 0.01, np.float32)
    sure[np.arange(n), pick] = 0.98
    flat = np.full((n, 3), 1 / 3, np.float32)
    plain = ExpertMixture(0.001, n_experts=2, n_outputs=3)
    calibrated = ExpertMixture(0.001, n_experts=2, n_outputs=3, calibration_rate=0.03)
    lab = np.ones(n, bool)
    _, loss_plain = plain.mix([sure, flat], y.astype(np.float32), lab)
    p_cal, loss_cal = calibrated.mix([sure, flat], y.astype(np.float32), lab)
    assert loss_cal[1000:].mean() < loss_plain[1000:].mean() - 0.05
    # a positive scale keeps the expert's ranking; the biases (a class prior) may move a
    # near tie, no more
    assert calibrated.calibration[0, 0] > 0
    assert (p_cal[1000:].argmax(1) == pick[1000:]).mean() > 0.99
    # the calibrated expert earns more weight than the overconfident one did
    assert calibrated.weights[0] > plain.weights[0]


def test_a_checkpoint_from_before_the_new_experts_loads_with_them_added():
    old = {"weights": torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)}  # no names
    names = ["key", "shared", "linear", "linear_average", "spline"]
    m = ExpertMixture(0.001, names=names)
    m.load_state_dict(old)
    # the two new experts start at 1/5 each, the others share 3/5 in their proportions
    np.testing.assert_allclose(m.weights, [0.3, 0.18, 0.12, 0.2, 0.2])
    m.weights = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    back = ExpertMixture(0.001, names=names)
    back.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(back.weights, m.weights)
    with pytest.raises(ValueError, match=r"learner\.mixture"):
        ExpertMixture(0.001, names=["key", "linear"]).load_state_dict(m.state_dict())


def test_share_is_validated():
    with pytest.raises(ValueError, match="share"):
        ExpertMixture(1.0)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_expert_equals_torch_adagrad_when_it_does_not_forget(n_classes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = rng.integers(0, n_classes, 30).astype(np.float32)
    outputs = 1 if n_classes == 2 else n_classes
    expert = LinearExpert(4, outputs, learning_rate=0.3, forgetting=1.0, initial_accumulator=0.1)
    (p,) = expert.process(x, y, np.ones(30, bool))
    w = torch.zeros(outputs, 5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adagrad([w], lr=0.3, initial_accumulator_value=0.1, eps=1e-10)
    for i in range(30):
        xi = torch.cat([torch.from_numpy(x[i]).double(), torch.ones(1, dtype=torch.float64)])
        z = w @ xi
        if outputs == 1:
            ref = torch.sigmoid(z)[0].detach()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                z[0], torch.tensor(float(y[i]), dtype=torch.float64)
            )
            assert float(p[i, 0]) == pytest.approx(float(ref), abs=1e-6)
        else:
            ref = torch.softmax(z, 0)
            loss = torch.nn.functional.cross_entropy(z[None], torch.tensor([int(y[i])]))
            np.testing.assert_allclose(p[i], ref.detach().numpy(), atol=1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(expert.weights, w.detach().numpy(), rtol=1e-6, atol=1e-9)


def test_linear_expert_forgets_its_accumulator_by_hand():
    e = LinearExpert(1, 1, learning_rate=1.0, forgetting=0.5, initial_accumulator=1.0)
    e.process(np.ones((2, 1), np.float32), np.ones(2, np.float32), np.ones(2, bool))
    # step 1: g = -0.5 on w and b; a = 0.5 * 1 + 0.25 = 0.75; w = b = 0.5 / sqrt(0.75)
    w1 = 0.5 / math.sqrt(0.75)
    g2 = 1 / (1 + math.exp(-2 * w1)) - 1
    a2 = 0.5 * 0.75 + g2 * g2
    np.testing.assert_allclose(e.weights, [[w1 - g2 / math.sqrt(a2)] * 2], rtol=1e-9)
    np.testing.assert_allclose(e.accum, [[a2, a2]], rtol=1e-9)


def test_the_linear_experts_average_by_hand():
    e = LinearExpert(1, 1, learning_rate=1.0, forgetting=1.0, initial_accumulator=1.0, average=0.5)
    assert e.n_experts == 2
    x, y = np.ones((3, 1), np.float32), np.ones(3, np.float32)
    plain = LinearExpert(1, 1, learning_rate=1.0, forgetting=1.0, initial_accumulator=1.0)
    (p_plain,) = plain.process(x, y, np.ones(3, bool))
    p, p_avg = e.process(x, y, np.ones(3, bool))
    np.testing.assert_array_equal(p, p_plain)  # the weights learn as without the average
    # the average starts at 0 and after each step moves half way to the weights
    avg, weights = 0.0, 0.0
    ref = LinearExpert(1, 1, learning_rate=1.0, forgetting=1.0, initial_accumulator=1.0)
    for i in range(3):
        z = 2 * avg  # weight and bias are equal (x = 1)
        assert float(p_avg[i, 0]) == pytest.approx(1 / (1 + math.exp(-z)), rel=1e-6)
        ref.process(x[i : i + 1], y[i : i + 1], np.ones(1, bool))
        weights = float(ref.weights[0, 0])
        avg = 0.5 * avg + 0.5 * weights
    np.testing.assert_allclose(e.average_weights, [[avg, avg]], rtol=1e-12)
    # predict() is process() without a step
    p2, p2_avg = e.predict(x[:1])
    assert float(p2_avg[0, 0]) == pytest.approx(1 / (1 + math.exp(-2 * avg)), rel=1e-6)
    assert float(p2[0, 0]) == pytest.approx(1 / (1 + math.exp(-2 * weights)), rel=1e-6)


def _stream(n_polls=5, n=60, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n_polls):
        keys = [f"k{k}" for k in rng.integers(0, 3, n)]
        x = rng.normal(size=(n, 3))
        y = (x[:, 0] - x[:, 1] > 0).astype(float)
        y[rng.random(n) < 0.2] = np.nan
        yield keys, x, y


def test_the_learner_serves_the_mixture_of_its_experts():
    spec = ModelSpec(3, hidden=(4,))
    cfg = LearnerConfig()
    theta0 = spec.init(seed=1)
    mixed = OnlineLearner(spec, cfg, theta0)
    alone = OnlineLearner(
        spec, cfg.model_copy(update={"mixture": MixtureConfig(enabled=False)}), theta0
    )
    assert mixed.mixture is not None
    assert mixed.experts == ["key", "shared", "linear", "linear_average", "spline"]
    for keys, x, y in _stream():
        before = mixed.mixture.weights.copy()
        ra = mixed.process(event_batch(keys, x, y))
        rb = alone.process(event_batch(keys, x, y))
        # the experts learn as before: the key's weights are the unmixed learner's
        for k in set(keys):
            torch.testing.assert_close(mixed.params_of(k), alone.params_of(k))
        assert not np.allclose(ra.p, rb.p)
        assert not np.allclose(before, mixed.mixture.weights)
    # predict() mixes with the weights in force
    row = np.zeros((1, 3), np.float32)
    key_p = alone.predict(["k0"], row)[0]
    assert mixed.scaler is not None
    std = mixed.scaler.transform(row)  # what the experts see
    shared_p = float(torch.sigmoid(spec.forward_one(mixed.theta0, torch.from_numpy(std)))[0, 0])
    assert mixed.linear is not None
    linear_p, average_p = (float(p[0, 0]) for p in mixed.linear.predict(std))
    assert mixed.spline is not None
    spline_p = float(mixed.spline.predict(row.astype(np.float64), std)[0, 0])
    served = mixed.mixture.predict(
        [np.array([[p]], np.float32) for p in (key_p, shared_p, linear_p, average_p, spline_p)]
    )
    assert mixed.predict(["k0"], row)[0] == pytest.approx(float(served[0, 0]), rel=1e-5)


def test_without_the_shared_model_the_mixture_is_the_key_and_the_other_experts():
    spec = ModelSpec(3)
    cfg = LearnerConfig(shared=SharedConfig(enabled=False))
    learner = OnlineLearner(spec, cfg, spec.init(kind="zeros"))
    assert learner.mixture is not None
    assert learner.experts == ["key", "linear", "linear_average", "spline"]
    off = LearnerConfig(
        mixture=MixtureConfig(
            linear=LinearExpertConfig(enabled=False), spline=SplineExpertConfig(enabled=False)
        ),
        shared=SharedConfig(enabled=False),
    )
    assert OnlineLearner(spec, off, spec.init(kind="zeros")).mixture is None
    assert (
        OnlineLearner(ModelSpec(3, "regression"), LearnerConfig(), spec.init(kind="zeros")).mixture
        is None
    )


def test_a_resumed_learner_equals_an_uninterrupted_one():
    spec = ModelSpec(3, hidden=(4,))
    cfg = LearnerConfig()
    theta0 = spec.init(seed=2)
    polls = list(_stream(n_polls=6, seed=3))
    whole = OnlineLearner(spec, cfg, theta0)
    first = OnlineLearner(spec, cfg, theta0)
    for keys, x, y in polls[:3]:
        whole.process(event_batch(keys, x, y))
        first.process(event_batch(keys, x, y))
    resumed = OnlineLearner(spec, cfg, theta0)
    resumed.load_state_dict(first.state_dict())
    for keys, x, y in polls[3:]:
        a = whole.process(event_batch(keys, x, y))
        b = resumed.process(event_batch(keys, x, y))
        np.testing.assert_array_equal(a.p, b.p)
    assert whole.mixture is not None
    assert resumed.mixture is not None
    np.testing.assert_array_equal(whole.mixture.weights, resumed.mixture.weights)

"""Curriculum, rate hypergradient and the loss-rise guard: oracles and their wiring into the
online learner."""

import math

import numpy as np
import pytest
import torch

from streamlearn.config import (
    ConfigError,
    CurriculumConfig,
    HypergradientConfig,
    LearnerConfig,
    load_config,
)
from streamlearn.learning.learner import OnlineLearner
from streamlearn.model import lanes
from streamlearn.model.spec import ModelSpec
from streamlearn.optim.curriculum import curriculum_weight, margins
from streamlearn.optim.hypergradient import rate_hypergradient
from tests.helpers import event_batch, per_key_rules


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_rate_hypergradient_matches_finite_differences(task):
    spec = ModelSpec(3, task, n_classes=3, hidden=(4,))
    rng = np.random.default_rng(0)
    w_prev = rng.standard_normal((1, spec.n_params))
    x1, x2 = rng.standard_normal((1, 3)), rng.standard_normal((1, 3))
    y1, y2 = (np.array([1.0]), np.array([0.0])) if task != "regression" else (
        np.array([0.7]), np.array([-1.2]))  # fmt: skip
    if task == "multiclass":
        y1, y2 = np.array([2.0]), np.array([1.0])
    g1, _, _ = lanes.grad(spec, w_prev, x1, y1)
    u = g1 / (np.sqrt(0.1 + g1 * g1) + 1e-10)  # the AdaGrad direction of that step
    eta = 0.3

    def f(e: float) -> float:
        return float(lanes.loss(spec, w_prev - e * u, x2, y2)[0])

    h = 1e-6
    fd = (f(eta + h) - f(eta - h)) / (2 * h)
    g2, _, _ = lanes.grad(spec, w_prev - eta * u, x2, y2)
    assert float(rate_hypergradient(g2, u)[0]) == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_margins_by_hand():
    s = 1 / (1 + math.exp(-1.5))
    binary = margins(ModelSpec(1), np.array([[s], [s]]), np.array([1.0, 0.0]))
    np.testing.assert_allclose(binary, [1.5, -1.5], rtol=1e-6)
    p = np.array([[0.2, 0.5, 0.3]])
    multi = margins(ModelSpec(1, "multiclass", n_classes=3), p, np.array([2.0]))
    np.testing.assert_allclose(multi, [math.log(0.3 / 0.5)], rtol=1e-6)
    reg = margins(ModelSpec(1, "regression"), np.array([[1.0]]), np.array([4.0]), scale=2.0)
    np.testing.assert_allclose(reg, [-1.5])


def test_curriculum_weight_is_logistic_between_floor_and_one():
    m = np.linspace(-20, 20, 81)
    w = curriculum_weight(m, midpoint=-2.0, steepness=1.5, floor=0.2)
    assert np.all(np.diff(w) >= 0)
    assert w[0] == pytest.approx(0.2, abs=1e-6)
    assert w[-1] == pytest.approx(1.0, abs=1e-6)
    assert curriculum_weight(np.array([-2.0]), -2.0, 1.5, 0.2)[0] == pytest.approx(0.6)
    with pytest.raises(ValueError, match=r"learner.curriculum.floor must be in \[0, 1\], got 2"):
        curriculum_weight(m, 0.0, 1.0, 2.0)


def test_curriculum_scales_the_learners_step_exactly():
    spec = ModelSpec(1)
    c = CurriculumConfig(enabled=True, midpoint=-1.0, steepness=3.0, floor=0.1)
    cfg = per_key_rules(learning_rate=0.5, proximal_lambda=0.0, curriculum=c)
    learner = OnlineLearner(spec, cfg, torch.zeros(2), standardize=False)
    res = learner.process(event_batch(["k"], [[2.0]], [0.0]))
    # p = 0.5: margin 0, weight 0.1 + 0.9 * sigmoid(3 * (0 + 1)); g = (p - y) * (x, 1)
    weight = 0.1 + 0.9 / (1 + math.exp(-3.0))
    g = np.array([0.5 * 2.0, 0.5])
    expected = -0.5 * weight * g / np.sqrt(0.1 + g * g)
    np.testing.assert_allclose(learner.params_of("k").numpy(), expected, rtol=1e-6)
    assert res.curriculum == pytest.approx(weight)


def test_hypergradient_lowers_the_rate_when_steps_overshoot_and_raises_it_when_they_agree():
    spec = ModelSpec(1, "regression")
    h = HypergradientConfig(enabled=True, beta=0.1, low=0.01, high=5.0)
    cfg = per_key_rules(learning_rate=1.0, proximal_lambda=0.0, hypergradient=h)
    learner = OnlineLearner(spec, cfg, torch.zeros(2), standardize=False)
    learner.process(event_batch(["a"], [[1.0]], [0.1]))  # a step of ~1 per weight: overshoots
    res = learner.process(event_batch(["a"], [[1.0]], [0.1]))  # gradient now points back
    assert res.hypergradient > 0
    assert res.eta < 1.0
    agree = OnlineLearner(spec, cfg, torch.zeros(2), standardize=False)
    agree.process(event_batch(["b"], [[1.0]], [100.0]))  # far from the target: same direction
    res = agree.process(event_batch(["b"], [[1.0]], [100.0]))
    assert res.hypergradient < 0
    assert res.eta > 1.0
    agree.reset(["b"])  # a reset forgets the key's last direction
    assert agree._direction is not None
    assert not agree._direction[0].any()


def test_hypergradient_rate_must_start_within_its_bounds():
    with pytest.raises(ConfigError, match=r"learner.learning_rate \(20.0\) must lie within"):
        load_config(
            overrides={"learner": {"learning_rate": 20.0, "hypergradient": {"enabled": True}}},
            env={},
        )


def test_guard_rolls_back_an_update_that_raises_its_own_loss_beyond_the_factor():
    spec = ModelSpec(1, "regression")
    on = per_key_rules(learning_rate=10.0, guard_loss_factor=4.0, proximal_lambda=0.0)
    learner = OnlineLearner(spec, on, torch.zeros(2), standardize=False)
    res = learner.process(event_batch(["a", "b"], [[1.0], [1.0]], [1.0, 50.0]))
    # a: loss 0.5 -> 0.5 * (20 - 1)^2 after a step of ~10 per weight: rolled back.
    # b: loss 1250 -> 0.5 * (50 - 20)^2 = 450: kept.
    assert res.rollbacks == 1
    assert torch.equal(learner.params_of("a"), torch.zeros(2))
    assert float(learner.params_of("b")[1]) > 9.0
    off = OnlineLearner(spec, on.model_copy(update={"guard_loss_factor": 0.0}), torch.zeros(2),
                        standardize=False)  # fmt: skip
    assert off.process(event_batch(["a"], [[1.0]], [1.0])).rollbacks == 0


def _curvature_learner(spec: ModelSpec, iterations: int = 40, **learner: object) -> OnlineLearner:
    curvature = {"enabled": True, "every_labels": 64, "window": 64, "iterations": iterations}
    cfg = LearnerConfig.model_validate(
        {"learning_rate": 0.5, "proximal_lambda": 0.05, "curvature": curvature, **learner}
    )
    return OnlineLearner(spec, cfg, spec.init(seed=2, kind="normal"), standardize=False)


@pytest.mark.parametrize(("hidden", "iterations"), [((), 40), ((4,), 15)], ids=["dense", "lanczos"])
def test_curvature_watch_matches_the_dense_preconditioned_hessian(hidden, iterations):
    spec = ModelSpec(3, "binary", hidden=hidden)  # 4 and 21 parameters
    learner = _curvature_learner(spec, iterations)
    rng = np.random.default_rng(3)
    keys = [f"k{i % 5}" for i in range(64)]
    x = rng.standard_normal((64, 3))
    y = (rng.random(64) < 0.5).astype(float)
    learner.process(event_batch(keys, x, y))
    watch = learner.sizer.watch
    assert watch is not None
    assert watch.spectrum is not None
    assert watch.refreshes == 1
    # the oracle: the same window, weights and scaling, through a dense Hessian
    slots = np.asarray(watch.recent.tags(), dtype=np.int64)
    w = torch.from_numpy(learner._params[slots].mean(0)).double()
    d = (1.0 / (np.sqrt(learner._accum[slots]) + 1e-10)).mean(0)
    xr, yr = (torch.from_numpy(a).double() for a in watch.recent.rows())
    theta0 = torch.from_numpy(learner._theta0).double()

    def loss(v):
        data = torch.stack([spec.loss_one(v, xi, yi) for xi, yi in zip(xr, yr, strict=True)])
        return data.mean() + 0.5 * 0.05 * ((v - theta0) ** 2).sum()

    h = torch.func.hessian(loss)(w)
    root = torch.from_numpy(np.sqrt(d)).double()
    eig = torch.linalg.eigvalsh(root[:, None] * h * root[None, :])
    assert watch.spectrum.lambda_max == pytest.approx(float(eig[-1]), rel=1e-6)
    assert watch.spectrum.lambda_min == pytest.approx(float(eig[0]), rel=1e-3, abs=1e-6)


def test_curvature_caps_a_rate_that_is_too_large():
    spec = ModelSpec(3, "binary")
    learner = _curvature_learner(spec, learning_rate=500.0)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 3))
    learner.process(event_batch(["a"] * 64, x, (x[:, 0] > 0).astype(float)))
    watch = learner.sizer.watch
    assert watch is not None
    assert watch.cap is not None
    assert watch.cap < 500.0
    assert learner.sizer.eta == pytest.approx(watch.cap)


def test_pi_controller_raises_the_rate_while_sharpness_is_below_its_setpoint():
    spec = ModelSpec(3, "binary")
    learner = _curvature_learner(
        spec,
        learning_rate=0.001,
        controller={"enabled": True, "setpoint": 1.0, "kp": 0.5, "ki": 0.5},
    )
    rng = np.random.default_rng(5)
    etas = []
    for _ in range(4):
        x = rng.standard_normal((64, 3))
        learner.process(event_batch(["a"] * 64, x, (x[:, 0] > 0).astype(float)))
        etas.append(learner.sizer.eta)
    assert etas == sorted(etas)
    assert etas[-1] > 0.001
    watch = learner.sizer.watch
    assert watch is not None
    assert watch.pi is not None
    assert watch.pi.error > 0  # still below the setpoint: the rate keeps rising


def test_controller_on_sharpness_needs_curvature():
    with pytest.raises(ConfigError, match=r"signal 'sharpness' needs learner.curvature.enabled"):
        load_config(
            overrides={
                "learner": {"controller": {"enabled": True}, "curvature": {"enabled": False}}
            },
            env={},
        )


def test_controller_on_the_loss_trend_lowers_the_rate_while_the_loss_rises():
    spec = ModelSpec(1, "regression")
    cfg = LearnerConfig.model_validate(
        {
            "learning_rate": 0.5,
            "curvature": {"enabled": False, "every_labels": 64, "window": 64},
            "controller": {"enabled": True, "signal": "loss_trend", "kp": 1.0, "ki": 0.5},
        }
    )
    learner = OnlineLearner(spec, cfg, torch.zeros(2), standardize=False)
    rng = np.random.default_rng(6)
    for scale in (1.0, 1.0, 10.0, 30.0):  # the targets' scale jumps: the loss rises
        x = rng.standard_normal((64, 1))
        learner.process(event_batch(["a"] * 64, x, scale * rng.standard_normal(64)))
    watch = learner.sizer.watch
    assert watch is not None
    assert watch.spectrum is None  # no curvature measured
    assert watch.loss_trend > 1.0
    assert learner.sizer.eta < 0.5

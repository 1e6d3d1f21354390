"""Task buffer, meta-init files, offline meta-training and the daemon starting from it."""

from pathlib import Path

import numpy as np
import pytest
import torch

from streamlearn.config import LearnerConfig, load_config
from streamlearn.learning.learner import OnlineLearner
from streamlearn.meta.initfile import MetaInit, load_meta_init, save_meta_init
from streamlearn.meta.maml import InnerRule, MetaParams, online
from streamlearn.meta.tasks import TaskBuffer
from streamlearn.model.spec import ModelSpec
from streamlearn.service.wiring import build_spec
from streamlearn.wire.messages import EventBatch
from tests.helpers import per_key_rules, run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_reservoir_is_bounded_per_task_and_keeps_a_uniform_sample():
    buf = TaskBuffer(max_per_task=50, max_tasks=10, seed=0)
    n = 5000
    buf.add(["a"] * n, np.arange(n, dtype=float)[:, None], np.zeros(n))
    assert buf.n_examples == 50
    kept = np.array([x[0] for x in buf._tasks[("a", 0)].x])
    assert 1500 < kept.mean() < 3500  # roughly uniform over the whole stream, not the head


def test_segments_close_on_drift_and_oldest_tasks_are_evicted():
    buf = TaskBuffer(max_per_task=5, max_tasks=3, seed=0)
    for seg in range(4):
        buf.add(["k"] * 3, np.full((3, 1), float(seg)), np.zeros(3))
        buf.close_all()
    assert buf.n_tasks == 3
    assert sorted(seg for _, seg in buf._tasks) == [1, 2, 3]


def test_sample_splits_support_and_query_and_state_round_trips():
    buf = TaskBuffer(max_per_task=20, max_tasks=10, seed=0)
    buf.add(["a"] * 20 + ["b"] * 3, np.random.default_rng(0).normal(size=(23, 2)), np.ones(23))
    batch = buf.sample(4, 6, 4, np.random.default_rng(1))
    assert tuple(batch.xs.shape) == (4, 6, 2)
    assert tuple(batch.xq.shape) == (4, 4, 2)
    with pytest.raises(ValueError, match="no task holds 30"):
        buf.sample(1, 20, 10, np.random.default_rng(0))
    copy = TaskBuffer(max_per_task=20, max_tasks=10)
    copy.load_state_dict(buf.state_dict())
    assert (copy.n_tasks, copy.n_examples) == (buf.n_tasks, buf.n_examples)


def test_meta_init_file_checks_the_model_layout(tmp_path):
    p = tmp_path / "init.pt"
    save_meta_init(p, ModelSpec(2), MetaInit(torch.ones(3), torch.ones(3), 2, None, {"a": 1.0}))
    with pytest.raises(ValueError, match="was trained for model"):
        load_meta_init(p, ModelSpec(3))
    with pytest.raises(ValueError, match="no such file"):
        load_meta_init(tmp_path / "missing.pt", ModelSpec(2))


def test_learned_per_parameter_rates_drive_the_online_steps():
    spec = ModelSpec(1)
    learner = OnlineLearner(
        spec, per_key_rules(learning_rate=1.0), spec.init(kind="zeros"), standardize=False
    )
    learner.set_theta0(torch.zeros(2), version=1, rates=torch.tensor([0.0, 0.25]))
    batch = EventBatch(["1"], ["k"], np.zeros(1), np.array([[2.0]]), np.array([1.0]))
    learner.process(batch)
    # p = 0.5, y = 1: g = (-1, -0.5); AdaGrad's first step is rate * |g| / sqrt(acc0 + g^2),
    # so the weight (rate 0) stays and the bias moves by 0.25 * 0.5 / sqrt(0.1 + 0.25).
    bias = 0.25 * 0.5 / np.sqrt(LearnerConfig().initial_accumulator + 0.25)
    torch.testing.assert_close(
        learner.params_of("k"), torch.tensor([0.0, bias], dtype=torch.float32)
    )


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_the_meta_learners_online_rule_is_what_the_learner_does_to_a_new_key(task):
    """The inner loop meta-learning differentiates through (order "online") takes the steps
    the daemon's learner takes on a new key's labels: the same predictions before each
    label, the same weights after."""
    spec = ModelSpec(2, task, hidden=(4,))
    theta0 = spec.init(seed=3)
    gen = torch.Generator().manual_seed(0)
    rates = torch.exp(-2.0 + 0.5 * torch.randn(spec.n_params, generator=gen))
    lam = 0.2
    cfg = per_key_rules(proximal_lambda=lam).model_copy(
        update={"curvature": LearnerConfig().curvature.model_copy(update={"enabled": False})}
    )
    learner = OnlineLearner(spec, cfg, theta0, standardize=False)
    learner.set_theta0(theta0, version=1, rates=rates)
    x = torch.randn(8, 2, generator=gen)
    y = (x[:, 0] > x[:, 1]).float() if task == "binary" else x[:, 0] - 2 * x[:, 1]
    served = []
    for i in range(8):  # one event a poll, as a new key's first labels arrive
        batch = EventBatch(
            [str(i)], ["new"], np.zeros(1), x[i : i + 1].numpy(), y[i : i + 1].numpy()
        )
        served.append(float(learner.process(batch).p[0]))
    rule = InnerRule(lam=lam, order="online", initial_accumulator=cfg.initial_accumulator)
    w, prequential = online(spec, rule, MetaParams(theta0, rates.log()), x, y)
    torch.testing.assert_close(learner.params_of("new"), w.float(), atol=2e-5, rtol=1e-4)
    # the prequential loss of the served predictions is the meta-loss
    p = torch.tensor(served)
    if task == "binary":
        ref = torch.nn.functional.binary_cross_entropy(p, y)
    else:
        ref = 0.5 * ((p - y) ** 2).mean()
    assert float(prequential) == pytest.approx(float(ref), rel=1e-4)


def test_learned_rates_survive_a_checkpoint():
    spec = ModelSpec(2)
    learner = OnlineLearner(spec, per_key_rules(), spec.init(kind="zeros"))
    rates = torch.tensor([0.1, 0.2, 0.3])
    learner.set_theta0(torch.zeros(3), version=2, rates=rates)
    resumed = OnlineLearner(spec, per_key_rules(), spec.init(kind="zeros"))
    resumed.load_state_dict(learner.state_dict())
    assert resumed.rates is not None
    torch.testing.assert_close(resumed.rates, rates)
    assert resumed.model_version == 2


@pytest.mark.slow
def test_meta_train_then_run_from_the_meta_init(tmp_path):
    out = tmp_path / "init.pt"
    train = run_cli(
        "meta-train", "--out", str(out), "--steps", "150", "--events", "30000", "--no-progress"
    )
    assert train.returncode == 0, train.stderr
    assert "held-out meta-loss" in train.stderr
    init = load_meta_init(out, build_spec(load_config(env={})))  # the default model
    assert init.summary["held_out_after"] < init.summary["held_out_before"]
    run = run_cli(
        "run",
        "--meta-init",
        str(out),
        "--max-events",
        "2000",
        "--metrics-port",
        "0",
        env={"STREAMLEARN_SOURCE__SYNTHETIC__RATE": "0"},
    )
    assert run.returncode == 0, run.stderr
    assert "meta-init" in run.stderr
    assert "version=1" in run.stderr

"""The meta-init pool: clustering tasks, training a start per cluster, choosing a start on
recent labels, and resets to it in the learner and the daemon."""

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from streamlearn.config import DriftConfig, LearnerConfig, load_config
from streamlearn.drift.resets import Resetter
from streamlearn.io.base import NullSink
from streamlearn.io.memory import MemorySource
from streamlearn.io.synthetic import DriftingClassification, build_family
from streamlearn.learning.learner import OnlineLearner
from streamlearn.meta.initfile import MetaInit, load_meta_init, save_meta_init
from streamlearn.meta.maml import InnerRule, MetaParams
from streamlearn.meta.offline import OfflineSettings, meta_train
from streamlearn.meta.pool import choose_member, cluster_tasks, task_fits
from streamlearn.meta.tasks import TaskBuffer
from streamlearn.model.spec import ModelSpec
from streamlearn.service.daemon import Daemon
from streamlearn.state.recent import RecentLabels
from tests.helpers import event_batch, sample, with_linear

D = 4
CONCEPTS = np.array([[3.0, 0.0, 0.0, 0.0], [0.0, -3.0, 0.0, 0.0]])


def _two_concept_buffer(n_tasks: int = 40, per_task: int = 40, seed: int = 0) -> TaskBuffer:
    """Tasks alternate between two opposite-ish linear concepts (labels 0/1, no noise)."""
    rng = np.random.default_rng(seed)
    buf = TaskBuffer(max_per_task=per_task, max_tasks=1000, seed=seed)
    for t in range(n_tasks):
        x = rng.standard_normal((per_task, D)).astype(np.float32)
        y = (x @ CONCEPTS[t % 2] > 0).astype(np.float32)
        buf.add([f"k{t}"] * per_task, x, y)
    return buf


def test_tasks_cluster_by_concept():
    spec = ModelSpec(D)
    snap = _two_concept_buffer().snapshot(20)
    start = MetaParams(torch.zeros(spec.n_params), torch.full((spec.n_params,), np.log(0.5)))
    labels = cluster_tasks(task_fits(spec, InnerRule(), start, snap), 2, seed=0)
    concept = np.arange(len(snap)) % 2
    assert len(set(labels[concept == 0])) == 1
    assert len(set(labels[concept == 1])) == 1
    assert labels[0] != labels[1]
    with pytest.raises(ValueError, match="pool size must be >= 1 and <= 64, got 0"):
        cluster_tasks(np.ones((3, 2)), 0, seed=0)


def test_choose_member_is_the_argmin_of_the_reference_loss():
    spec = ModelSpec(D)
    rng = np.random.default_rng(1)
    members = rng.standard_normal((4, spec.n_params)).astype(np.float32)
    x = rng.standard_normal((30, D)).astype(np.float32)
    y = (rng.random(30) < 0.5).astype(np.float32)
    ref = [
        np.mean([float(spec.loss_one(torch.from_numpy(m), torch.from_numpy(xi), torch.tensor(yi)))
                 for xi, yi in zip(x, y, strict=True)])
        for m in members
    ]  # fmt: skip
    assert choose_member(spec, members, x, y) == int(np.argmin(ref))
    assert choose_member(spec, members[:1], x, y) == 0


def test_meta_train_with_a_pool_beats_the_shared_start_on_held_out_tasks():
    spec = ModelSpec(D)
    settings = OfflineSettings(steps=150, pool_size=2, pool_steps=150, outer_lr=0.05)
    result = meta_train(
        spec,
        torch.zeros(spec.n_params),
        _two_concept_buffer(),
        _two_concept_buffer(n_tasks=20, seed=5),
        settings,
        progress=False,
    )
    assert len(result.pool) == 2
    s = result.summary
    assert s["held_out_after_pool"] < s["held_out_after"] < s["held_out_before"]
    # each member leans towards one concept: its weights correlate with exactly one of them
    corr = np.array(
        [[float(m.theta0[:D].double() @ torch.tensor(c)) for c in CONCEPTS] for m in result.pool]
    )
    assert sorted(corr.argmax(1).tolist()) == [0, 1]


def test_meta_init_file_carries_the_pool(tmp_path):
    spec = ModelSpec(2)
    p = tmp_path / "init.pt"
    pool = torch.arange(6.0).reshape(2, 3)
    save_meta_init(p, spec, MetaInit(torch.ones(3), torch.ones(3), 1, None, {}, pool))
    got = load_meta_init(p, spec)
    assert got.pool is not None
    assert torch.equal(got.pool, pool)
    save_meta_init(p, spec, MetaInit(torch.ones(3), torch.ones(3), 1, None, {}))
    assert load_meta_init(p, spec).pool is None


def test_reset_to_a_member_keeps_adagrad_state_and_anchors_the_proximal_term_there():
    spec = ModelSpec(1, "regression")
    cfg = LearnerConfig(learning_rate=0.5, proximal_lambda=1.0)
    learner = OnlineLearner(spec, cfg, torch.zeros(2), standardize=False)
    learner.process(event_batch(["k"], [[1.0]], [3.0]))
    accum = learner.accum_of("k")
    assert float(accum.sum()) > 2 * cfg.initial_accumulator  # it has learned something
    learner.set_pool(torch.tensor([[0.0, 2.0]]))
    assert learner.reset(["k"], start=1) == 1
    assert torch.equal(learner.params_of("k"), torch.tensor([0.0, 2.0]))
    assert torch.equal(learner.accum_of("k"), accum)  # a fitted concept: refine, not relearn
    # x = 0, y = 2: no data gradient at the member; an anchor at theta0 (0, 0) would pull the
    # bias down by lambda * 2, the member's anchor not at all.
    learner.process(event_batch(["k"], [[0.0]], [2.0]))
    assert torch.equal(learner.params_of("k"), torch.tensor([0.0, 2.0]))
    learner.reset(["k"])  # back to theta0: AdaGrad restarts too
    assert torch.equal(learner.accum_of("k"), torch.full((2,), cfg.initial_accumulator))
    with pytest.raises(ValueError, match="start 2"):
        learner.reset(["k"], start=2)


def test_learner_state_round_trips_the_pool_and_each_keys_start():
    spec = ModelSpec(1, "regression")
    learner = OnlineLearner(spec, LearnerConfig(), torch.zeros(2), standardize=False)
    learner.process(event_batch(["a", "b"], [[1.0], [1.0]], [1.0, 2.0]))
    learner.set_pool(torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    learner.reset(["b"], start=2)
    copy = OnlineLearner(spec, LearnerConfig(), torch.zeros(2), standardize=False)
    copy.load_state_dict(learner.state_dict())
    np.testing.assert_array_equal(copy.starts, learner.starts)
    np.testing.assert_array_equal(copy._start_of[:2], [0, 2])


def test_recent_labels_ring_keeps_the_last_window_in_order():
    ring = RecentLabels(window=4, n_features=1)
    for i in range(3):
        ring.add([f"k{i}"] * 3, np.full((3, 1), float(i)), np.full(3, float(i)))
    x, _y = ring.rows()
    assert x[:, 0].tolist() == [1.0, 2.0, 2.0, 2.0]
    assert ring.rows("k1")[1].tolist() == [1.0]


def test_resetter_picks_the_member_that_fits_recent_labels():
    spec = ModelSpec(D)
    learner = OnlineLearner(spec, LearnerConfig(), torch.zeros(spec.n_params), standardize=False)
    pool = torch.tensor(np.c_[CONCEPTS, np.zeros(2)], dtype=torch.float32)
    learner.set_pool(pool)
    resetter = Resetter(learner, DriftConfig(select_window=50, select_min_labels=5))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, D)).astype(np.float32)
    y = (x @ CONCEPTS[1] > 0).astype(np.float32)
    keys = [f"k{i % 10}" for i in range(50)]
    learner.process(event_batch(keys, x, y))
    resetter.remember(keys, x, y)
    assert resetter.reset_all() == {2: 10}  # concept 1 is pool member 2
    np.testing.assert_array_equal(learner.params_of("k3").numpy(), pool[1].numpy())
    resetter.recent = RecentLabels(50, D)  # no recent labels of this key: theta0
    assert resetter.reset(["k3"]) == {0: 1}


def test_daemon_resets_to_pool_members_after_a_global_drift():
    """End to end: two recurring concepts, a pool holding both, the daemon's own detector."""
    cfg = load_config(
        overrides=with_linear(
            {
                "source": {
                    "synthetic": {"n_keys": 10, "n_concepts": 2, "segment_length": 4000, "seed": 3}
                },
                "model": {"n_features": 8},
                "drift": {"on_global_drift": "reset_all"},  # resets to pool members
            }
        ),
        env={},
    )
    syn = cfg.source.synthetic.model_copy(update={"max_events": 16_000})
    family = DriftingClassification(syn)  # for its concepts; the events come from build_family
    items = list(build_family(syn))
    reg = CollectorRegistry()
    daemon = Daemon(cfg, reg, source=MemorySource(iter(items)), sink=NullSink())
    spec = daemon.spec
    # The pool: each shared concept as a logistic model in the raw feature space, which the
    # learner's standardisation maps to roughly (w * scale) after enough events.
    shared = family.weights.mean(0) * 4.0  # (concepts, d), sharpened
    pool = torch.zeros(2, spec.n_params)
    pool[:, : spec.n_features] = torch.from_numpy(shared).float()
    daemon.install_meta_init(
        MetaInit(torch.zeros(spec.n_params), torch.ones(spec.n_params), 1, None, {}, pool)
    )
    daemon.run()
    drifts = sample(reg, "streamlearn_drift_detections_total", {"scope": "global"})
    assert drifts >= 2
    to_members = sum(
        reg.get_sample_value("streamlearn_reset_starts_total", {"start": s}) or 0.0
        for s in ("1", "2")
    )
    assert to_members >= 10 * (drifts - 1)  # at least every global reset after the first

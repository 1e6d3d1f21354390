"""The concept memory (streamlearn.learning.recall): its CUSUM against a sequential loop, what it
stores, when it recalls, and that it survives a checkpoint."""

import math

import numpy as np
import pytest

from streamlearn.config import ConfigError, LearnerConfig, RecallConfig, load_config
from streamlearn.learning.learner import OnlineLearner
from streamlearn.learning.recall import ConceptMemory
from streamlearn.model import lanes
from streamlearn.model.spec import ModelSpec
from tests.helpers import LINEAR_LEARNER, event_batch


def test_evidence_equals_a_cusum_run_label_by_label():
    """The vectorised CUSUM (all members, a poll at once) against the textbook recursion
    ``S = max(0, S + clip(min(loss_now, log 2) - loss_member, -1, 1) - margin)``."""
    rng = np.random.default_rng(0)
    spec = ModelSpec(n_features=3)
    cfg = RecallConfig(threshold=1e9, margin=0.1, check_labels=1000, gate=0.0)  # always scored
    mem = ConceptMemory(spec, cfg)
    p = spec.n_params
    mem.members = rng.normal(size=(3, p)).astype(np.float32)
    mem.used = np.zeros(3, dtype=np.int64)
    mem.evidence = np.array([0.0, 2.0, 0.5])
    expected = mem.evidence.copy()
    for _ in range(5):
        n = int(rng.integers(1, 12))
        w = rng.normal(size=(n, p)).astype(np.float32) * 2
        theta0 = rng.normal(size=p).astype(np.float32)
        x = rng.normal(size=(n, 3)).astype(np.float32)
        y = (rng.random(n) < 0.5).astype(np.float32)
        for i in range(n):
            now = min(
                float(lanes.loss(spec, w[i : i + 1], x[i : i + 1], y[i : i + 1])[0]), math.log(2)
            )
            for j in range(3):
                mine = mem.members[j] + w[i] - theta0
                loss = float(lanes.loss(spec, mine[None], x[i : i + 1], y[i : i + 1])[0])
                gain = min(max(now - loss, -1.0), 1.0) - cfg.margin
                expected[j] = max(0.0, expected[j] + gain)
        mem.score_labels(w, theta0, x, y)
        np.testing.assert_allclose(mem.evidence, expected, rtol=1e-6, atol=1e-9)


def test_members_are_scored_only_while_the_weights_in_force_do_no_better_than_a_coin():
    spec = ModelSpec(n_features=1)
    mem = ConceptMemory(spec, RecallConfig(threshold=2.0))
    mem.members = np.array([[4.0, 0.0]], dtype=np.float32)  # says y = 1 when x > 0
    mem.used = np.zeros(1, dtype=np.int64)
    mem.evidence = np.zeros(1)
    x, y = np.ones((8, 1), dtype=np.float32), np.ones(8, dtype=np.float32)
    good = np.array([1.0, 0.0], dtype=np.float32)  # right, if less sure: loss 0.31 < log 2
    for _ in range(5):
        mem.score_labels(good[None].repeat(8, 0), good, x, y)
    assert mem.evidence[0] == 0.0
    assert mem.take_recall(good) is None
    lost = np.array([-4.0, 0.0], dtype=np.float32)  # wrong and sure: the gate opens
    for _ in range(3):
        mem.score_labels(lost[None].repeat(8, 0), lost, x, y)
    shift = mem.take_recall(lost)
    assert shift is not None
    np.testing.assert_allclose(shift, [8.0, 0.0])


def test_weights_still_moving_are_not_stored_and_settled_ones_merge():
    spec = ModelSpec(n_features=1)
    mem = ConceptMemory(spec, RecallConfig(snapshot_labels=10, settled_change=0.2))
    x, y = np.ones((10, 1), dtype=np.float32), np.ones(10, dtype=np.float32)
    theta = np.array([1.0, 0.0], dtype=np.float32)
    for _ in range(6):  # moving by 100% of its norm every 10 labels: a blend, never stored
        theta = theta * 2
        mem.score_labels(theta[None].repeat(10, 0), theta, x, y)
        mem.maybe_snapshot()
    assert len(mem.members) == 0
    for _ in range(4):  # settled: stored once, then refreshed in place
        mem.score_labels(theta[None].repeat(10, 0), theta, x, y)
        mem.maybe_snapshot()
    assert len(mem.members) == 1
    np.testing.assert_allclose(mem.members[0], theta, rtol=1e-3)


def _flip_stream(rng, n, sign, n_keys=5, noise=0.1):
    """Two features; the label says whether ``sign * x0 > 0``, with label noise."""
    x = rng.normal(size=(n, 2))
    y = (sign * x[:, 0] > 0).astype(float)
    y = np.where(rng.random(n) < noise, 1 - y, y)
    keys = [f"k{i}" for i in rng.integers(0, n_keys, n)]
    return keys, x, y


def _run(learner, rng, segments, batch=50):
    """Feed (sign, events) segments; per segment, the accuracy of its first 200 events."""
    firsts = []
    for sign, n in segments:
        correct = []
        for _ in range(n // batch):
            keys, x, y = _flip_stream(rng, batch, sign)
            res = learner.process(event_batch(keys, x, y))
            correct += ((res.p >= 0.5) == (y == 1)).tolist()
        firsts.append(float(np.mean(correct[:200])))
    return firsts


def test_a_returning_concept_is_recalled_and_relearned_sooner():
    spec = ModelSpec(n_features=2)
    segments = [(1, 3000), (-1, 3000), (1, 1000)]
    linear = LearnerConfig.model_validate(LINEAR_LEARNER)
    with_memory = OnlineLearner(spec, linear, spec.init(kind="zeros"))
    assert with_memory.memory is not None
    firsts = _run(with_memory, np.random.default_rng(0), segments[:1])
    assert with_memory.memory.recalls == 0  # a stable concept: nothing to recall
    firsts += _run(with_memory, np.random.default_rng(1), segments[1:])
    memory = with_memory.memory
    assert len(memory.members) >= 2
    assert memory.recalls >= 1
    without = OnlineLearner(
        spec,
        LearnerConfig.model_validate(
            {**LINEAR_LEARNER, "shared": {**LINEAR_LEARNER["shared"], "recall": {"enabled": False}}}
        ),
        spec.init(kind="zeros"),
    )
    plain = _run(without, np.random.default_rng(0), segments[:1])
    plain += _run(without, np.random.default_rng(1), segments[1:])
    print(f"first 200 events of each segment: with memory {firsts}, without {plain}")
    assert firsts[2] > plain[2] + 0.05


def test_the_memory_survives_a_checkpoint():
    spec = ModelSpec(n_features=2)
    a = OnlineLearner(spec, LearnerConfig(), spec.init(kind="zeros"))
    _run(a, np.random.default_rng(0), [(1, 2000), (-1, 2000)])
    assert a.memory is not None
    assert len(a.memory.members) >= 1
    b = OnlineLearner(spec, LearnerConfig(), spec.init(kind="zeros"))
    b.load_state_dict(a.state_dict())
    assert b.memory is not None
    np.testing.assert_array_equal(b.memory.members, a.memory.members)
    np.testing.assert_array_equal(b.memory.evidence, a.memory.evidence)
    assert (b.memory.labels, b.memory.in_force_loss) == (a.memory.labels, a.memory.in_force_loss)
    # A checkpoint from before the memory (no "recall" entry) still loads.
    state = a.state_dict()
    del state["recall"]
    OnlineLearner(spec, LearnerConfig(), spec.init(kind="zeros")).load_state_dict(state)


def test_bad_recall_settings_name_the_setting():
    with pytest.raises(ConfigError, match=r"learner\.shared\.recall\.members"):
        load_config(overrides={"learner": {"shared": {"recall": {"members": 0}}}}, env={})
    with pytest.raises(ConfigError, match=r"learner\.shared\.recall\.threshold"):
        load_config(overrides={"learner": {"shared": {"recall": {"threshold": -1}}}}, env={})


def test_no_memory_for_regression():
    """No coin's loss to tell failing weights by: recall raised the sinusoid family's
    squared error when it ran ungated, so a regression learner has no memory."""
    spec = ModelSpec(n_features=1, task="regression")
    assert OnlineLearner(spec, LearnerConfig(), spec.init(kind="zeros")).memory is None
    binary = ModelSpec(n_features=1)
    assert OnlineLearner(binary, LearnerConfig(), binary.init(kind="zeros")).memory is not None

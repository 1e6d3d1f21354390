"""Bounded keys: LRU eviction to the spill store and restore on the next event (issue 7)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from streamlearn.config import Config, LearnerConfig, SharedConfig, load_config
from streamlearn.learning.learner import OnlineLearner
from streamlearn.model.spec import ModelSpec
from streamlearn.service.daemon import Daemon
from streamlearn.state.checkpoint import CheckpointStore
from streamlearn.state.residency import SPILL_FILE, Residency
from streamlearn.state.spill import SpilledKey, SpillStore
from tests.helpers import event_batch, sample
from tests.state.test_checkpoint import _whole_and_resumed


def _row(key: str, value: float) -> SpilledKey:
    return SpilledKey(key, np.full(3, value, np.float32), np.ones(3, np.float32), {"v": value})


def test_spill_store_reads_the_newest_row_and_forgets_rows_after_a_restart_point(tmp_path):
    store = SpillStore(tmp_path / SPILL_FILE)
    assert not store.exists  # nothing is created before the first write
    store.put(1, [_row("a", 1.0), _row("b", 1.0)])
    store.put(2, [_row("a", 2.0)])
    store.put(3, [_row("a", 3.0), _row("c", 3.0)])
    assert store.get(["a", "b", "c", "d"])["a"].info == {"v": 3.0}
    # A restart from checkpoint 2: rows written after it (generation 3) are dropped.
    assert store.discard_after(2) == 2
    got = store.get(["a", "b", "c"])
    assert sorted(got) == ["a", "b"]
    assert got["a"].params.tolist() == [2.0, 2.0, 2.0]
    # With checkpoints >= 2 retained, a's generation-1 row can never be read again.
    assert store.compact(oldest_retained=2) == 1
    assert store.count() == 2
    assert store.get(["a"])["a"].info == {"v": 2.0}
    # Infinities (a fresh Page-Hinkley detector's minimum) survive the JSON.
    store.put(
        4, [SpilledKey("d", np.zeros(3, np.float32), np.zeros(3, np.float32), {"m": float("inf")})]
    )
    assert store.get(["d"])["d"].info == {"m": float("inf")}


def _stream(n_keys: int, n_polls: int, per_poll: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=(n_keys, 3))
    for _ in range(n_polls):
        # Zipf-like popularity: a few hot keys, a long tail that gets evicted and returns.
        k = np.minimum(rng.zipf(1.3, per_poll) - 1, n_keys - 1)
        x = rng.normal(size=(per_poll, 3))
        y = (np.einsum("nd,nd->n", x, w_true[k]) > 0).astype(float)
        y[rng.random(per_poll) < 0.2] = np.nan
        yield event_batch([f"k{i}" for i in k], x, y)


@pytest.mark.parametrize("shared", [False, True])
def test_a_bounded_learner_learns_exactly_what_an_unbounded_one_does(tmp_path, shared):
    """Keys evicted (least recently used beyond max_keys) and brought back on their next
    event carry on from where they were: every key ends with the weights and AdaGrad state
    of a learner that kept them all (with a shared model, up to float rounding: a key comes
    back as the shared weights plus its own offset)."""
    spec = ModelSpec(n_features=3)
    cfg = LearnerConfig(shared=SharedConfig(enabled=shared))
    theta0 = spec.init(seed=1)
    whole = OnlineLearner(spec, cfg, theta0)
    bounded = OnlineLearner(spec, cfg, theta0)
    bounded.residency = Residency(max_keys=6, store=SpillStore(tmp_path / SPILL_FILE), chunk=2)
    n_keys = 40
    for batch in _stream(n_keys, n_polls=150, per_poll=8):
        whole.process(batch)
        bounded.process(batch)
        assert bounded.n_keys <= 8  # max_keys, or the keys of the poll if more
    res = bounded.residency
    assert res.evicted > 100
    assert res.restored > 50
    # One last poll with every key (unlabelled) brings them all back: a poll's own keys are
    # never evicted, even when they are more than max_keys.
    every = [f"k{i}" for i in range(n_keys) if whole.keys.get(f"k{i}") is not None]
    last = event_batch(every, np.zeros((len(every), 3)), np.full(len(every), np.nan))
    np.testing.assert_allclose(bounded.process(last).p, whole.process(last).p, atol=1e-5)
    assert bounded.n_keys == len(every)
    for key in every:
        torch.testing.assert_close(bounded.params_of(key), whole.params_of(key))
        torch.testing.assert_close(bounded.accum_of(key), whole.accum_of(key))


def test_a_spill_store_that_cannot_be_written_keeps_keys_in_memory_until_it_can(tmp_path):
    blocker = tmp_path / "ck"
    blocker.write_text("a file where the directory should be")
    spec = ModelSpec(n_features=3)
    learner = OnlineLearner(spec, LearnerConfig(), spec.init(seed=1))
    learner.residency = Residency(max_keys=4, store=SpillStore(blocker / SPILL_FILE))
    batches = list(_stream(30, n_polls=20, per_poll=8))
    for b in batches[:10]:
        learner.process(b)
    assert learner.residency.error is not None
    assert "spill failed" in learner.residency.error
    assert learner.n_keys > 4  # nothing lost: they stay resident
    blocker.unlink()
    for b in batches[10:]:
        learner.process(b)
    assert learner.residency.error is None
    assert learner.residency.evicted > 0


def _cfg(directory: Path) -> Config:
    return load_config(
        overrides={
            "source": {
                "batch_size": 40,
                "synthetic": {"n_keys": 150, "rate": 0, "segment_length": 3000},
            },
            "checkpoint": {"dir": str(directory), "every_events": 1000},
            "drift": {"detector": "adwin"},
            "learner": {"max_keys": 50},
            "meta": {"enabled": True, "every_labels": 10**9},  # its task buffer, not training
        },
        env={},
    )


def _spilled(directory: Path, keys: list[str]) -> dict[str, SpilledKey]:
    return SpillStore(directory / SPILL_FILE).get(keys)


def _same_state(a: Daemon, b: Daemon, da: Path, db: Path) -> None:
    """Same resident keys with the same weights, and the same spilled rows."""
    assert sorted(a.learner.keys.names()) == sorted(b.learner.keys.names())
    for key in a.learner.keys.names():
        torch.testing.assert_close(a.learner.params_of(key), b.learner.params_of(key))
    names = [f"k{j:05d}" for j in range(150)]
    sa, sb = _spilled(da, names), _spilled(db, names)
    assert sorted(sa) == sorted(sb)
    for key, row in sa.items():
        np.testing.assert_array_equal(row.params, sb[key].params)
        assert row.info == sb[key].info  # drift detector and task segment included


def test_a_bounded_daemon_resumes_exactly_from_its_checkpoint_and_spill_store(tmp_path):
    whole, resumed = _whole_and_resumed(_cfg, tmp_path, stop_at=4600, end=9000)
    assert whole.learner.n_keys <= 50
    res = whole.residency
    assert res is not None
    assert res.evicted > 100
    assert res.restored > 100
    assert whole.outcomes.drift.n_key + whole.outcomes.drift.n_global > 0
    _same_state(whole, resumed, tmp_path / "a", tmp_path / "b")


def test_a_crash_after_evictions_replays_from_the_checkpoint_and_ends_the_same(tmp_path):
    """Killed between checkpoints, after evicting and restoring keys: the spill rows written
    since the last checkpoint are dropped at restart (their events are replayed), and the
    run ends exactly as one that never crashed."""
    whole = Daemon(_cfg(tmp_path / "a"), CollectorRegistry())
    whole.run(max_events=9000)
    crashed = Daemon(_cfg(tmp_path / "b"), CollectorRegistry())
    crashed._running = True
    while crashed.events_seen < 4700:  # checkpoints every 1000 events, the last at 4000
        crashed.step(40)
    assert crashed.residency is not None
    assert crashed.residency.evicted > 0
    del crashed  # no final checkpoint: as after kill -9
    ck = CheckpointStore(tmp_path / "b").load_latest()
    assert ck is not None
    assert ck.state["totals"]["events"] == 4000
    reg = CollectorRegistry()
    resumed = Daemon(_cfg(tmp_path / "b"), reg)
    assert resumed.events_seen == 4000
    resumed.run(max_events=9000)
    _same_state(whole, resumed, tmp_path / "a", tmp_path / "b")
    assert sample(reg, "streamlearn_keys_evicted_total") > 0
    assert sample(reg, "streamlearn_keys_restored_total") > 0

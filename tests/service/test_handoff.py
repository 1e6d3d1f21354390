"""The hand-off's rules without a broker (the broker path: tests/service/test_scale_out.py): what a
checkpoint publishes around a rebalance, what a new owner takes over and where it resumes."""

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from streamlearn.active.pending import Pending, PendingQueries
from streamlearn.config import LearnerConfig
from streamlearn.learning.learner import OnlineLearner
from streamlearn.model.spec import ModelSpec
from streamlearn.service.handoff import KeyHandoff
from streamlearn.state.residency import SPILL_FILE, Residency
from streamlearn.state.spill import SpilledKey, SpillStore
from tests.helpers import event_batch

EVENTS = "ev"


class _Topic:
    """The state topic's contract in memory: the newest row per key, by partition."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, SpilledKey]] = {}

    def publish(self, rows: Iterable[tuple[int, SpilledKey]]) -> int:
        n = 0
        for p, row in rows:
            self.rows[row.key] = (p, SpilledKey(row.key, row.params, row.accum, dict(row.info)))
            n += 1
        return n

    def read(self, partitions: Sequence[int]) -> dict[str, tuple[int, SpilledKey]]:
        return {k: (p, r) for k, (p, r) in self.rows.items() if p in partitions}


def _replica(tmp: Path, topic: _Topic) -> tuple[OnlineLearner, KeyHandoff]:
    tmp.mkdir(exist_ok=True)
    spec = ModelSpec(n_features=3)
    learner = OnlineLearner(spec, LearnerConfig(), spec.init(seed=0))
    learner.residency = Residency(max_keys=100, store=SpillStore(tmp / SPILL_FILE))
    handoff = KeyHandoff(learner, topic, events_topic=EVENTS)  # type: ignore[arg-type]
    return learner, handoff


def _learn(learner: OnlineLearner, handoff: KeyHandoff, keys: list[str], partition: int) -> None:
    rng = np.random.default_rng(len(keys))
    batch = event_batch(keys, rng.normal(size=(len(keys), 3)), np.ones(len(keys)))
    learner.process(batch)
    handoff.note(keys, [partition] * len(keys), keys)


def test_a_checkpoint_between_revoke_and_assignment_publishes_nothing_of_the_revoked(tmp_path):
    topic = _Topic()
    learner, handoff = _replica(tmp_path, topic)
    handoff.assigned({0, 1})
    handoff.apply()
    _learn(learner, handoff, ["k0", "k1"], 0)
    _learn(learner, handoff, ["k2"], 1)
    assert handoff.publish({f"{EVENTS}:0": 10, f"{EVENTS}:1": 5}) == 3
    assert topic.rows["k0"][1].info["covers"] == 10
    # More learning, then a revoke (the source drops the revoked positions at once) with
    # the group's join still going on when the next checkpoint comes.
    _learn(learner, handoff, ["k0"], 0)
    _learn(learner, handoff, ["k2"], 1)
    before = topic.rows["k0"][1].params.copy()
    assert handoff.publish({}) == 0
    assert np.array_equal(topic.rows["k0"][1].params, before)
    assert handoff.dirty == {"k0", "k2"}  # kept: published if their partition comes back
    # Partition 1 comes back, 0 goes: k2 is published with its position, k0 dropped.
    handoff.assigned({1})
    assert handoff.publish({f"{EVENTS}:1": 7}) == 1
    assert topic.rows["k2"][1].info["covers"] == 7
    handoff.apply()
    assert handoff.dirty == set()
    assert sorted(handoff.partition_of) == ["k2"]


def test_a_new_owner_takes_over_and_resumes_where_the_published_state_ends(tmp_path):
    topic = _Topic()
    old, old_h = _replica(tmp_path / "a", topic)
    old_h.assigned({0})
    old_h.apply()
    _learn(old, old_h, ["k0", "k1"], 0)
    old_h.publish({f"{EVENTS}:0": 42})
    w = {r.key: r.params for r in old.key_rows(["k0", "k1"])}
    new, new_h = _replica(tmp_path / "b", topic)
    new_h.assigned({0})
    assert new_h.apply() == {0: 42}  # the source skips to it
    got = {r.key: r.params for r in new.key_rows(["k0", "k1"])}
    for k, params in w.items():
        np.testing.assert_array_equal(got[k], params)
    assert new_h.received == 2


def test_an_answer_for_a_key_whose_partition_went_away_is_not_published(tmp_path):
    topic = _Topic()
    learner, handoff = _replica(tmp_path, topic)
    handoff.assigned({0, 1})
    handoff.apply()
    _learn(learner, handoff, ["k0"], 0)
    _learn(learner, handoff, ["k1"], 1)
    handoff.assigned({0})
    handoff.apply()  # k1 dropped with partition 1
    handoff.dirty.add("k1")  # a label answer to k1's query, asked before the rebalance
    assert handoff.publish({f"{EVENTS}:0": 3}) == 1
    assert sorted(topic.rows) == ["k0"]
    assert handoff.dirty == set()


def test_open_queries_move_with_their_key(tmp_path):
    topic = _Topic()
    old, old_h = _replica(tmp_path / "a", topic)
    old_h.pending = PendingQueries(capacity=100)
    old_h.assigned({0, 1})
    old_h.apply()
    _learn(old, old_h, ["k0"], 0)
    _learn(old, old_h, ["k1"], 1)
    for qid, key in (("q1", "k0"), ("q2", "k1")):
        old_h.pending.add(Pending(qid, f"e-{qid}", key, [0.0] * 3, 0.25, 0, 1.0, 100.0))
    old_h.publish({f"{EVENTS}:0": 5, f"{EVENTS}:1": 5})
    # Partition 0 moves to a new replica, with k0's open query; k1's stays.
    _, new_h = _replica(tmp_path / "b", topic)
    new_h.pending = PendingQueries(capacity=100)
    new_h.assigned({0})
    new_h.apply()
    old_h.assigned({1})
    old_h.apply()
    item, outcome = new_h.pending.answer("e-q1", now=2.0)
    assert outcome == "ok"
    assert item is not None
    assert (item.key, item.p, item.query_id) == ("k0", 0.25, "q1")
    assert len(new_h.pending) == 0
    assert old_h.pending.of_keys(["k0", "k1"]) == {"k1": [asdict(old_h.pending._open["q2"])]}
    assert old_h.pending.answer("q1", now=2.0)[1] == "unknown"  # not this replica's now

"""Key state that moves with its partition when the consumer group rebalances.

Several daemons share one consumer group; each key's events reach the replica that owns the
key's partition. With ``kafka.handoff`` on, a key's state (weights as an offset from the
shared weights, AdaGrad accumulators, start, drift detector, task segment: the rows of
:class:`~streamlearn.state.spill.SpilledKey`) is published to a *compacted* state topic, keyed by
entity and written to the key's own partition number, so that state-topic partition p holds
exactly the keys of events partition p:

- at every checkpoint, before the offsets are committed, the keys changed since the last
  publish go out (so the committed offsets never run ahead of the published state: a
  replica that dies is replaced from the state of its last checkpoint and the events after
  it, replayed from the committed offsets);
- when a rebalance moves a partition, its old owner drops the keys (its progress since
  the last checkpoint is replayed by the new owner from the committed offsets, so the
  state stays exact; partitions kept go on from where this replica was);
- when partitions are gained, the new owner reads their state-topic partitions to the end
  (compaction keeps one record per key) into its spill store, and the keys come back on
  their next event like any spilled key (:mod:`streamlearn.state.residency`); keys of partitions
  lost are dropped.

Why a compacted topic and not a shared checkpoint store: Kafka is already the one
dependency every replica has and can reach; a StatefulSet's volumes are per replica (a
shared store would need a ReadWriteMany volume or an object store); compaction bounds the
topic at one record per key; and the state rides the same partition number as the key's
events, so a new owner reads exactly its share. Every record carries the
position of its events partition that it covers; a new owner skips to the newest of those
when the group's committed offset is older (an old owner that published, then failed to
commit: mid-rebalance, or killed), so no event is learned twice without Kafka transactions.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from streamlearn.state.spill import SpilledKey
from streamlearn.wire.messages import RawRecord

if TYPE_CHECKING:
    from streamlearn.active.pending import PendingQueries
    from streamlearn.config.kafka import KafkaConfig
    from streamlearn.io.kafka import KafkaSource
    from streamlearn.learning.learner import OnlineLearner
    from streamlearn.meta.initfile import MetaInit
    from streamlearn.meta.topic import MetaInitTopic
    from streamlearn.model.spec import ModelSpec
    from streamlearn.ops.metrics import ServiceMetrics

log = logging.getLogger("streamlearn.service.handoff")


def encode(row: SpilledKey) -> bytes:
    """A key's state as JSON (float32 values round-trip exactly through JSON's doubles).

    >>> r = SpilledKey("k", np.array([0.1], np.float32), np.array([2.0], np.float32), {"a": 1})
    >>> back = decode(encode(r), "k")
    >>> (back.params == r.params).all(), back.info
    (np.True_, {'a': 1})
    """
    body = {"params": row.params.tolist(), "accum": row.accum.tolist(), "info": row.info}
    return json.dumps(body, separators=(",", ":")).encode()


def decode(value: bytes, key: str) -> SpilledKey:
    body = json.loads(value)
    return SpilledKey(
        key,
        np.asarray(body["params"], dtype=np.float32),
        np.asarray(body["accum"], dtype=np.float32),
        dict(body["info"]),
    )


class StateTopic:
    """The compacted state topic: publish rows to given partitions, read partitions back."""

    def __init__(self, cfg: KafkaConfig) -> None:
        from kafka import KafkaProducer

        from streamlearn.io.kafka import client_settings

        self.cfg = cfg
        self.topic = cfg.topics.state
        self._producer = KafkaProducer(
            acks="all", linger_ms=5, compression_type=None, **client_settings(cfg)
        )

    def publish(self, rows: Iterable[tuple[int, SpilledKey]]) -> int:
        """Send ``(partition, row)`` pairs and wait until the broker has them all."""
        from kafka.errors import KafkaError

        n = 0
        try:
            for partition, row in rows:
                self._producer.send(
                    self.topic, key=row.key.encode(), value=encode(row), partition=partition
                )
                n += 1
            self._producer.flush(timeout=self.cfg.request_timeout_ms / 1000)
        except KafkaError as exc:
            raise RuntimeError(f"publishing key state to {self.topic} failed: {exc}") from exc
        return n

    def read(
        self, partitions: Sequence[int], timeout_s: float = 60.0
    ) -> dict[str, tuple[int, SpilledKey]]:
        """The newest state (and partition) of every key in those partitions, read to
        their end now."""
        from kafka import KafkaConsumer, TopicPartition

        from streamlearn.io.kafka import client_settings

        if not partitions:
            return {}
        consumer = KafkaConsumer(
            group_id=None, enable_auto_commit=False, **client_settings(self.cfg)
        )
        try:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = consumer.end_offsets(tps)
            out: dict[str, tuple[int, SpilledKey]] = {}
            deadline = time.monotonic() + timeout_s
            while any(consumer.position(tp) < ends[tp] for tp in tps):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"reading {self.topic} {list(partitions)} timed out")
                for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                    for r in records:
                        key = r.key.decode()
                        if r.value is None:  # a tombstone
                            out.pop(key, None)
                        else:
                            out[key] = (r.partition, decode(r.value, key))
            return out
        finally:
            consumer.close(autocommit=False)

    def close(self) -> None:
        self._producer.close(timeout=5)


class KeyHandoff:
    """The daemon's side: which partition each key lives in, which keys changed since the
    last publish, the publish at checkpoints and the drop / take-over after a rebalance.

    Not run as a doctest (it needs a broker): see ``tests/service/test_scale_out.py``.
    """

    def __init__(
        self,
        learner: OnlineLearner,
        topic: StateTopic,
        metrics: ServiceMetrics | None = None,
        events_topic: str = "",
    ) -> None:
        if learner.residency is None or learner.residency.store is None:
            raise ValueError(
                "kafka.handoff needs learner.max_keys > 0 (taken-over keys land in the spill store)"
            )
        self.learner = learner
        self.topic = topic
        self.metrics = metrics
        self.events_topic = events_topic
        self.source: KafkaSource | None = None  # set by wiring.attach_handoff
        # With active learning, a key's open queries travel with its state (its answers go
        # to the labels partition of the same number, read by the key's new owner).
        self.pending: PendingQueries | None = None
        self.partition_of: dict[str, int] = {}
        self.dirty: set[str] = set()
        self.owned: set[int] | None = None  # None until the first assignment
        self._assignment: set[int] | None = None
        self.published = 0  # keys sent, since the process started
        self.received = 0
        # Meta-init versions shared by the replicas (streamlearn.meta.topic), checked at most
        # every meta_check_s seconds.
        self.meta_topic: MetaInitTopic | None = None
        self.meta_check_s = 5.0
        self._meta_checked = -math.inf

    def newer_meta_init(self, version: int, spec: ModelSpec) -> MetaInit | None:
        """A published meta-init newer than ``version``, when it is time to look."""
        now = time.monotonic()
        if self.meta_topic is None or now - self._meta_checked < self.meta_check_s:
            return None
        self._meta_checked = now
        return self.meta_topic.newer_than(version, spec)

    def note(self, keys: Sequence[str], partitions: Sequence[int], changed: Iterable[str]) -> None:
        """Keys seen in a poll with their events' partitions, and the keys whose state the
        poll changed (labelled ones)."""
        for k, p in zip(keys, partitions, strict=True):
            self.partition_of[k] = p
        self.dirty.update(changed)

    def publish(self, positions: Mapping[str, int]) -> int:
        """Publish the changed keys' state, each with the position of its events partition
        that state covers (``positions``: the source's, ``topic:partition`` -> next
        offset); raises RuntimeError on failure (the caller then does not commit).

        Only keys of partitions this replica holds right now: the ones ``positions`` has
        (a revoke removes its partitions from the source's positions at once, while the
        group's join can go on over several polls: seen under load, a checkpoint between
        them published state with no position it covers, which the new owner then learned
        on from the older committed offset, counting those events twice), and none of
        partitions a pending assignment leaves out. The others stay dirty: published when
        their partition is kept, dropped by :meth:`apply` when it is lost."""
        if not self.dirty:
            return 0
        owned = self._assignment if self._assignment is not None else self.owned
        covers: dict[str, int] = {}
        # Every changed key has a partition here (queries and answers only come for keys
        # seen here, and a lost key's queries go with it); a guard all the same: a key
        # without one is not this replica's to publish.
        self.dirty.intersection_update(self.partition_of)
        for k in self.dirty:
            p = self.partition_of[k]
            at = positions.get(f"{self.events_topic}:{p}")
            if at is not None and (owned is None or p in owned):
                covers[k] = at
        if not covers:
            return 0
        rows = self.learner.key_rows(sorted(covers))
        queries = self.pending.of_keys(covers) if self.pending is not None else {}
        for r in rows:
            r.info["covers"] = covers[r.key]
            r.info["pending"] = queries.get(r.key, [])
        n = self.topic.publish((self.partition_of[r.key], r) for r in rows)
        self.dirty.difference_update(covers)
        self.published += n
        if self.metrics is not None:
            self.metrics.handoff_keys.labels("published").inc(n)
        return n

    def assigned(self, partitions: set[int]) -> None:
        """The consumer's rebalance hook (on its IO thread: nothing blocks here)."""
        self._assignment = set(partitions)

    def after_poll(self, records: list[RawRecord]) -> list[RawRecord]:
        """The loop's call right after a poll: a rebalance seen in it is applied before its
        records, and records the taken-over key state already covers are dropped."""
        covered = self.apply()
        return self.source.skip_to(covered, records) if covered and self.source else records

    def apply(self) -> dict[int, int]:
        """After a rebalance (called by the loop right after the poll that saw it, before
        its records): drop the keys of partitions lost, take over those gained. At the
        first assignment every partition counts as gained: the published state replaces
        what the local checkpoint had. Returns, per gained partition, the position its
        published state covers: the loop skips to it (the group's committed offset can be
        older, when the old owner published and then failed to commit: mid-rebalance, or
        killed), so no event is learned twice."""
        if self._assignment is None:
            return {}
        partitions, self._assignment = self._assignment, None
        if self.owned is None:
            lost, gained = set(self.partition_of.values()) - partitions, set(partitions)
        else:
            lost, gained = self.owned - partitions, partitions - self.owned
        self.owned = set(partitions)
        if lost:
            gone = [k for k, p in self.partition_of.items() if p in lost]
            self.learner.drop_keys(gone)
            if self.pending is not None:
                self.pending.drop_keys(gone)
            for k in gone:
                del self.partition_of[k]
                self.dirty.discard(k)
            log.info("dropped %d keys of partitions %s", len(gone), sorted(lost))
            if self.metrics is not None:
                self.metrics.handoff_keys.labels("dropped").inc(len(gone))
        covered: dict[int, int] = {}
        if gained:
            rows = self.topic.read(sorted(gained))
            queries: list[dict[str, Any]] = []
            for p, row in rows.values():
                if (c := row.info.pop("covers", None)) is not None:
                    covered[p] = max(covered.get(p, 0), int(c))
                queries.extend(row.info.pop("pending", []))
            # Copies a restart brought back from the local checkpoint give way to the
            # published state, which the committed offsets agree with.
            self.learner.drop_keys(list(rows))
            self.learner.receive_keys([row for _, row in rows.values()])
            if self.pending is not None and queries:
                self.pending.receive(queries)
            for k, (p, _) in rows.items():
                self.partition_of[k] = p
            self.received += len(rows)
            log.info("took over %d keys of partitions %s", len(rows), sorted(gained))
            if self.metrics is not None:
                self.metrics.handoff_keys.labels("received").inc(len(rows))
        return covered

    def state_dict(self) -> dict[str, Any]:
        return {"partition_of": dict(self.partition_of)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.partition_of = {str(k): int(v) for k, v in state.get("partition_of", {}).items()}

"""Kafka transport (kafka-python): a consumer-group source and the producer-side sinks.

Delivery: the source never auto-commits. :meth:`KafkaSource.positions` reports the next
offset per partition of everything returned so far; the daemon checkpoints its state with
those positions and only then calls :meth:`KafkaSource.commit` with them. When a partition is
assigned, the consumer seeks to the checkpoint's position for it (when the checkpoint has
one), so the state and the read position always agree: a crash replays what came after the
last checkpoint and never skips a record.

Back-pressure: the loop polls again only after it has processed the previous batch, and the
consumer prefetches at most ``kafka.fetch_max_bytes`` ahead. Broker outages surface as empty
polls (kafka-python reconnects with ``reconnect_backoff_ms`` .. ``reconnect_backoff_max_ms``)
and as failed commits, which are retried at the next checkpoint; :attr:`KafkaSource.healthy`
says whether the broker answers.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
    TopicPartition,
)
from kafka.admin import NewTopic
from kafka.errors import KafkaError, MessageSizeTooLargeError, TopicAlreadyExistsError

from streamlearn.config import KafkaConfig
from streamlearn.wire.messages import DeadLetter, Origin, Prediction, Query, RawRecord

log = logging.getLogger("streamlearn.kafka")


def position_key(topic: str, partition: int) -> str:
    """How offsets are keyed in checkpoints: ``"topic:partition"``."""
    return f"{topic}:{partition}"


def _split(key: str) -> TopicPartition:
    topic, _, part = key.rpartition(":")
    return TopicPartition(topic, int(part))


def client_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """What every kafka-python client of the service is built with: servers, timeouts,
    backoff, and TLS/SASL from ``kafka.security`` (secrets read here, never logged)."""
    sec = cfg.security
    out: dict[str, Any] = {
        "bootstrap_servers": list(cfg.bootstrap_servers),
        "client_id": cfg.client_id,
        "request_timeout_ms": cfg.request_timeout_ms,
        "reconnect_backoff_ms": cfg.reconnect_backoff_ms,
        "reconnect_backoff_max_ms": cfg.reconnect_backoff_max_ms,
        "security_protocol": sec.protocol,
    }
    if sec.protocol in ("SSL", "SASL_SSL"):
        out.update(
            ssl_check_hostname=sec.ssl_check_hostname,
            ssl_cafile=sec.ssl_cafile,
            ssl_certfile=sec.ssl_certfile,
            ssl_keyfile=sec.ssl_keyfile,
            ssl_password=sec.secret("ssl_password"),
        )
    if sec.protocol.startswith("SASL"):
        out.update(
            sasl_mechanism=sec.sasl_mechanism,
            sasl_plain_username=sec.sasl_username,
            sasl_plain_password=sec.secret("sasl_password"),
        )
    return out


def ensure_topics(
    cfg: KafkaConfig,
    names: Iterable[str],
    timeout_s: float = 30.0,
    compacted: Iterable[str] = (),
) -> list[str]:
    """Create the topics that do not exist yet (``kafka.partitions`` each; those in
    ``compacted`` with ``cleanup.policy=compact``); returns those created. Retries while the
    broker is still starting, up to ``timeout_s``."""
    compact = set(compacted)
    wanted = sorted(set(names))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(**client_settings(cfg))
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"kafka.bootstrap_servers {cfg.bootstrap_servers}: broker not reachable ({exc})"
                ) from exc
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            new = [
                NewTopic(
                    t,
                    cfg.partitions,
                    cfg.replication_factor,
                    topic_configs={"cleanup.policy": "compact"} if t in compact else {},
                )
                for t in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new, raise_errors=True)
        return missing
    finally:
        admin.close()


class BrokerProbe:
    """Is any bootstrap server accepting connections? Checked every ``interval_s`` by a
    background thread, so that readiness never blocks the consumer loop (kafka-python has no
    public "connected" query: the consumer just returns empty polls while the broker is down).
    """

    def __init__(self, servers: Sequence[str], interval_s: float = 2.0) -> None:
        self._servers = [_host_port(s) for s in servers]
        self._interval = interval_s
        self._reachable = self._check()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-probe", daemon=True)
        self._thread.start()

    @property
    def reachable(self) -> bool:
        return self._reachable

    def _check(self) -> bool:
        for host, port in self._servers:
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
                return True
        return False

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._reachable = self._check()

    def close(self) -> None:
        self._stop.set()


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 9092)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    # kafka-python runs these on its IO thread, where nothing may block on the broker (no
    # commit, no other client's fetch): they only seek and record; the hand-off's broker
    # work runs in the daemon's loop (streamlearn.service.handoff).

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.source.partitions_revoked(revoked)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.source.partitions_assigned(assigned)


def wait_for_partitions(
    consumer: KafkaConsumer, topics: Sequence[str], timeout_s: float = 30.0
) -> bool:
    """Block until the consumer's metadata lists partitions of every topic; False on timeout.

    A topic created a moment ago may not be in the broker's metadata yet. Subscribed then,
    the group's first assignment leaves it out, and nothing is read from it until the next
    metadata refresh (``metadata_max_age_ms``, 5 minutes by default): a labeller started
    beside a new daemon answered nothing for minutes."""
    deadline = time.monotonic() + timeout_s
    missing = list(topics)
    while True:
        missing = [t for t in missing if not consumer.partitions_for_topic(t)]
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if missing:
        log.warning(
            "no partitions known for %s after %.0f s; subscribing anyway", missing, timeout_s
        )
    return not missing


class KafkaSource:
    """The events topic (and the labels topic, when asked) read by a consumer group, with
    manual commits.

    Not constructed in doctests: it needs a broker (see ``tests/io/test_kafka.py``).
    """

    def __init__(
        self, cfg: KafkaConfig, max_poll_records: int, topics: Sequence[str] | None = None
    ) -> None:
        self.cfg = cfg
        self._consumer = KafkaConsumer(
            group_id=cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset=cfg.auto_offset_reset,
            max_poll_records=max_poll_records,
            fetch_max_bytes=cfg.fetch_max_bytes,
            max_partition_fetch_bytes=cfg.max_partition_fetch_bytes,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            **client_settings(cfg),
        )
        self._positions: dict[str, int] = {}
        self._restore: dict[str, int] = {}
        # Rebalance hook (streamlearn.service.handoff), given the events partitions assigned. With
        # hand-off a partition gained resumes from the committed offset, not from a local
        # checkpoint's: it agrees with the published key state, whoever published it.
        self.on_assigned: list[Callable[[set[int]], None]] = []
        self.seek_on_assign = True
        self._held: dict[str, int] = {}
        # With active learning the labels topic too: one consumer, so that a poll holds both
        # and one checkpoint covers both. The default range assignor gives a consumer the
        # same partition numbers of topics with equal partition counts, and labellers key
        # answers by entity like events: an answer reaches the replica that asked.
        subscribed = list(topics or [cfg.topics.events])
        wait_for_partitions(self._consumer, subscribed)
        self._consumer.subscribe(subscribed, listener=_Rebalance(self))
        self._last_error: str | None = None
        self._probe = BrokerProbe(cfg.bootstrap_servers)

    @property
    def exhausted(self) -> bool:
        return False  # a topic never ends

    @property
    def healthy(self) -> bool:
        """True while a broker accepts connections and the last poll/commit did not fail."""
        return self._last_error is None and self._probe.reachable

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Rebalance: what this replica had processed, kept for partitions it gets back."""
        self._held = dict(self._positions)
        for tp in revoked:
            self._positions.pop(position_key(tp.topic, tp.partition), None)

    def partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Rebalance: where each assigned partition resumes."""
        for tp in assigned:
            key = position_key(tp.topic, tp.partition)
            # A checkpoint's positions apply once, at the first assignment after it was
            # loaded: a later rebalance must not replay what was learned since.
            start = self._restore.pop(key, None) if self.seek_on_assign else None
            if start is None:
                # Kept through the rebalance: go on from what this replica has processed
                # (the group's committed offset is older: its records are learned here).
                start = self._held.get(key)
                if start is not None:
                    self._positions[key] = start
            if start is not None:
                self._consumer.seek(tp, start)
        self._held = {}
        log.info("assigned partitions %s", sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))
        events = {tp.partition for tp in assigned if tp.topic == self.cfg.topics.events}
        for hook in self.on_assigned:
            hook(events)

    def seek(self, positions: Mapping[str, int]) -> None:
        """Resume from these positions (a checkpoint's) when their partitions are assigned."""
        self._restore = dict(positions)
        self._positions.update(positions)

    def skip_to(self, covered: Mapping[int, int], records: list[RawRecord]) -> list[RawRecord]:
        """Events partitions' positions moved up to ``covered`` (partition -> next offset),
        when behind: the records of ``records`` below it dropped, the fetch position moved."""
        events = self.cfg.topics.events
        out = [
            r
            for r in records
            if r.origin.topic != events or r.origin.offset >= covered.get(r.origin.partition, -1)
        ]
        for p, offset in covered.items():
            key = position_key(events, p)
            if self._positions.get(key, -1) < offset:
                tp = TopicPartition(events, p)
                if self._consumer.position(tp) < offset:
                    self._consumer.seek(tp, offset)
                self._positions[key] = offset
        if len(out) < len(records):
            log.info("skipped %d records the taken-over key state covers", len(records) - len(out))
        return out

    def positions(self) -> dict[str, int]:
        """Next offset per partition of everything returned by :meth:`poll` so far."""
        return dict(self._positions)

    def lag(self) -> int | None:
        """Records between the positions and the high watermarks the last fetches reported,
        over the assigned partitions (no request: the consumer caches the watermarks)."""
        total, known = 0, False
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            pos = self._positions.get(position_key(tp.topic, tp.partition))
            if high is not None and pos is not None:
                total += max(0, high - pos)
                known = True
        return total if known else None

    def poll(self, max_records: int, timeout_s: float) -> list[RawRecord]:
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            self._last_error = f"poll failed: {exc}"
            log.warning("%s; retrying", self._last_error)
            time.sleep(min(timeout_s, 1.0))
            return []
        out: list[RawRecord] = []
        if batches:
            self._last_error = None
        for tp, records in batches.items():
            for r in records:
                value = r.value if r.value is not None else b""
                out.append(RawRecord(value, Origin(tp.topic, tp.partition, r.offset)))
            if records:
                self._positions[position_key(tp.topic, tp.partition)] = records[-1].offset + 1
        return out

    def commit(self, positions: Mapping[str, int] | None = None) -> bool:
        """Commit ``positions`` (default: everything polled); False when it failed."""
        chosen = self._positions if positions is None else positions
        assigned = {position_key(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        offsets = {
            _split(k): OffsetAndMetadata(v, "", -1) for k, v in chosen.items() if k in assigned
        }
        if not offsets:
            return True
        try:
            self._consumer.commit(offsets=offsets)
        except KafkaError as exc:
            self._last_error = f"commit failed: {exc}"
            log.warning("%s; the next checkpoint retries", self._last_error)
            return False
        self._last_error = None
        return True

    def close(self) -> None:
        self._probe.close()
        self._consumer.close(autocommit=False)


def read_since(
    cfg: KafkaConfig, topic: str, since_s: float, limit: int
) -> list[tuple[bytes, float]]:
    """The values and times (s) of the messages of ``topic`` written since ``since_s``, up
    to its end now (the last ``limit`` of them, oldest first), read outside the group."""
    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, **client_settings(cfg))
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        starts = consumer.offsets_for_times({tp: int(since_s * 1000) for tp in tps})
        ends = consumer.end_offsets(tps)
        todo: dict[TopicPartition, int] = {}
        for tp in tps:
            start = starts.get(tp)
            if start is not None and start.offset < ends[tp]:
                todo[tp] = ends[tp]
        if not todo:
            return []
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, starts[tp].offset)
        out: list[tuple[bytes, float]] = []
        deadline = time.monotonic() + cfg.request_timeout_ms / 1000
        while todo and time.monotonic() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=500).items():
                end = todo.get(tp, -1)
                out.extend((m.value, m.timestamp / 1000) for m in msgs if m.offset < end)
                if consumer.position(tp) >= end:
                    todo.pop(tp, None)
        if todo:
            log.warning("read %s since %.0f only in part (timed out)", topic, since_s)
        out.sort(key=lambda item: item[1])
        return out[-limit:]
    finally:
        consumer.close(autocommit=False)


class OutputLostError(RuntimeError):
    """An output the broker did not take; offsets must not be committed past it."""


class KafkaSink:
    """Predictions (optional), dead letters and any other topic (queries) via one producer.

    A send that fails (at once, or later in the producer's background thread) is never
    passed over: the first failure is kept and :meth:`flush` raises :class:`OutputLostError`
    from then on, so no checkpoint covers it and no offset is committed past it (a restart
    replays from the last checkpoint and sends it again). A dead letter too large for the
    producer is sent again without its original (the size and SHA-256 still identify it).
    """

    def __init__(self, cfg: KafkaConfig) -> None:
        self.cfg = cfg
        p = cfg.producer
        self._producer = KafkaProducer(
            acks=p.acks if p.acks == "all" else int(p.acks),
            linger_ms=p.linger_ms,
            batch_size=p.batch_size,
            compression_type=None if p.compression_type == "none" else p.compression_type,
            **client_settings(cfg),
        )
        self._n_partitions: dict[str, int] = {}
        self._lost: str | None = None

    @property
    def lost(self) -> str | None:
        """Why outputs were lost (the first failure), None while none was."""
        return self._lost

    def _failed(self, topic: str, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = f"an output to {topic!r} was not delivered ({type(exc).__name__}: {exc})"
            log.error("%s; offsets stay uncommitted until a restart replays it", self._lost)

    def _send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        try:
            future = self._producer.send(topic, key=key, value=value, partition=partition)
        except KafkaError as exc:
            self._failed(topic, exc)
            return
        future.add_errback(self._failed, topic)

    def send(self, topic: str, key: str | None, value: bytes) -> None:
        self._send(topic, key.encode() if key else None, value)

    def _partitions(self, topic: str) -> int:
        n = self._n_partitions.get(topic)
        if n is None:
            parts = self._producer.partitions_for(topic)
            n = self._n_partitions[topic] = len(parts) if parts else 0
        return n

    def predictions(self, items: Sequence[Prediction]) -> None:
        """One message per prediction, keyed by entity. It goes to its event's partition
        number (modulo the topic's partitions), which keeps each key's predictions in order
        without kafka-python's pure-Python key hash: 52k sends/s against 38k when hashing."""
        if not self.cfg.emit_predictions:
            return
        topic = self.cfg.topics.predictions
        n = self._partitions(topic)
        send = self._send
        for p in items:
            part = p.partition % n if n and p.partition >= 0 else None
            send(topic, p.key.encode(), p.to_json(), part)

    def dead_letters(self, items: Sequence[DeadLetter]) -> None:
        topic = self.cfg.topics.dead_letter
        send = self._producer.send
        for d in items:
            try:
                try:
                    future = send(topic, value=d.to_json())
                except MessageSizeTooLargeError:
                    # Only a producer limit below the bounded prefix gets here.
                    future = send(topic, value=d.to_json(max_original=0))
            except KafkaError as exc:
                self._failed(topic, exc)
                continue
            future.add_errback(self._failed, topic)

    def queries(self, items: Sequence[Query]) -> None:
        """One message per query, keyed by entity (labellers may partition work by key)."""
        topic = self.cfg.topics.queries
        for q in items:
            self._send(topic, q.key.encode(), q.to_json())

    def flush(self) -> None:
        self._producer.flush(timeout=self.cfg.request_timeout_ms / 1000)
        if self._lost is not None:
            raise OutputLostError(self._lost)

    def close(self) -> None:
        self._producer.close(timeout=self.cfg.request_timeout_ms / 1000)

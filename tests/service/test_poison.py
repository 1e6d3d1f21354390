"""One record can never take the daemon or the good events polled with it down (against the
real broker of scripts/kafka.sh): whatever fails on one record dead-letters that record and
the poll goes on; a failure that escapes a poll commits nothing past the last checkpoint and
the runs after it isolate the record instead of crashing on it again."""

import base64
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from streamlearn.config import Config, load_config
from streamlearn.io.memory import MemorySink, MemorySource
from streamlearn.service.daemon import Daemon
from streamlearn.service.quarantine import LEDGER_NAME, PollFailedError
from streamlearn.state.checkpoint import CheckpointStore
from streamlearn.wire.messages import EventBatch
from tests.helpers import sample, start_in_thread
from tests.io.test_kafka import _events, _produce
from tests.kafka_util import (
    committed_offsets,
    end_offsets,
    kafka_overrides,
    read_topic,
    unique_prefix,
)

PARTITIONS = 2


def _config(bootstrap: str, prefix: str, ck_dir: Path | None, **source: Any) -> Config:
    tree: dict[str, Any] = {
        "source": {"kind": "kafka", "batch_size": 200, **source},
        "kafka": kafka_overrides(bootstrap, prefix, PARTITIONS),
    }
    if ck_dir is not None:
        tree["checkpoint"] = {"dir": str(ck_dir), "every_events": 100}
    return load_config(overrides=tree, env={})


def _drain(daemon: Daemon, done: Callable[[], bool], timeout_s: float = 90.0) -> None:
    """Run the daemon in a thread until ``done``; re-raise what stopped it early."""
    runner, failure = start_in_thread(daemon)
    deadline = time.monotonic() + timeout_s
    while runner.is_alive() and not done() and time.monotonic() < deadline:
        time.sleep(0.1)
    daemon.request_stop()
    runner.join(timeout=60)
    if failure:
        raise failure[0]
    assert done(), "the daemon did not get through the stream in time"


def _dead_letter_total(reg: CollectorRegistry) -> float:
    return sum(
        s.value
        for f in reg.collect()
        if f.name == "streamlearn_dead_letters"
        for s in f.samples
        if s.name.endswith("_total")
    )


def test_a_deeply_nested_or_huge_record_is_dead_lettered_and_its_poll_goes_on(
    kafka_bootstrap, tmp_path
):
    prefix = unique_prefix()
    cfg = _config(kafka_bootstrap, prefix, tmp_path / "ck")
    reg = CollectorRegistry()
    daemon = Daemon(cfg, reg)
    events = _events(600)
    values: list[tuple[str | None, bytes]] = [(str(e["key"]), orjson.dumps(e)) for e in events]
    nested = dict(events[0], id="nested")
    deep = orjson.dumps(nested)[:-1] + b',"extra":' + b"[" * 5000 + b"]" * 5000 + b"}"
    huge = b'{"id":"huge","pad":"' + b"x" * 1_000_000 + b'"}'  # over the record limit
    values[250:250] = [("k", deep), ("k", huge)]
    _produce(kafka_bootstrap, cfg.kafka.topics.events, values)

    _drain(daemon, lambda: daemon.events_seen == len(values))

    preds = read_topic(kafka_bootstrap, cfg.kafka.topics.predictions, len(events))
    assert {p["event_id"] for p in preds} == {e["id"] for e in events}
    dead = read_topic(kafka_bootstrap, cfg.kafka.topics.dead_letter, 2)
    by_reason = {d["reason"]: d for d in dead}
    print({r: (d["original_size"], d["original_truncated"]) for r, d in by_reason.items()})
    assert set(by_reason) == {"invalid_json", "oversized"}
    big = by_reason["oversized"]
    assert big["original_size"] == len(huge)
    assert big["original_truncated"]
    assert big["original_sha256"] == hashlib.sha256(huge).hexdigest()
    assert huge.startswith(base64.b64decode(big["original_b64"]))
    assert base64.b64decode(by_reason["invalid_json"]["original_b64"]) == deep
    assert _dead_letter_total(reg) == 2
    ends = end_offsets(kafka_bootstrap, cfg.kafka.topics.events, PARTITIONS)
    assert committed_offsets(kafka_bootstrap, cfg.kafka.group_id) == ends


def _failing_on(daemon: Daemon, key: str) -> None:
    """The learner fails on any batch holding ``key``: a stand-in for a fault no decoder
    check catches (the broker, the topics and the rest of the daemon are real)."""
    process = daemon.learner.process

    def process_or_fail(batch: EventBatch, **kw: Any) -> Any:
        if key in batch.keys:
            raise ValueError(f"cannot learn key {key!r}")
        return process(batch, **kw)

    daemon.learner.process = process_or_fail  # type: ignore[method-assign]


def test_a_failing_poll_commits_nothing_and_the_record_is_isolated_without_a_crash_loop(
    kafka_bootstrap, tmp_path
):
    prefix = unique_prefix()
    ck_dir = tmp_path / "ck"
    cfg = _config(kafka_bootstrap, prefix, ck_dir)
    events = _events(1200)
    poison = dict(events[700], id="poison", key="boom")
    values: list[tuple[str | None, bytes]] = [(str(e["key"]), orjson.dumps(e)) for e in events]
    values.insert(700, ("boom", orjson.dumps(poison)))
    topic = cfg.kafka.topics.events

    # Run 1: the poll holding the poison record fails. Nothing past the last checkpoint
    # is saved or committed, and that poll's records are suspects.
    first = Daemon(cfg, CollectorRegistry())  # creates the topics
    _produce(kafka_bootstrap, topic, values)
    _failing_on(first, "boom")
    with pytest.raises(PollFailedError, match="the next run isolates the record"):
        _drain(first, lambda: False)
    latest = CheckpointStore(ck_dir).load_latest()
    assert latest is not None
    committed = committed_offsets(kafka_bootstrap, cfg.kafka.group_id)
    assert committed == {k: v for k, v in latest.offsets.items() if k in committed}
    ends = end_offsets(kafka_bootstrap, topic, PARTITIONS)
    assert sum(latest.offsets.values()) < sum(ends.values())
    ledger = orjson.loads((ck_dir / LEDGER_NAME).read_bytes())
    print(f"run 1 stopped: checkpoint at {latest.offsets}, {len(ledger['suspects'])} suspects")
    assert ledger["suspects"]
    assert not ledger["poison"]

    # Run 2: the suspect poll goes one record at a time; the poison fails on its own.
    second = Daemon(cfg, CollectorRegistry())
    _failing_on(second, "boom")
    with pytest.raises(PollFailedError, match="fails on its own"):
        _drain(second, lambda: False)
    ledger = orjson.loads((ck_dir / LEDGER_NAME).read_bytes())
    assert [p[:2] for p in ledger["poison"]] == [[topic, ledger["poison"][0][1]]]
    print(f"run 2 stopped: poison at {ledger['poison'][0][:3]}")

    # Run 3 (the fault still there): the poison is dead-lettered first and all the rest
    # goes through; the ledger empties once a checkpoint passes it.
    reg = CollectorRegistry()
    third = Daemon(cfg, reg)
    _failing_on(third, "boom")
    _drain(
        third,
        lambda: committed_offsets(kafka_bootstrap, cfg.kafka.group_id) == ends,
    )
    preds = read_topic(kafka_bootstrap, cfg.kafka.topics.predictions, len(events))
    assert {p["event_id"] for p in preds} == {e["id"] for e in events}
    dead = read_topic(kafka_bootstrap, cfg.kafka.topics.dead_letter, 1)
    assert [d["reason"] for d in dead] == ["processing_failed"]
    assert base64.b64decode(dead[0]["original_b64"]) == orjson.dumps(poison)
    assert "cannot learn key 'boom'" in dead[0]["detail"]
    assert sample(reg, "streamlearn_dead_letters_total", {"reason": "processing_failed"}) == 1
    assert orjson.loads((ck_dir / LEDGER_NAME).read_bytes()) == {"suspects": [], "poison": []}
    print(f"run 3: {len({p['event_id'] for p in preds})} events predicted, 1 dead letter")


def test_without_a_checkpoint_store_a_failing_record_is_dead_lettered_in_place():
    cfg = load_config(overrides={"source": {"batch_size": 50}}, env={})
    events = _events(200)
    events[120] = dict(events[120], key="boom")
    sink = MemorySink()
    reg = CollectorRegistry()
    daemon = Daemon(cfg, reg, source=MemorySource(iter(events)), sink=sink)
    _failing_on(daemon, "boom")
    daemon.run()
    assert [d.reason.value for d in sink.recent_dead_letters] == ["processing_failed"]
    assert sample(reg, "streamlearn_events_total") >= 199
    assert {p.event_id for p in sink.recent_predictions} == {
        str(e["id"]) for i, e in enumerate(events) if i != 120
    }


class _LosingSink(MemorySink):
    """Loses its outputs from the third poll on, as a producer whose sends fail."""

    def __init__(self) -> None:
        super().__init__()
        self.polls = 0

    def predictions(self, items: Any) -> None:
        self.polls += 1
        super().predictions(items)

    @property
    def lost(self) -> str | None:
        return "an output to 'predictions' was not delivered" if self.polls >= 3 else None

    def flush(self) -> None:
        if self.lost is not None:
            raise RuntimeError(self.lost)


def test_a_lost_output_stops_the_daemon_before_anything_past_it_is_committed(tmp_path):
    cfg = load_config(
        overrides={
            "source": {"batch_size": 100},
            "checkpoint": {"dir": str(tmp_path / "ck"), "every_events": 100},
        },
        env={},
    )
    sink = _LosingSink()
    daemon = Daemon(cfg, CollectorRegistry(), source=MemorySource(iter(_events(1000))), sink=sink)
    with pytest.raises(PollFailedError, match="was not delivered"):
        daemon.run()
    latest = CheckpointStore(tmp_path / "ck").load_latest()
    assert latest is not None
    assert latest.offsets == {"embedded:0": 200}  # the polls before the loss, not after
    assert latest.state["totals"]["events"] == 200

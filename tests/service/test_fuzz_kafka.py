"""Fuzzed record shapes through the running daemon on the real broker (hypothesis): nesting
depth, sizes up to the broker's message limit, JSON types, text encodings and field sets.
After it the daemon is still up and every record sent is an event or a dead letter."""

import itertools
import json
import time
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from streamlearn.config import load_config
from streamlearn.service.daemon import Daemon
from streamlearn.wire.messages import MAX_RECORD_BYTES
from tests.helpers import sample, start_in_thread
from tests.kafka_util import kafka_overrides, read_topic, unique_prefix
from tests.wire.test_fuzz import json_values

N_FEATURES = 8
# Under the broker's default message.max.bytes (1,048,588), over the decoder's record limit.
BROKER_LIMIT = 1_040_000
IDS = itertools.count()


def _with_nested(event: dict[str, Any], field: str, depth: int, leaf: bytes) -> bytes:
    """JSON of ``event`` with ``field`` nested ``depth`` lists deep, written as text (past
    what a JSON library's recursion writes)."""
    rest = orjson.dumps({k: v for k, v in event.items() if k != field})
    nested = b"[" * depth + leaf + b"]" * depth
    return rest[:-1] + b',"' + field.encode() + b'":' + nested + b"}"


def _valid(draw: st.DrawFn) -> dict[str, Any]:
    x = draw(st.lists(st.floats(-1e3, 1e3), min_size=N_FEATURES, max_size=N_FEATURES))
    event: dict[str, Any] = {"id": f"f{next(IDS)}", "key": draw(st.sampled_from("abcde")), "x": x}
    if draw(st.booleans()):
        event["y"] = draw(st.sampled_from([0, 1]))
    return event


@st.composite
def record(draw: st.DrawFn) -> bytes:
    shape = draw(
        st.sampled_from(
            ["valid", "nested_extra", "nested_x", "big", "fields", "encoding", "types", "bytes"]
        )
    )
    event = _valid(draw)
    if shape == "nested_extra":  # valid, with a deep extra field (the decoder must not fail)
        return _with_nested(event, "extra", draw(st.integers(1, 5000)), b"0")
    if shape == "nested_x":
        return _with_nested(event, "x", draw(st.integers(1, 5000)), b"0.5")
    if shape == "big":  # up to the broker's limit: over the decoder's record limit too
        size = draw(
            st.one_of(st.integers(1000, 100_000), st.integers(MAX_RECORD_BYTES, BROKER_LIMIT))
        )
        event["pad"] = "p" * size
        return orjson.dumps(event)[: BROKER_LIMIT - 100]
    if shape == "fields":  # fields missing, extra, renamed
        for name in draw(st.lists(st.sampled_from(["id", "key", "x", "y"]), max_size=3)):
            event.pop(name, None)
        extra = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
        return json.dumps({**extra, **event}, default=str).encode()
    if shape == "encoding":
        codec = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "utf-8-sig"]))
        event["key"] = draw(st.text(min_size=1, max_size=6))
        return orjson.dumps(event).decode().encode(codec, "replace")
    if shape == "types":
        field = draw(st.sampled_from(["id", "key", "x", "y", "ts"]))
        event[field] = draw(json_values)
        return json.dumps(event, default=str).encode()  # NaN, Infinity, 100-digit integers
    if shape == "bytes":
        return draw(st.binary(max_size=512))
    return orjson.dumps(event)


def test_fuzzed_records_on_the_real_broker_are_each_an_event_or_a_dead_letter(
    kafka_bootstrap, tmp_path
):
    prefix = unique_prefix()
    cfg = load_config(
        overrides={
            "source": {"kind": "kafka", "batch_size": 100},
            "kafka": kafka_overrides(kafka_bootstrap, prefix, 2),
            "checkpoint": {"dir": str(tmp_path / "ck"), "every_events": 200},
        },
        env={},
    )
    reg = CollectorRegistry()
    daemon = Daemon(cfg, reg)
    loop, failure = start_in_thread(daemon)
    producer = KafkaProducer(
        bootstrap_servers=[kafka_bootstrap], linger_ms=5, max_request_size=BROKER_LIMIT + 4096
    )
    sent = 0

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(record(), min_size=1, max_size=20))
    def produce(values: list[bytes]) -> None:
        nonlocal sent
        for v in values:
            producer.send(cfg.kafka.topics.events, value=v)
        producer.flush()
        sent += len(values)
        assert loop.is_alive(), failure

    try:
        produce()
        deadline = time.monotonic() + 120
        while daemon.events_seen < sent and loop.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert loop.is_alive(), failure
        assert daemon.ready() == (True, "ready")
    finally:
        producer.close()
        daemon.request_stop()
        loop.join(timeout=60)
    assert not failure, failure
    events = sample(reg, "streamlearn_events_total")
    repeats = sample(reg, "streamlearn_duplicate_events_total")
    dead = read_topic(kafka_bootstrap, cfg.kafka.topics.dead_letter, int(sent - events), 60)
    reasons: dict[str, int] = {}
    for d in dead:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    print(f"{sent} records: {events:.0f} events, {repeats:.0f} repeats, {len(dead)} dead {reasons}")
    assert daemon.events_seen == sent
    # Ids are fresh but for an extra field that chanced on an earlier id.
    assert events + repeats + len(dead) == sent
    assert all(len(orjson.dumps(d)) < BROKER_LIMIT for d in dead)

"""Fuzzed input (hypothesis): malformed events and label answers of every kind (wrong types,
NaN/Inf, wrong dimensions, huge arrays, deep nesting, invalid UTF-8, oversized records).
Nothing crashes, and every record is either a valid event/answer or a dead letter with a
reason; through the daemon, the dead-letter and answer counters add up to what was sent."""

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from streamlearn.config import load_config
from streamlearn.io.memory import MemorySink, MemorySource
from streamlearn.service.daemon import Daemon
from streamlearn.wire.messages import EventDecoder, Origin, RawRecord, Reason

N_FEATURES = 8

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=15,
)
features = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=12),
    st.lists(st.floats(-1e3, 1e3), min_size=N_FEATURES, max_size=N_FEATURES),  # valid
    st.lists(json_values, max_size=10),
    st.dictionaries(st.text(max_size=3), st.floats(), max_size=10),
    json_values,
)
event_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(min_size=1, max_size=300), json_values),
        "key": st.one_of(st.sampled_from(["a", "b", "c"]), json_values),
        "ts": st.one_of(st.floats(allow_nan=True, allow_infinity=True), json_values),
        "x": features,
        "y": st.one_of(st.sampled_from([0, 1, 0.0, 1.0, True]), json_values),
        "extra": json_values,
    },
)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


raw_bytes = st.one_of(
    st.binary(max_size=64),  # mostly invalid UTF-8 or not JSON
    st.builds(_deep, st.integers(500, 5000)),
    st.just(b'{"id": "big", "key": "k", "x": [' + b"0.5," * 300_000 + b"0.5]}"),  # oversized
    st.builds(
        lambda n: orjson.dumps({"id": "h", "key": "k", "x": [1.0] * n}), st.integers(9, 5000)
    ),
)


def _encode(obj: Any) -> bytes:
    # The standard library writes NaN and Infinity tokens, which JSON does not allow.
    return json.dumps(obj, allow_nan=True, default=str).encode()


records = st.one_of(event_objects.map(_encode), raw_bytes, event_objects)
answer_objects = st.fixed_dictionaries(
    {},
    optional={
        "query_id": st.one_of(st.text(max_size=300), json_values),
        "event_id": st.one_of(st.text(max_size=10), json_values),
        "y": st.one_of(st.sampled_from([0, 1]), json_values),
        "labeller": json_values,
    },
)
answers = st.one_of(answer_objects.map(_encode), raw_bytes, answer_objects)

FUZZ = settings(
    max_examples=1500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _wrap(values: list[Any], topic: str = "events") -> list[RawRecord]:
    return [RawRecord(v, Origin(topic, 0, i)) for i, v in enumerate(values)]


def test_fuzzed_events_and_answers_are_each_valid_or_dead_lettered():
    dec = EventDecoder(N_FEATURES, "binary")
    seen = {"events": 0, "answers": 0}

    @FUZZ
    @given(st.lists(records, min_size=1, max_size=8), st.lists(answers, min_size=1, max_size=8))
    def check(events: list[Any], replies: list[Any]) -> None:
        batch, dead = dec.decode(_wrap(events))
        assert len(batch) + len(dead) == len(events)
        assert all(isinstance(d.reason, Reason) and d.detail for d in dead)
        assert batch.x.shape == (len(batch), N_FEATURES)
        assert np.isfinite(batch.x).all()
        assert np.isin(batch.y[~np.isnan(batch.y)], [0.0, 1.0]).all()
        assert all(math.isfinite(t) for t in batch.ts)
        got, dead_answers = dec.decode_answers(_wrap(replies, "labels"))
        assert len(got) + len(dead_answers) == len(replies)
        assert all(a.y in (0.0, 1.0) and isinstance(a.ident, str) and a.ident for a in got)
        seen["events"] += len(events)
        seen["answers"] += len(replies)

    check()
    assert seen["events"] >= 1500
    assert seen["events"] + seen["answers"] >= 10_000


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_fast_path_accepts_and_rejects_exactly_what_the_full_path_does(task):
    fast = EventDecoder(N_FEATURES, task, n_classes=3)
    full = EventDecoder(N_FEATURES, task, n_classes=3)
    object.__setattr__(full, "_fast", None)  # every record down the full path
    assert fast._fast is not None
    valid = st.fixed_dictionaries(
        {
            "id": st.text(min_size=1, max_size=300),
            "key": st.sampled_from(["a", "b"]),
            "x": st.lists(st.floats(-1e3, 1e3) | st.integers(-5, 5), min_size=8, max_size=8),
        },
        optional={
            "ts": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-9, 9),
            "y": st.sampled_from([0, 1, 2, 3, 0.5, -1, 1.0, True, None]),
            "extra": json_values,
        },
    )

    @FUZZ
    @given(st.lists(st.one_of(valid.map(_encode), records), min_size=1, max_size=8))
    def check(events: list[Any]) -> None:
        a, dead_a = fast.decode(_wrap(events))
        b, dead_b = full.decode(_wrap(events))
        assert a.ids == b.ids
        assert a.keys == b.keys
        assert a.origins == b.origins
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.ts, b.ts)
        assert [(d.reason, d.detail, d.origin) for d in dead_a] == [
            (d.reason, d.detail, d.origin) for d in dead_b
        ]

    check()


def test_fuzzed_stream_through_the_daemon_never_crashes_and_counts_add_up():
    cfg = load_config(
        overrides={
            "active": {"enabled": True, "policy": "combined", "budget": 0.5},
            "metrics": {"baseline": "none"},
            "learner": {"curvature": {"enabled": False}},
        },
        env={},
    )
    reg = CollectorRegistry()
    sink = MemorySink(capacity=1_000_000)
    daemon = Daemon(cfg, reg, source=MemorySource(iter([])), sink=sink)
    labels_topic = cfg.kafka.topics.labels
    sent = {"events": 0, "answers": 0}

    @settings(FUZZ, max_examples=300)
    @given(st.lists(records, min_size=1, max_size=10), st.lists(answers, max_size=6))
    def check(events: list[Any], replies: list[Any]) -> None:
        daemon.source = MemorySource(iter(events), topic="events")
        daemon.step(len(events))
        if replies:
            daemon.source = MemorySource(iter(replies), topic=labels_topic)
            daemon.step(len(replies))
        sent["events"] += len(events)
        sent["answers"] += len(replies)
        w, _ = daemon.learner.tables()
        assert np.isfinite(w).all()

    check()
    dead = sum(
        reg.get_sample_value("streamlearn_dead_letters_total", {"reason": r.value}) or 0.0
        for r in Reason
    )
    assert dead == sink.n_dead_letters
    valid = reg.get_sample_value("streamlearn_events_total") or 0.0
    outcomes = sum(
        reg.get_sample_value("streamlearn_label_answers_total", {"outcome": o}) or 0.0
        for o in ("ok", "late", "duplicate", "unknown", "malformed")
    )
    malformed = reg.get_sample_value("streamlearn_label_answers_total", {"outcome": "malformed"})
    repeats = reg.get_sample_value("streamlearn_duplicate_events_total") or 0.0
    # Every event is predicted, dropped as a repeat of a recent id or dead-lettered; every
    # answer has an outcome.
    assert valid + repeats + (dead - (malformed or 0.0)) == sent["events"]
    assert outcomes == sent["answers"]
    assert daemon.events_seen == sent["events"]

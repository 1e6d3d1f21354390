import base64
import math

import orjson
import pytest

from streamlearn.io.memory import records
from streamlearn.wire.messages import EventDecoder, Origin, RawRecord, Reason

GOOD = {"id": "e1", "key": "k", "ts": 1.5, "x": [1.0, 2.0, 3.0], "y": 1}


def _one(dec: EventDecoder, value):
    batch, dead = dec.decode(records([value]))
    assert len(batch) + len(dead) == 1
    return batch, dead


def _reason(dec, value) -> Reason:
    batch, dead = _one(dec, value)
    assert len(batch) == 0, "expected a dead letter"
    reason: Reason = dead[0].reason
    return reason


def test_valid_event_bytes_and_mapping():
    dec = EventDecoder(n_features=3)
    for value in (orjson.dumps(GOOD), GOOD):
        batch, dead = _one(dec, value)
        assert dead == []
        assert batch.ids == ["e1"]
        assert batch.keys == ["k"]
        assert batch.x.tolist() == [[1.0, 2.0, 3.0]]
        assert batch.y.tolist() == [1.0]
        assert batch.ts.tolist() == [1.5]


def test_unlabelled_event_has_nan_label():
    batch, _ = _one(EventDecoder(n_features=3), {**GOOD, "y": None})
    assert math.isnan(batch.y[0])
    assert batch.labelled.tolist() == [False]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", Reason.INVALID_JSON),
        (b"\xff\xfe{}", Reason.INVALID_UTF8),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (b'{"id":"1","key":"k","x":[NaN,1,2]}', Reason.NON_FINITE),
        ({"key": "k", "x": [1, 2, 3]}, Reason.MISSING_FIELD),
        ({"id": "1", "x": [1, 2, 3]}, Reason.MISSING_FIELD),
        ({"id": "1", "key": "k"}, Reason.MISSING_FIELD),
        ({"id": 1, "key": "k", "x": [1, 2, 3]}, Reason.WRONG_TYPE),
        ({"id": "1", "key": "", "x": [1, 2, 3]}, Reason.WRONG_TYPE),
        ({"id": "1", "key": "k", "x": "1,2,3"}, Reason.WRONG_TYPE),
        ({"id": "1", "key": "k", "x": [1, "2", 3]}, Reason.WRONG_TYPE),
        ({"id": "1", "key": "k", "x": [1, True, 3]}, Reason.WRONG_TYPE),
        ({"id": "1", "key": "k", "x": [1, [2], 3]}, Reason.WRONG_TYPE),
        ({"id": "1", "key": "k", "ts": "now", "x": [1, 2, 3]}, Reason.WRONG_TYPE),
        ({"id": "1", "key": "k", "x": [1, 2]}, Reason.DIMENSION_MISMATCH),
        ({"id": "1", "key": "k", "x": [1, 2, 3, 4]}, Reason.DIMENSION_MISMATCH),
        ({"id": "1", "key": "k", "x": [1, float("nan"), 3]}, Reason.NON_FINITE),
        ({"id": "1", "key": "k", "x": [1, float("inf"), 3]}, Reason.NON_FINITE),
        ({"id": "1", "key": "k", "x": [1, 1e39, 3]}, Reason.NON_FINITE),
        ({"id": "1", "key": "k", "ts": float("inf"), "x": [1, 2, 3]}, Reason.NON_FINITE),
        ({"id": "1", "key": "k", "x": [1, 2, 3], "y": 2}, Reason.INVALID_LABEL),
        ({"id": "1", "key": "k", "x": [1, 2, 3], "y": "1"}, Reason.INVALID_LABEL),
        (b"x" * 2_000_000, Reason.OVERSIZED),
    ],
)
def test_each_bad_input_gets_its_reason(value, reason):
    assert _reason(EventDecoder(n_features=3), value) == reason


def test_named_features_in_configured_order():
    dec = EventDecoder(n_features=2, feature_names=["a", "b"])
    batch, _ = _one(dec, {"id": "1", "key": "k", "x": {"b": 2.0, "a": 1.0}})
    assert batch.x.tolist() == [[1.0, 2.0]]
    assert _reason(dec, {"id": "1", "key": "k", "x": {"a": 1, "c": 2}}) == Reason.UNKNOWN_FEATURE
    assert _reason(dec, {"id": "1", "key": "k", "x": {"a": 1}}) == Reason.DIMENSION_MISMATCH
    unnamed = EventDecoder(n_features=2)
    assert _reason(unnamed, {"id": "1", "key": "k", "x": {"a": 1, "b": 2}}) == Reason.WRONG_TYPE


def test_multiclass_and_regression_labels():
    multi = EventDecoder(n_features=1, task="multiclass", n_classes=3)
    assert _one(multi, {"id": "1", "key": "k", "x": [0], "y": 2})[0].y.tolist() == [2.0]
    assert _reason(multi, {"id": "1", "key": "k", "x": [0], "y": 3}) == Reason.INVALID_LABEL
    assert _reason(multi, {"id": "1", "key": "k", "x": [0], "y": 1.5}) == Reason.INVALID_LABEL
    reg = EventDecoder(n_features=1, task="regression")
    assert _one(reg, {"id": "1", "key": "k", "x": [0], "y": -2.5})[0].y.tolist() == [-2.5]


def test_mixed_batch_loses_nothing_and_keeps_order():
    dec = EventDecoder(n_features=3)
    values: list[dict[str, object] | bytes] = [
        GOOD,
        b"oops",
        {**GOOD, "id": "e2", "x": [1, 2]},
        {**GOOD, "id": "e3"},
    ]
    batch, dead = dec.decode(records(values, topic="events"))
    assert batch.ids == ["e1", "e3"]
    assert [d.reason for d in dead] == [Reason.INVALID_JSON, Reason.DIMENSION_MISMATCH]
    assert [d.origin.offset for d in dead] == [1, 2]


def test_dead_letter_contract_carries_original_origin_and_reason():
    dec = EventDecoder(n_features=3)
    _, dead = dec.decode([RawRecord(b"{bad", Origin("events", 3, 17))])
    msg = orjson.loads(dead[0].to_json())
    assert base64.b64decode(msg["original_b64"]) == b"{bad"
    assert (msg["topic"], msg["partition"], msg["offset"]) == ("events", 3, 17)
    assert msg["reason"] == "invalid_json"
    assert msg["detail"]


def test_decoder_rejects_inconsistent_layout():
    with pytest.raises(ValueError, match="n_features must be >= 1"):
        EventDecoder(n_features=0)
    with pytest.raises(ValueError, match="feature_names has 1 names"):
        EventDecoder(n_features=2, feature_names=["a"])

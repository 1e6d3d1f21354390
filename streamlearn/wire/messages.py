"""Wire contracts (design §3) and validating decoding.

A raw record (bytes from Kafka or a file, or a mapping from an in-process source) decodes into
either a valid event or a :class:`DeadLetter` carrying the original bytes, where it came from
and a reason a person can act on. Nothing is dropped silently: :func:`decode_events` returns
every input as exactly one of the two.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import orjson

from streamlearn.wire.fast_decode import FastEventPath

Task = Literal["binary", "multiclass", "regression"]

MAX_RECORD_BYTES = 1_000_000
_NUMBER_TYPES = frozenset({int, float})
_FLOAT32_MAX = 3.4e38
MAX_ID_CHARS = 256
# A dead letter carries at most this much of the original (base64 adds a third): the whole
# record stays in its source topic at the origin's offset, and the prefix, size and SHA-256
# identify it. Bounded so that no rejected record, however large, makes an unsendable one.
DEAD_LETTER_ORIGINAL_BYTES = 64 * 1024
MAX_DETAIL_CHARS = 500


class Reason(StrEnum):
    """Bounded set of dead-letter reasons (the metric label values)."""

    OVERSIZED = "oversized"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    DIMENSION_MISMATCH = "dimension_mismatch"
    NON_FINITE = "non_finite"
    UNKNOWN_FEATURE = "unknown_feature"
    INVALID_LABEL = "invalid_label"
    # Decoding raised something no rule above names (a bug, or input beyond a parser's
    # limits): the record is dead-lettered with the error, never allowed to stop the poll.
    UNDECODABLE = "undecodable"
    # Processing raised on this record alone, in an earlier run (streamlearn.poison).
    PROCESSING_FAILED = "processing_failed"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a raw record came from (topic/partition/offset, or a file and line)."""

    topic: str
    partition: int = 0
    offset: int = -1


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One undecoded input: ``value`` is bytes (wire) or a mapping (in-process source)."""

    value: bytes | Mapping[str, Any]
    origin: Origin


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected record: the dead-letter contract of the design.

    On the wire, ``original_b64`` holds at most ``max_original`` bytes of the original
    (``original_truncated`` says whether that is all of it); ``original_size`` and
    ``original_sha256`` are always those of the whole original.

    >>> msg = orjson.loads(DeadLetter(Reason.OVERSIZED, "big", b"abcdef", Origin("t")).to_json(4))
    >>> base64.b64decode(msg["original_b64"]), msg["original_size"], msg["original_truncated"]
    (b'abcd', 6, True)
    """

    reason: Reason
    detail: str
    original: bytes
    origin: Origin

    def to_json(self, max_original: int = DEAD_LETTER_ORIGINAL_BYTES) -> bytes:
        original = self.original
        kept = original[:max_original]
        return orjson.dumps(
            {
                "reason": self.reason.value,
                "detail": bounded(self.detail),
                "original_b64": base64.b64encode(kept).decode("ascii"),
                "original_size": len(original),
                "original_sha256": hashlib.sha256(original).hexdigest(),
                "original_truncated": len(kept) < len(original),
                "topic": self.origin.topic,
                "partition": self.origin.partition,
                "offset": self.origin.offset,
            }
        )


def bounded(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` cut to ``limit`` characters (a marker says so): details quote input."""
    if len(text) <= limit:
        return text
    return text[: limit - 13] + " [truncated]"


@dataclass(slots=True)
class EventBatch:
    """Valid events of one poll, in arrival order, as arrays.

    ``y`` is NaN where the event carries no label; ``labelled`` is the mask.
    """

    ids: list[str]
    keys: list[str]
    ts: np.ndarray
    x: np.ndarray
    y: np.ndarray
    origins: list[Origin] = field(default_factory=list)

    @property
    def labelled(self) -> np.ndarray:
        mask: np.ndarray = ~np.isnan(self.y)
        return mask

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, mask: np.ndarray) -> EventBatch:
        """The events where ``mask`` is true, in order."""
        chosen = mask.nonzero()[0].tolist()
        return EventBatch(
            [self.ids[i] for i in chosen],
            [self.keys[i] for i in chosen],
            self.ts[mask],
            self.x[mask],
            self.y[mask],
            [self.origins[i] for i in chosen] if self.origins else [],
        )


@dataclass(frozen=True, slots=True)
class Prediction:
    """The prediction contract; ``partition`` (not serialised) is the input partition of the
    event, so a sink can keep each key's predictions in order without hashing the key."""

    event_id: str
    key: str
    p: float | list[float]
    model_version: int
    ts: float
    partition: int = -1

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "event_id": self.event_id,
                "key": self.key,
                "p": self.p,
                "model_version": self.model_version,
                "ts": self.ts,
            }
        )


@dataclass(frozen=True, slots=True)
class Query:
    """The query contract: an event worth a label, why, and until when an answer counts."""

    query_id: str
    event_id: str
    key: str
    x: list[float]
    score: float
    reason: str
    p: float | list[float]
    model_version: int
    expires_at: float

    def to_json(self) -> bytes:
        return orjson.dumps({f: getattr(self, f) for f in self.__slots__})

    @classmethod
    def from_json(cls, data: bytes) -> Query:
        """A query as :meth:`to_json` wrote it; ValueError when it is not one.

        >>> q = Query("q-1", "1", "k", [0.5], 0.9, "uncertainty", 0.4, 3, 100.0)
        >>> Query.from_json(q.to_json()) == q
        True
        """
        try:
            d = orjson.loads(data)
            q = cls(
                str(d["query_id"]),
                str(d["event_id"]),
                str(d["key"]),
                [float(v) for v in d["x"]],
                float(d["score"]),
                str(d["reason"]),
                [float(v) for v in d["p"]] if isinstance(d["p"], list) else float(d["p"]),
                int(d["model_version"]),
                float(d["expires_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a query: {bounded(str(exc))}") from None
        return q


@dataclass(frozen=True, slots=True)
class Answer:
    """A decoded label answer: ``ident`` is the query id, else the event id."""

    ident: str
    y: float
    labeller: str | None


class _Rejected(Exception):  # noqa: N818 - internal control flow, never escapes
    def __init__(self, reason: Reason, detail: str) -> None:
        detail = bounded(detail)  # details quote the input, which may be huge
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class EventDecoder:
    """Validates events against the configured feature layout and task.

    >>> dec = EventDecoder(n_features=2, task="binary")
    >>> batch, dead = dec.decode([RawRecord(b'{"id":"1","key":"a","ts":0,"x":[1,2],"y":1}',
    ...                                     Origin("events"))])
    >>> (len(batch), len(dead), batch.y.tolist())
    (1, 0, [1.0])
    """

    n_features: int
    task: Task = "binary"
    n_classes: int = 2
    feature_names: Sequence[str] | None = None
    max_record_bytes: int = MAX_RECORD_BYTES
    _index: dict[str, int] | None = field(init=False, repr=False, compare=False, default=None)
    _fast: FastEventPath | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {self.n_features}")
        if self.feature_names is not None and len(self.feature_names) != self.n_features:
            raise ValueError(
                f"feature_names has {len(self.feature_names)} names, n_features={self.n_features}"
            )
        object.__setattr__(
            self,
            "_index",
            {n: i for i, n in enumerate(self.feature_names)} if self.feature_names else None,
        )
        if not self.feature_names:  # named features (x as an object) take the full path
            fast = FastEventPath(self.n_features, MAX_ID_CHARS)
            object.__setattr__(self, "_fast", fast)

    def decode(self, records: Iterable[RawRecord]) -> tuple[EventBatch, list[DeadLetter]]:
        ids: list[str] = []
        keys: list[str] = []
        ts: list[float] = []
        xs: list[list[float]] = []
        ys: list[float] = []
        origins: list[Origin] = []
        dead: list[DeadLetter] = []
        raw_of: list[bytes | Mapping[str, Any]] = []
        fast, limit = self._fast, self.max_record_bytes
        for rec in records:
            value = rec.value
            try:
                eid, key, t, x, y = self._one(value, fast, limit)
            except _Rejected as rej:
                dead.append(DeadLetter(rej.reason, rej.detail, _as_bytes(value), rec.origin))
                continue
            except Exception as exc:  # one record never stops the poll (issue: poison)
                dead.append(_undecodable(exc, value, rec.origin))
                continue
            ids.append(eid)
            keys.append(key)
            ts.append(t)
            xs.append(x)
            ys.append(y)
            origins.append(rec.origin)
            raw_of.append(rec.value)
        x_arr = self._matrix(xs)
        bad = ~(np.abs(x_arr) <= _FLOAT32_MAX).all(axis=1)  # NaN, inf, or float32 overflow
        if bad.any():
            rows = np.flatnonzero(bad).tolist()
            for i in rows:
                dead.append(
                    DeadLetter(
                        Reason.NON_FINITE,
                        "a feature value is NaN, infinite or overflows float32",
                        _as_bytes(raw_of[i]),
                        origins[i],
                    )
                )
            keep = np.flatnonzero(~bad)
            x_arr = x_arr[keep]
            ids = [ids[i] for i in keep]
            keys = [keys[i] for i in keep]
            ts = [ts[i] for i in keep]
            ys = [ys[i] for i in keep]
            origins = [origins[i] for i in keep]
        batch = EventBatch(
            ids,
            keys,
            np.asarray(ts, dtype=np.float64),
            x_arr.astype(np.float32),
            np.asarray(ys, dtype=np.float32),
            origins,
        )
        return batch, dead

    def _one(
        self, value: bytes | Mapping[str, Any], fast: FastEventPath | None, limit: int
    ) -> tuple[str, str, float, list[float], float]:
        """One record's fields, or :class:`_Rejected` with the reason."""
        if fast is not None and type(value) is bytes and len(value) <= limit:
            got = fast.decode(value)
            if got is not None:
                # The label's rule is the full path's own; on a rejection the full path
                # words the reason from the record as sent. (try, not contextlib.suppress:
                # this runs per event.)
                try:
                    return got[0], got[1], got[2], got[3], self._label(got[4])
                except _Rejected:
                    pass
        return self._validate(self._parse(value))

    def decode_answers(self, records: Iterable[RawRecord]) -> tuple[list[Answer], list[DeadLetter]]:
        """Label answers (``query_id`` or ``event_id``, ``y``, optional ``labeller``), the label
        checked as an event's would be; the malformed ones as dead letters with a reason."""
        answers: list[Answer] = []
        dead: list[DeadLetter] = []
        for rec in records:
            try:
                obj = self._parse(rec.value)
                ident = obj.get("query_id", obj.get("event_id"))
                if ident is None:
                    raise _Rejected(
                        Reason.MISSING_FIELD, "answer has neither 'query_id' nor 'event_id'"
                    )
                if not isinstance(ident, str) or not ident or len(ident) > MAX_ID_CHARS:
                    raise _Rejected(Reason.WRONG_TYPE, "answer id must be a non-empty string")
                if obj.get("y") is None:
                    raise _Rejected(Reason.MISSING_FIELD, "answer has no label 'y'")
                labeller = obj.get("labeller")
                if labeller is not None and not isinstance(labeller, str):
                    raise _Rejected(Reason.WRONG_TYPE, "field 'labeller' must be a string")
                answers.append(Answer(ident, self._label(obj["y"]), labeller))
            except _Rejected as rej:
                dead.append(DeadLetter(rej.reason, rej.detail, _as_bytes(rec.value), rec.origin))
            except Exception as exc:  # one answer never stops the poll
                dead.append(_undecodable(exc, rec.value, rec.origin))
        return answers, dead

    def _matrix(self, xs: list[list[float]]) -> np.ndarray:
        if not xs:
            return np.zeros((0, self.n_features), dtype=np.float64)
        # float64 first, so that values beyond float32 are caught as overflow, not made inf.
        return np.asarray(xs, dtype=np.float64)

    def _parse(self, value: bytes | Mapping[str, Any]) -> Mapping[str, Any]:
        if isinstance(value, Mapping):
            return value
        if len(value) > self.max_record_bytes:
            raise _Rejected(
                Reason.OVERSIZED, f"record is {len(value)} bytes, limit {self.max_record_bytes}"
            )
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise _Rejected(Reason.INVALID_UTF8, "record is not valid UTF-8") from None
            if b"NaN" in value or b"Infinity" in value:
                raise _Rejected(
                    Reason.NON_FINITE, "record holds NaN or Infinity, which JSON does not allow"
                ) from None
            raise _Rejected(Reason.INVALID_JSON, f"record is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise _Rejected(
                Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}"
            )
        return obj

    def _validate(self, obj: Mapping[str, Any]) -> tuple[str, str, float, list[float], float]:
        for name in ("id", "key", "x"):
            if name not in obj:
                raise _Rejected(Reason.MISSING_FIELD, f"field {name!r} is missing")
        eid, key = obj["id"], obj["key"]
        for name, v in (("id", eid), ("key", key)):
            if not isinstance(v, str) or not v or len(v) > MAX_ID_CHARS:
                raise _Rejected(
                    Reason.WRONG_TYPE,
                    f"field {name!r} must be a non-empty string of at most "
                    f"{MAX_ID_CHARS} characters",
                )
        t = obj.get("ts", 0.0)
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise _Rejected(Reason.WRONG_TYPE, "field 'ts' must be a number (seconds)")
        if not math.isfinite(t):
            raise _Rejected(Reason.NON_FINITE, "field 'ts' is not finite")
        x = self._features(obj["x"])
        y = self._label(obj.get("y"))
        return eid, key, float(t), x, y

    def _features(self, raw: Any) -> list[float]:
        if isinstance(raw, Mapping):
            index = self._index
            if index is None:
                raise _Rejected(
                    Reason.WRONG_TYPE, "field 'x' is an object but no model.feature_names are set"
                )
            unknown = [k for k in raw if k not in index]
            if unknown:
                raise _Rejected(Reason.UNKNOWN_FEATURE, f"unknown features {sorted(unknown)[:5]}")
            if len(raw) != self.n_features:
                missing = [n for n in index if n not in raw]
                raise _Rejected(Reason.DIMENSION_MISMATCH, f"missing features {missing[:5]}")
            values = [raw[n] for n in index]
        elif isinstance(raw, list):
            if len(raw) != self.n_features:
                raise _Rejected(
                    Reason.DIMENSION_MISMATCH,
                    f"field 'x' has {len(raw)} values, expected {self.n_features}",
                )
            values = raw
        else:
            raise _Rejected(Reason.WRONG_TYPE, "field 'x' must be a list of numbers or an object")
        # One C-level pass for the types; finiteness is checked for the whole batch in numpy.
        if not _NUMBER_TYPES.issuperset(map(type, values)):
            raise _Rejected(Reason.WRONG_TYPE, "every feature value must be a number")
        return values

    def _label(self, y: Any) -> float:
        if y is None:
            return math.nan
        if self.task == "binary":
            if isinstance(y, bool) or y in (0, 1):
                return float(y)
            raise _Rejected(
                Reason.INVALID_LABEL, f"binary label must be 0/1 or a boolean, got {y!r}"
            )
        if isinstance(y, bool) or not isinstance(y, (int, float)):
            raise _Rejected(Reason.INVALID_LABEL, f"label must be a number, got {type(y).__name__}")
        if not math.isfinite(y):
            raise _Rejected(Reason.NON_FINITE, "label is NaN or infinite")
        if self.task == "multiclass" and (int(y) != y or not 0 <= y < self.n_classes):
            raise _Rejected(
                Reason.INVALID_LABEL, f"class label must be an integer in [0, {self.n_classes})"
            )
        return float(y)


def failed_record(record: RawRecord, why: str) -> DeadLetter:
    """The dead letter of a record that failed after decoding, on its own
    (``processing_failed``); ``why`` names the failure."""
    detail = bounded(f"processing failed: {why}")
    return DeadLetter(Reason.PROCESSING_FAILED, detail, _as_bytes(record.value), record.origin)


def _undecodable(exc: Exception, value: bytes | Mapping[str, Any], origin: Origin) -> DeadLetter:
    detail = bounded(f"could not be decoded: {type(exc).__name__}: {exc}")
    return DeadLetter(Reason.UNDECODABLE, detail, _as_bytes(value), origin)


def _as_bytes(value: bytes | Mapping[str, Any]) -> bytes:
    """The original as bytes: as sent, or a mapping (in-process source) as JSON."""
    if isinstance(value, bytes):
        return value
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except Exception:  # not JSON-able (or nested past orjson's limit): its text, bounded
        try:
            return bounded(repr(value), DEAD_LETTER_ORIGINAL_BYTES).encode("utf-8", "replace")
        except Exception:  # repr itself failed (a recursion, say)
            return f"<unprintable {type(value).__name__}>".encode()

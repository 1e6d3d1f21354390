"""Queries waiting for their labels: bounded, expiring, joined by query id or event id.

An answer is ``ok`` (joined: learn from it now), ``late`` (its query expired), ``duplicate``
(already answered) or ``unknown`` (never asked, or forgotten). Expired and answered ids are
remembered, up to a bound, so that late and duplicate answers are told apart from unknown
ones; none of them changes anything.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from streamlearn.wire.messages import Query

Outcome = Literal["ok", "late", "duplicate", "unknown"]


@dataclass(frozen=True)
class Pending:
    query_id: str
    event_id: str
    key: str
    x: Any  # the features as the event carried them, to learn from when the label comes
    p: Any  # the prediction made at event time: regret is charged against it
    model_version: int
    asked_at: float
    expires_at: float
    event_ts: float = 0.0  # the event's own time, kept for the batch it is learned in
    explored: bool = False  # drawn at random (an unbiased label), not for its score

    @classmethod
    def of(cls, q: Query, asked_at: float, event_ts: float) -> Pending:
        """The open query ``q``, asked at ``asked_at`` about an event of ``event_ts``."""
        return cls(
            q.query_id,
            q.event_id,
            q.key,
            q.x,
            q.p,
            q.model_version,
            asked_at,
            q.expires_at,
            event_ts,
            q.reason == "explore",
        )


class PendingQueries:
    """At most ``capacity`` open queries (the oldest is dropped as expired beyond that).

    >>> q = PendingQueries(capacity=10, remember=10)
    >>> q.add(Pending("q1", "e1", "k", [0.0], 0.5, 0, asked_at=0.0, expires_at=10.0))
    >>> q.answer("e1", now=1.0)[1], q.answer("q1", now=2.0)[1], q.answer("zz", now=2.0)[1]
    ('ok', 'duplicate', 'unknown')
    """

    def __init__(self, capacity: int, remember: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"active.max_pending must be >= 1, got {capacity}")
        self.capacity = capacity
        self._open: OrderedDict[str, Pending] = OrderedDict()  # by query id, oldest first
        self._by_event: dict[str, str] = {}
        self._closed: OrderedDict[str, Outcome] = OrderedDict()  # id -> why it is closed
        self._remember = remember
        self._by_key: dict[str, set[str]] = {}  # open query ids per key (for the hand-off)

    def __len__(self) -> int:
        return len(self._open)

    def add(self, item: Pending) -> None:
        self._open[item.query_id] = item
        self._by_event[item.event_id] = item.query_id
        self._by_key.setdefault(item.key, set()).add(item.query_id)
        while len(self._open) > self.capacity:
            _, old = self._open.popitem(last=False)
            self._unindex(old)
            self._close(old, "late")

    def _unindex(self, item: Pending) -> None:
        ids = self._by_key.get(item.key)
        if ids is not None:
            ids.discard(item.query_id)
            if not ids:
                del self._by_key[item.key]

    def _close(self, item: Pending, why: Outcome) -> None:
        self._by_event.pop(item.event_id, None)
        for i in (item.query_id, item.event_id):
            self._closed[i] = why
            self._closed.move_to_end(i)
        while len(self._closed) > self._remember:
            self._closed.popitem(last=False)

    def expire(self, now: float) -> list[Pending]:
        """Close and return the queries past their expiry, oldest first. Queries are kept in
        the order they were asked and share one lifetime, so the scan stops at the first one
        still open: called twice a poll, it must not walk every open query (thousands).
        (One asked under a longer lifetime before a restart waits behind it; an answer to
        an expired query is told late by :meth:`answer` whatever its place.)"""
        gone: list[Pending] = []
        while self._open:
            oldest = next(iter(self._open.values()))
            if oldest.expires_at > now:
                break
            del self._open[oldest.query_id]
            self._unindex(oldest)
            self._close(oldest, "late")
            gone.append(oldest)
        return gone

    def answer(self, ident: str, now: float) -> tuple[Pending | None, Outcome]:
        """Join an answer by query id or event id."""
        qid = ident if ident in self._open else self._by_event.get(ident)
        if qid is not None:
            item = self._open.pop(qid)
            self._unindex(item)
            if item.expires_at <= now:
                self._close(item, "late")
                return None, "late"
            self._close(item, "duplicate")  # a second answer to it is a duplicate
            return item, "ok"
        why = self._closed.get(ident)
        return None, why if why is not None else "unknown"

    # -- the hand-off (streamlearn.service.handoff): a key's open queries go where the key goes ----

    def of_keys(self, keys: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """The open queries of ``keys`` as plain data, oldest first."""
        out: dict[str, list[dict[str, Any]]] = {}
        for k in keys:
            ids = self._by_key.get(k)
            if ids:
                items = sorted((self._open[q] for q in ids), key=lambda p: p.asked_at)
                out[k] = [asdict(p) for p in items]
        return out

    def drop_keys(self, keys: Iterable[str]) -> int:
        """Forget the open queries of ``keys`` (another replica owns them now and gets their
        answers); not closed: an answer here would be for a key this replica lost."""
        n = 0
        for k in keys:
            for qid in self._by_key.pop(k, ()):
                item = self._open.pop(qid)
                self._by_event.pop(item.event_id, None)
                n += 1
        return n

    def receive(self, items: Iterable[Mapping[str, Any]]) -> int:
        """Open queries handed over with their keys (ones known here already are skipped)."""
        return sum(self.adopt(Pending(**d)) for d in items)

    def knows(self, query_id: str) -> bool:
        """Whether the query is open, or closed and still remembered."""
        return query_id in self._open or query_id in self._closed

    def adopt(self, item: Pending) -> bool:
        """Open ``item`` unless its query is known here already (open or closed)."""
        if self.knows(item.query_id):
            return False
        self.add(item)
        return True

    def state_dict(self) -> dict[str, object]:
        """Plain data (a checkpoint holds no pickled objects)."""
        return {
            "open": [asdict(p) for p in self._open.values()],
            "closed": list(self._closed.items()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._open.clear()
        self._by_event.clear()
        self._by_key.clear()
        self._closed = OrderedDict((str(i), why) for i, why in state["closed"])
        for item in state["open"]:
            self.add(Pending(**item))

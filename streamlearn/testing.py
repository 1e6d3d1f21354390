"""An in-process source with a labeller in the loop, for tests and benchmarks of active
learning without a broker: events come from another source; the queries the daemon gives
its :class:`~streamlearn.io.memory.MemorySink` go to an :class:`~streamlearn.active.oracle.Oracle`,
whose answers come back as records of the labels topic, as they would from Kafka.

Time can be virtual: with ``events_per_second`` the clock reads events delivered over that
rate, so that label delays and query expiry are measured in events, independent of how
fast the machine runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from streamlearn.active.oracle import Oracle
from streamlearn.io.base import Source
from streamlearn.io.memory import MemorySink
from streamlearn.io.synthetic import LabelledEvent
from streamlearn.wire.messages import Origin, RawRecord


class LoopbackSource:
    """Events from ``events``, answers from ``oracle`` to the queries ``sink`` received.

    Not run as a doctest: see ``tests/active/test_active_loop.py``.
    """

    def __init__(
        self,
        events: Source,
        sink: MemorySink,
        oracle: Oracle,
        *,
        labels_topic: str,
        events_per_second: float = 0.0,
    ) -> None:
        self.events = events
        self.sink = sink
        self.oracle = oracle
        self.labels_topic = labels_topic
        self.events_per_second = events_per_second
        self._queries_seen = 0
        self._answers = 0
        self._events = 0

    def clock(self) -> float:
        if self.events_per_second > 0:
            return self._events / self.events_per_second
        return time.time()

    def _collect_queries(self) -> None:
        new = self.sink.n_queries - self._queries_seen
        if new <= 0:
            return
        if new > len(self.sink.recent_queries):
            raise RuntimeError("the loopback sink dropped queries: raise its capacity")
        fresh = list(self.sink.recent_queries)[-new:]
        self.oracle.offer(
            ({"query_id": q.query_id, "event_id": q.event_id, "key": q.key} for q in fresh),
            self.clock(),
        )
        self._queries_seen = self.sink.n_queries

    def poll(self, max_records: int, timeout_s: float) -> list[RawRecord]:
        self._collect_queries()
        if self.events.exhausted:
            answers = [a for _, a in self.oracle.drain()]  # the stream ended: all come now
        else:
            answers = [a for _, a in self.oracle.due(self.clock())]
        out = [
            RawRecord(a, Origin(self.labels_topic, 0, self._answers + i))
            for i, a in enumerate(answers)
        ]
        self._answers += len(answers)
        events = self.events.poll(max(1, max_records - len(out)), timeout_s)
        self._events += len(events)
        return out + events

    @property
    def exhausted(self) -> bool:
        return self.events.exhausted and self.oracle.waiting == 0

    @property
    def healthy(self) -> bool:
        return self.events.healthy

    def lag(self) -> int | None:
        return None  # an in-process stream has no end to be behind

    def positions(self) -> dict[str, int]:
        return {**self.events.positions(), f"{self.labels_topic}:0": self._answers}

    def seek(self, positions: Mapping[str, int]) -> None:
        self.events.seek(positions)

    def commit(self, positions: Mapping[str, int] | None = None) -> bool:
        return self.events.commit(positions)

    def close(self) -> None:
        self.events.close()


def recording_truth(
    stream: Iterator[LabelledEvent], truth: dict[str, float]
) -> Iterator[LabelledEvent]:
    """Pass ``stream`` through, noting each unlabelled event's withheld label in ``truth``
    (what ``streamlearn simulate --truth`` writes to a file)."""
    for item in stream:
        if "y" not in item.event:
            truth[str(item.event["id"])] = float(item.y_true)
        yield item

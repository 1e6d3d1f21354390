"""The embedded bus: an in-process source over any iterator of event mappings, and a sink
that keeps the most recent outputs in bounded memory."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from streamlearn.io.synthetic import LabelledEvent
from streamlearn.wire.messages import DeadLetter, Origin, Prediction, Query, RawRecord

LINGER_S = 0.05


class MemorySource:
    """Feeds events from an iterator, optionally at a capped rate (events per second).

    >>> src = MemorySource(iter([{"id": "1", "key": "a", "x": [0.0]}]), topic="demo")
    >>> [r.origin.offset for r in src.poll(10, 0.1)], src.exhausted
    ([0], True)
    """

    def __init__(
        self,
        events: Iterator[Mapping[str, Any] | LabelledEvent | bytes],
        *,
        topic: str = "embedded",
        rate: float = 0.0,
    ) -> None:
        if rate < 0:
            raise ValueError(f"rate must be >= 0 events/s, got {rate}")
        self._events = events
        self._topic = topic
        self._rate = rate
        self._offset = 0
        self._exhausted = False
        self._started = time.monotonic()

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def poll(self, max_records: int, timeout_s: float) -> list[RawRecord]:
        n = max_records
        if self._rate > 0:
            # Like a Kafka fetch: wait (at most LINGER_S or the timeout) for a fuller batch.
            due = self._due()
            if due < max_records:
                wait = min(timeout_s, LINGER_S, (max_records - due) / self._rate)
                time.sleep(max(wait, 0.0))
                due = self._due()
            n = max(0, min(n, due))
        out: list[RawRecord] = []
        for _ in range(n):
            try:
                item = next(self._events)
            except StopIteration:
                self._exhausted = True
                break
            value = item.event if isinstance(item, LabelledEvent) else item
            out.append(RawRecord(value, Origin(self._topic, 0, self._offset)))
            self._offset += 1
        return out

    def _due(self) -> int:
        return int((time.monotonic() - self._started) * self._rate) - self._offset

    @property
    def healthy(self) -> bool:
        return True

    def lag(self) -> int | None:
        return None  # an in-process stream has no end to be behind

    def positions(self) -> dict[str, int]:
        return {f"{self._topic}:0": self._offset}

    def seek(self, positions: Mapping[str, int]) -> None:
        """Skip ahead to a checkpoint's position (the stream is regenerated, not stored)."""
        target = positions.get(f"{self._topic}:0", 0)
        if target < self._offset:
            raise ValueError(f"cannot seek back from {self._offset} to {target}")
        skipped = sum(1 for _ in itertools.islice(self._events, target - self._offset))
        self._offset += skipped
        self._started = time.monotonic() - (self._offset / self._rate if self._rate else 0.0)

    def commit(self, positions: Mapping[str, int] | None = None) -> bool:
        return True

    def close(self) -> None:
        return None


class MemorySink:
    """Keeps the last ``capacity`` predictions, dead letters and queries (for the embedded
    default and tests); counts everything it was given."""

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.recent_predictions: deque[Prediction] = deque(maxlen=capacity)
        self.recent_dead_letters: deque[DeadLetter] = deque(maxlen=capacity)
        self.recent_queries: deque[Query] = deque(maxlen=capacity)
        self.n_predictions = 0
        self.n_dead_letters = 0
        self.n_queries = 0

    @property
    def lost(self) -> str | None:
        return None

    def predictions(self, items: Sequence[Prediction]) -> None:
        self.recent_predictions.extend(items)
        self.n_predictions += len(items)

    def dead_letters(self, items: Sequence[DeadLetter]) -> None:
        self.recent_dead_letters.extend(items)
        self.n_dead_letters += len(items)

    def queries(self, items: Sequence[Query]) -> None:
        self.recent_queries.extend(items)
        self.n_queries += len(items)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def records(values: Iterable[Mapping[str, Any] | bytes], topic: str = "test") -> list[RawRecord]:
    """Wrap values as raw records with consecutive offsets (handy in tests and tools)."""
    return [RawRecord(v, Origin(topic, 0, i)) for i, v in enumerate(values)]

"""The two I/O interfaces every transport implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from streamlearn.messages import DeadLetter, Prediction, RawRecord


@runtime_checkable
class Source(Protocol):
    """Where events come from. ``poll`` returns at most ``max_records`` raw records.

    An empty list with ``exhausted`` true means the source has ended (finite replays);
    ``commit`` acknowledges everything returned so far (a no-op in process).
    """

    def poll(self, max_records: int, timeout_s: float) -> list[RawRecord]: ...

    @property
    def exhausted(self) -> bool: ...

    def commit(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where the daemon's outputs go."""

    def predictions(self, items: Sequence[Prediction]) -> None: ...

    def dead_letters(self, items: Sequence[DeadLetter]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class NullSink:
    """Discards predictions; dead letters are still counted by the daemon's metrics."""

    def predictions(self, items: Sequence[Prediction]) -> None:
        return None

    def dead_letters(self, items: Sequence[DeadLetter]) -> None:
        return None

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

"""The two I/O interfaces every transport implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from streamlearn.wire.messages import DeadLetter, Prediction, Query, RawRecord


@runtime_checkable
class Source(Protocol):
    """Where events come from. ``poll`` returns at most ``max_records`` raw records.

    An empty list with ``exhausted`` true means the source has ended (finite replays).
    ``positions`` is the next offset per ``"topic:partition"`` of everything returned so far;
    ``seek`` resumes from positions a checkpoint saved; ``commit`` acknowledges positions
    (only ever called after a checkpoint that covers them) and says whether it succeeded.
    """

    def poll(self, max_records: int, timeout_s: float) -> list[RawRecord]: ...

    @property
    def exhausted(self) -> bool: ...

    @property
    def healthy(self) -> bool: ...

    def positions(self) -> dict[str, int]: ...

    def lag(self) -> int | None:
        """Records behind the end of the input (None: not known for this source)."""
        ...

    def seek(self, positions: Mapping[str, int]) -> None: ...

    def commit(self, positions: Mapping[str, int] | None = None) -> bool: ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where the daemon's outputs go. ``lost`` says why an output was not delivered (None
    while every one was): the daemon then stops without committing past it."""

    @property
    def lost(self) -> str | None: ...

    def predictions(self, items: Sequence[Prediction]) -> None: ...

    def dead_letters(self, items: Sequence[DeadLetter]) -> None: ...

    def queries(self, items: Sequence[Query]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class NullSink:
    """Discards every output; dead letters and queries are still counted by the daemon's
    metrics."""

    @property
    def lost(self) -> str | None:
        return None

    def predictions(self, items: Sequence[Prediction]) -> None:
        return None

    def dead_letters(self, items: Sequence[DeadLetter]) -> None:
        return None

    def queries(self, items: Sequence[Query]) -> None:
        return None

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

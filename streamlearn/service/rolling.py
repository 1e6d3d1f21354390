"""A rolling mean over the last values of a stream: the daemon's recent loss and quality."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable


class RollingMean:
    """Mean of the last ``window`` values (O(1) per value).

    >>> r = RollingMean(2); r.extend([1.0, 2.0, 4.0]); r.value
    3.0
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._values: deque[float] = deque(maxlen=window)
        self._window = window
        self._sum = 0.0

    def extend(self, values: Iterable[float]) -> None:
        # A poll's values at once (one value at a time in Python cost ~1 ms per 500-event
        # poll): the sum loses the values pushed out and gains the new ones.
        vals, window = self._values, self._window
        new = list(values)
        if len(new) >= window:
            vals.clear()
            vals.extend(new[-window:])
            self._sum = sum(vals)
            return
        if (out := len(vals) + len(new) - window) > 0:
            self._sum -= sum(itertools.islice(vals, out))
        vals.extend(new)
        self._sum += sum(new)

    @property
    def value(self) -> float:
        return self._sum / len(self._values) if self._values else float("nan")

    def __len__(self) -> int:
        return len(self._values)

"""Entity keys to table rows, and the rounds a poll's events are processed in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class KeyTable:
    """Maps entity keys to rows of the per-key tables, in order of first sight.

    >>> table = KeyTable()
    >>> rows, new = table.slots_for(["b", "a", "b"])
    >>> rows.tolist(), new, table.names()
    ([0, 1, 0], ['b', 'a'], ['b', 'a'])
    """

    def __init__(self) -> None:
        self._slots: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, key: str) -> int | None:
        return self._slots.get(key)

    def slots_for(self, keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Row of every key, adding rows for unseen keys; returns the new keys too."""
        table = self._slots
        new: list[str] = []
        out = np.empty(len(keys), dtype=np.int64)
        for i, k in enumerate(keys):
            s = table.get(k)
            if s is None:
                s = table[k] = len(table)
                new.append(k)
            out[i] = s
        return out, new

    def names(self) -> list[str]:
        return list(self._slots)


def rounds(slots: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Order of events by (occurrence within key, arrival) and the size of each round."""
    seen: dict[int, int] = {}
    occ = np.empty(len(slots), dtype=np.int64)
    for i, s in enumerate(slots.tolist()):
        occ[i] = seen.get(s, 0)
        seen[s] = occ[i] + 1
    order = np.argsort(occ, kind="stable")
    return order, np.bincount(occ).tolist() if len(occ) else []

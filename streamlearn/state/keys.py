"""Entity keys to table rows, and the rounds a poll's events are processed in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class KeyTable:
    """Maps entity keys to rows of the per-key tables. Rows of removed keys (evicted, see
    :mod:`streamlearn.state.residency`) are handed to the next new keys, so the tables stay as
    large as the most keys ever resident at once.

    >>> table = KeyTable()
    >>> rows, new = table.slots_for(["b", "a", "b"])
    >>> rows.tolist(), new, table.names()
    ([0, 1, 0], ['b', 'a'], ['b', 'a'])
    >>> table.remove(["b"]).tolist(), table.slots_for(["c"])[0].tolist(), table.high_water
    ([0], [0], 2)
    """

    def __init__(self) -> None:
        self._slots: dict[str, int] = {}
        self._free: list[int] = []
        self.high_water = 0  # rows ever handed out: live rows are all below it

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, key: str) -> int | None:
        return self._slots.get(key)

    def slots_for(self, keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Row of every key, adding rows for unseen keys; returns the new keys too."""
        table, free = self._slots, self._free
        new: list[str] = []
        out = np.empty(len(keys), dtype=np.int64)
        for i, k in enumerate(keys):
            s = table.get(k)
            if s is None:
                if free:
                    s = free.pop()
                else:
                    s = self.high_water
                    self.high_water += 1
                table[k] = s
                new.append(k)
            out[i] = s
        return out, new

    def remove(self, keys: Sequence[str]) -> np.ndarray:
        """Forget ``keys`` (all must be present); returns the rows they held."""
        rows = np.fromiter((self._slots.pop(k) for k in keys), dtype=np.int64, count=len(keys))
        self._free.extend(rows.tolist())
        return rows

    def names(self) -> list[str]:
        return list(self._slots)

    def free_rows(self) -> list[int]:
        """Rows given up by removed keys, in the order they will be handed out again (last
        first)."""
        return list(self._free)

    @classmethod
    def restore(cls, names: Sequence[str], slots: np.ndarray, free: Sequence[int]) -> KeyTable:
        """The table :meth:`names`, :meth:`live_slots` and :meth:`free_rows` described."""
        table = cls()
        table._slots = dict(zip(names, slots.tolist(), strict=True))
        table._free = list(free)
        table.high_water = max([*table._slots.values(), *table._free], default=-1) + 1
        return table

    def live_slots(self) -> np.ndarray:
        """Rows of :meth:`names`, in the same order."""
        return np.fromiter(self._slots.values(), dtype=np.int64, count=len(self._slots))


def rounds(slots: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Order of events by (occurrence within key, arrival) and the size of each round."""
    seen: dict[int, int] = {}
    occ = np.empty(len(slots), dtype=np.int64)
    for i, s in enumerate(slots.tolist()):
        occ[i] = seen.get(s, 0)
        seen[s] = occ[i] + 1
    order = np.argsort(occ, kind="stable")
    return order, np.bincount(occ).tolist() if len(occ) else []

"""A ring of the most recent labelled events, for decisions that look back a little: which
start a drift reset takes, and the window the curvature is measured on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class RecentLabels:
    """The last ``window`` labelled events: standardised features, labels and a tag each
    (the key, or its table row).

    >>> ring = RecentLabels(window=3, n_features=1)
    >>> ring.add(["a", "b", "a", "c"], np.arange(4.0)[:, None], np.ones(4))
    >>> ring.rows()[0][:, 0].tolist(), ring.rows("a")[0][:, 0].tolist()
    ([1.0, 2.0, 3.0], [2.0])
    """

    def __init__(self, window: int, n_features: int) -> None:
        self.x = np.zeros((window, n_features), dtype=np.float32)
        self.y = np.zeros(window, dtype=np.float32)
        self.keys = np.empty(window, dtype=object)
        self._next = 0
        self._filled = 0

    def add(self, keys: Sequence[object], x: np.ndarray, y: np.ndarray) -> None:
        w = len(self.y)
        keys_a = np.asarray(keys, dtype=object)[-w:]
        x, y = x[-w:], y[-w:]
        idx = (self._next + np.arange(len(y))) % w
        self.x[idx], self.y[idx], self.keys[idx] = x, y, keys_a
        self._next = (self._next + len(y)) % w
        self._filled = min(w, self._filled + len(y))

    def tags(self) -> np.ndarray:
        """The rows' tags, oldest first."""
        w = len(self.y)
        return self.keys[(self._next - self._filled + np.arange(self._filled)) % w]

    def rows(self, key: object | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Oldest first; only ``key``'s when given."""
        w = len(self.y)
        order = (self._next - self._filled + np.arange(self._filled)) % w
        if key is not None:
            order = order[self.keys[order] == key]
        return self.x[order], self.y[order]

    def forget(self, tags: np.ndarray | Sequence[object]) -> None:
        """Drop the rows of these tags (keys evicted, their rows about to be reused)."""
        w = len(self.y)
        order = (self._next - self._filled + np.arange(self._filled)) % w
        gone = set(np.asarray(tags, dtype=object).tolist())
        keep = order[[t not in gone for t in self.keys[order].tolist()]]
        if len(keep) == self._filled:
            return
        n = len(keep)
        self.x[:n], self.y[:n], self.keys[:n] = self.x[keep], self.y[keep], self.keys[keep]
        self.keys[n:] = None
        self._next, self._filled = n % w, n

    def state_dict(self) -> dict[str, object]:
        """Plain data and tensors (tags are keys or key rows: strings or ints)."""
        return {
            "x": torch.from_numpy(self.x.copy()),
            "y": torch.from_numpy(self.y.copy()),
            "tags": [t if t is None or isinstance(t, str) else int(t) for t in self.keys.tolist()],
            "next": self._next,
            "filled": self._filled,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        x = state["x"].numpy()
        if x.shape != self.x.shape:
            raise ValueError(f"recent-label ring of shape {x.shape}, this one is {self.x.shape}")
        self.x[:], self.y[:] = x, state["y"].numpy()
        tags = list(state["tags"])
        if len(tags) != len(self.y):
            raise ValueError(f"recent-label ring of {len(tags)} tags, this one holds {len(self.y)}")
        self.keys[:] = np.asarray(tags, dtype=object)
        self._next, self._filled = int(state["next"]), int(state["filled"])

"""Drift resets: which start a key goes back to, chosen on the most recent labels.

With a meta-init pool installed (:mod:`streamlearn.meta.pool`), a reset picks the start
(theta0 or a pool member) with the lowest loss on recent labelled events: for a global drift
the last ``drift.select_window`` labels of every key, for one key's drift that key's own among
them (theta0 when it has fewer than ``drift.select_min_labels``). The detector fires after
the new concept has produced errors, so most of those labels are already from it. Without a
pool every reset goes to theta0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from streamlearn.config import DriftConfig
from streamlearn.learner import OnlineLearner
from streamlearn.meta.pool import choose_member


class RecentLabels:
    """The last ``window`` labelled events: standardised features, labels and keys.

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

    def add(self, keys: Sequence[str], x: np.ndarray, y: np.ndarray) -> None:
        w = len(self.y)
        keys_a = np.asarray(keys, dtype=object)[-w:]
        x, y = x[-w:], y[-w:]
        idx = (self._next + np.arange(len(y))) % w
        self.x[idx], self.y[idx], self.keys[idx] = x, y, keys_a
        self._next = (self._next + len(y)) % w
        self._filled = min(w, self._filled + len(y))

    def rows(self, key: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Oldest first; only ``key``'s when given."""
        w = len(self.y)
        order = (self._next - self._filled + np.arange(self._filled)) % w
        if key is not None:
            order = order[self.keys[order] == key]
        return self.x[order], self.y[order]


class Resetter:
    """Resets keys after drift to the start that fits their recent labels best.

    Not run as a doctest (it needs a learner with a pool): see ``tests/test_meta_pool.py``.
    """

    def __init__(self, learner: OnlineLearner, cfg: DriftConfig) -> None:
        self.learner = learner
        self.min_labels = cfg.select_min_labels
        self.recent = RecentLabels(cfg.select_window, learner.spec.n_features)

    @property
    def active(self) -> bool:
        return len(self.learner.starts) > 1

    def observe(self, keys: Sequence[str], x: np.ndarray, y: np.ndarray) -> None:
        if self.active and len(keys):
            self.recent.add(keys, x, y)

    def _choose(self, key: str | None) -> int:
        x, y = self.recent.rows(key)
        if len(y) < self.min_labels:
            return 0
        return choose_member(self.learner.spec, self.learner.starts, x, y)

    def reset_all(self) -> dict[int, int]:
        """Every key to the start chosen on all recent labels; ``{start: keys}``."""
        start = self._choose(None) if self.active else 0
        return {start: self.learner.reset_all(start)}

    def reset(self, keys: Iterable[str]) -> dict[int, int]:
        """Each key to the start chosen on its own recent labels; ``{start: keys}``."""
        by_start: dict[int, list[str]] = {}
        for k in keys:
            by_start.setdefault(self._choose(k) if self.active else 0, []).append(k)
        return {s: self.learner.reset(ks, s) for s, ks in by_start.items()}

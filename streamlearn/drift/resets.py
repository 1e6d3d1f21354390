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
from typing import Any

import numpy as np

from streamlearn.config import DriftConfig
from streamlearn.learning.learner import OnlineLearner
from streamlearn.meta.pool import choose_member
from streamlearn.state.recent import RecentLabels


class Resetter:
    """Resets keys after drift to the start that fits their recent labels best.

    Not run as a doctest (it needs a learner with a pool): see ``tests/meta/test_meta_pool.py``.
    """

    def __init__(self, learner: OnlineLearner, cfg: DriftConfig) -> None:
        self.learner = learner
        self.min_labels = cfg.select_min_labels
        self.recent = RecentLabels(cfg.select_window, learner.spec.n_features)

    @property
    def active(self) -> bool:
        return len(self.learner.starts) > 1

    def remember(self, keys: Sequence[str], x: np.ndarray, y: np.ndarray) -> None:
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

    def state_dict(self) -> dict[str, object]:
        return {"recent": self.recent.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent.load_state_dict(state["recent"])

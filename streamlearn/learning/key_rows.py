"""The learner's key rows coming and going: admission of a poll's keys (fresh from theta0,
or brought back from the spill store, evicting others first when the residency bound is
reached) and the hand-off's calls (a key's state out as a spill row, in from another
replica, dropped when its partition moves away). A base of
:class:`~streamlearn.learning.learner.OnlineLearner`, kept apart so the learner module holds the
learning rule."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from streamlearn.learning.shared import SharedWeights
from streamlearn.optim.stepsize import StepSizer
from streamlearn.state.keys import KeyTable
from streamlearn.state.residency import Residency, RowView
from streamlearn.state.spill import SpilledKey


class KeyRows:
    """Row admission and hand-off for :class:`~streamlearn.learning.learner.OnlineLearner` (which
    sets every attribute below; see its docstring for an example)."""

    keys: KeyTable
    residency: Residency | None
    shared: SharedWeights | None
    sizer: StepSizer
    freed_rows: list[np.ndarray] | None
    _theta0: np.ndarray
    _params: np.ndarray
    _accum: np.ndarray
    _start_of: np.ndarray
    _pool: np.ndarray
    _direction: np.ndarray | None

    slots_of: Callable[[Sequence[str]], np.ndarray]
    _ensure_capacity: Callable[[int], None]
    _reset_slots: Callable[[np.ndarray, int], None]

    def _admit(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of ``keys``, making rows for unseen ones: fresh from theta0, or, for keys
        spilled earlier, their spilled state (evicting others first when full)."""
        res = self.residency
        if res is not None:
            res.begin_poll()
            # Only near the bound can this poll's new keys need room: then mark its known
            # keys used (so they are not evicted) and count the new ones.
            if len(self.keys) + len(keys) > res.max_keys:
                known = self.slots_of(keys)
                res.touch(known[known >= 0])
                unseen = len({k for k, s in zip(keys, known.tolist(), strict=True) if s < 0})
                if unseen and (over := len(self.keys) + unseen - res.max_keys) > 0:
                    self._evict(over)
        slots, new = self.keys.slots_for(keys)
        self._ensure_capacity(self.keys.high_water)
        if new:
            new_slots = self.slots_of(new)
            self._reset_slots(new_slots, 0)
            if res is not None:
                self._bring_back(res, new, new_slots)
        if res is not None:
            res.touch(slots)
        return slots

    def _evict(self, needed: int) -> None:
        assert self.residency is not None
        base = self._theta0 if self.shared is not None else None
        freed = self.residency.evict(self.keys, needed, self._row_view(), base)
        if freed is not None:
            self._forget_rows(freed)

    def key_rows(self, keys: Sequence[str]) -> list[SpilledKey]:
        """The state of ``keys`` (resident or spilled) as spill rows; unknown keys skipped."""
        assert self.residency is not None
        base = self._theta0 if self.shared is not None else None
        return self.residency.rows_of(self.keys, keys, self._row_view(), base)

    def drop_keys(self, keys: Sequence[str]) -> None:
        """Forget ``keys`` here (memory and spill store): another replica owns them now."""
        assert self.residency is not None
        freed = self.residency.drop(self.keys, keys)
        if len(freed):
            self._forget_rows(freed)

    def receive_keys(self, rows: Sequence[SpilledKey]) -> None:
        """State handed over by another replica; each key comes back on its next event."""
        assert self.residency is not None
        self.residency.receive(rows)

    def _forget_rows(self, freed: np.ndarray) -> None:
        if self._direction is not None:
            self._direction[freed] = 0.0
        if self.sizer.watch is not None:
            self.sizer.watch.recent.forget(freed)
        if self.freed_rows is not None:
            self.freed_rows.append(freed)

    def _bring_back(self, res: Residency, keys: list[str], slots: np.ndarray) -> None:
        view = self._row_view()
        res.bring_back(keys, slots, view, self._theta0, len(self._pool), self._reset_slots)

    def _row_view(self) -> RowView:
        return RowView(self._params, self._accum, self._start_of)

    def track_freed_rows(self) -> None:
        """Keep the rows freed by evictions and hand-offs for :meth:`take_freed_rows` (for
        row-indexed state held elsewhere: the lambda watch's)."""
        if self.freed_rows is None:
            self.freed_rows = []

    def take_freed_rows(self) -> np.ndarray:
        """The rows freed since the last call (before new keys could take them, what was
        kept under them must be forgotten)."""
        if not self.freed_rows:
            return np.zeros(0, dtype=np.int64)
        out = np.concatenate(self.freed_rows)
        self.freed_rows = []
        return out

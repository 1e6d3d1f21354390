"""A bounded window of recent event ids: a producer's duplicate is learned once.

Producers deliver at least once, so an event can arrive twice (a retried send, a replayed
file). Learning it twice counts its label twice and moves the key's model twice as far. The
daemon keeps the last ``size`` distinct ids it processed and drops a repeat before it is
predicted or learned. The window is part of the checkpoint, so a restart that replays from
a checkpoint drops nothing it should process and processes no repeat it saw before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from streamlearn.state.checkpoint import from_json_tensor, json_tensor


class RecentIds:
    """The last ``size`` distinct ids, oldest first out.

    >>> seen = RecentIds(2)
    >>> batch = ["a", "b", "a"]
    >>> seen.fresh(batch).tolist()
    [True, True, False]
    >>> seen.remember(batch)
    >>> seen.fresh(["c", "a"]).tolist()
    [True, False]
    >>> seen.remember(["c", "a"])  # the window is now c, a: "b" fell out
    >>> seen.fresh(["b", "a"]).tolist()
    [True, False]
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"source.dedup_window = {size}: must be >= 1 (0 turns it off)")
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def fresh(self, ids: Sequence[str]) -> np.ndarray:
        """A mask of the ids not in the window and not repeated earlier in ``ids``."""
        window = self._ids
        mask = np.ones(len(ids), dtype=bool)
        earlier: set[str] = set()
        for i, eid in enumerate(ids):
            if eid in window or eid in earlier:
                mask[i] = False
            earlier.add(eid)
        return mask

    def remember(self, ids: Sequence[str]) -> None:
        """Add ``ids`` once they were processed (a repeat moves to the newest end)."""
        window = self._ids
        for eid in ids:
            window[eid] = None
            window.move_to_end(eid)
        while len(window) > self.size:
            window.popitem(last=False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"ids": json_tensor(list(self._ids))}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        ids = [str(i) for i in from_json_tensor(state["ids"])][-self.size :]
        self._ids = OrderedDict.fromkeys(ids)

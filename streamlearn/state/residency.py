"""Bounded key state: at most ``learner.max_keys`` keys in memory; the least recently used
are spilled to a :class:`~streamlearn.state.spill.SpillStore` and brought back on their next event.

Evictions come in chunks (a sixteenth of ``max_keys`` at least), so the cost of choosing
them (one partial sort of the last-use ticks) is paid rarely. Keys of the poll being
processed are never evicted. What a spilled key cannot keep: its last AdaGrad direction
(one rate-hypergradient step) and its rows in the curvature and lambda windows; what it
cannot see while away is replayed on its return from epochs:

- ``epoch`` counts resets of every key (a global drift with ``reset_all``): a key spilled
  before one comes back reset too, to the start that reset took, with no drift history;
- ``pool_generation`` counts meta-init pools installed: a key spilled under another pool
  comes back anchored to theta0, as resident keys were when the pool changed;
- with a shared model, a key is spilled as its offset from the shared weights and comes
  back as the shared weights of its return plus that offset (resident keys moved with the
  shared weights meanwhile).
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamlearn.state.keys import KeyTable
from streamlearn.state.spill import SpilledKey, SpillStore

log = logging.getLogger("streamlearn.state.residency")

SPILL_FILE = "spill.sqlite3"


class KeyStateHolder(Protocol):
    """A component with per-key state that follows a key out to the spill store and back."""

    name: str

    def export_keys(self, keys: Sequence[str]) -> dict[str, Any]:
        """JSON-able state of those of ``keys`` it holds state for (unchanged)."""
        ...

    def drop_keys(self, keys: Sequence[str]) -> None: ...

    def import_keys(self, states: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class RowView:
    """The learner's per-key tables (views, written in place)."""

    params: np.ndarray
    accum: np.ndarray
    start_of: np.ndarray


class Residency:
    """Which keys stay in memory, and the spill store for the rest.

    >>> res = Residency(max_keys=4, store=None)
    >>> res.begin_poll(); res.touch(np.arange(4))
    >>> res.begin_poll(); res.touch(np.array([0, 2]))
    >>> res.victims(np.arange(4), 2).tolist()  # rows 1 and 3 were used longest ago
    [1, 3]
    """

    def __init__(self, max_keys: int, store: SpillStore | None, chunk: int | None = None) -> None:
        if max_keys < 1:
            raise ValueError(f"learner.max_keys must be >= 1 to evict, got {max_keys}")
        self.max_keys = max_keys
        self.store = store
        self.chunk = chunk if chunk is not None else max(1, max_keys // 16)
        self.holders: list[KeyStateHolder] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.generation = 1  # the checkpoint that will cover rows written now
        self.epoch = 0
        self.epoch_start = 0
        self.pool_generation = 0
        self.evicted = 0  # since the process started
        self.restored = 0
        self._counted = (0, 0)
        self._write_error: str | None = None
        self._read_error: str | None = None
        self._spilled_any = False
        self._tick = 0
        self._last_used = np.zeros(64, dtype=np.int64)

    @property
    def error(self) -> str | None:
        """Why the last spill or restore failed (None once one works again)."""
        return self._write_error or self._read_error

    @classmethod
    def open(cls, max_keys: int, directory: str) -> Residency:
        """Spill beside the checkpoints in ``directory``; with none, to a temporary folder
        removed at :meth:`close` (a restart then cannot bring spilled keys back)."""
        tmp = None if directory else tempfile.TemporaryDirectory(prefix="streamlearn-spill-")
        where = Path(directory or tmp.name)  # type: ignore[union-attr]
        res = cls(max_keys, SpillStore(where / SPILL_FILE))
        res._tmp = tmp
        return res

    # -- last use --------------------------------------------------------------------------

    def begin_poll(self) -> None:
        self._tick += 1

    def touch(self, slots: np.ndarray, ticks: np.ndarray | None = None) -> None:
        """Mark rows used in this poll (or at ``ticks``, restoring a checkpoint)."""
        if len(slots) and int(slots.max()) >= len(self._last_used):
            grown = np.zeros(max(2 * len(self._last_used), int(slots.max()) + 1), np.int64)
            grown[: len(self._last_used)] = self._last_used
            self._last_used = grown
        self._last_used[slots] = self._tick if ticks is None else ticks

    def last_used(self, slots: np.ndarray) -> np.ndarray:
        out = np.zeros(len(slots), dtype=np.int64)  # rows past the end were never touched
        inside = slots < len(self._last_used)
        out[inside] = self._last_used[slots[inside]]
        return out

    def victims(self, live: np.ndarray, needed: int) -> np.ndarray:
        """Positions in ``live`` (resident rows) of the least recently used keys to evict:
        ``needed`` or a chunk, whichever is more, never one used in the current poll."""
        last = self._last_used[live] if len(live) else np.zeros(0, np.int64)
        evictable = np.flatnonzero(last < self._tick)
        n = min(len(evictable), max(needed, self.chunk))
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        pick = np.argpartition(last[evictable], n - 1)[:n] if n < len(evictable) else slice(None)
        return np.sort(evictable[pick])

    # -- moving keys out and back ------------------------------------------------------------

    def evict(
        self, keys: KeyTable, needed: int, tables: RowView, base: np.ndarray | None
    ) -> np.ndarray | None:
        """Spill and forget the least recently used keys (``needed`` at least, a chunk
        usually); their weights are spilled relative to ``base`` (the shared weights) when
        given. Returns the freed rows, None when nothing was evicted."""
        live = keys.live_slots()
        pos = self.victims(live, needed)
        if not len(pos):
            return None
        names = keys.names()
        spilled = self._rows([names[i] for i in pos.tolist()], live[pos], tables, base)
        if not self.spill(spilled):
            return None
        return keys.remove([s.key for s in spilled])

    def _rows(
        self, names: Sequence[str], rows: np.ndarray, tables: RowView, base: np.ndarray | None
    ) -> list[SpilledKey]:
        """Spill rows of resident keys ``names`` at table ``rows`` (holders' states apart)."""
        params = tables.params[rows] - (base if base is not None else 0.0)
        info = {"epoch": self.epoch, "pool": self.pool_generation, "offset": base is not None}
        return [
            SpilledKey(name, params[j], tables.accum[r].copy(), {**info, "start": int(start)})
            for j, (name, r, start) in enumerate(
                zip(names, rows.tolist(), tables.start_of[rows].tolist(), strict=True)
            )
        ]

    def _with_holders(self, rows: list[SpilledKey]) -> list[SpilledKey]:
        """``rows`` with every holder's state of their keys in ``info["holders"]``."""
        keys = [r.key for r in rows]
        states = {h.name: h.export_keys(keys) for h in self.holders}
        for r in rows:
            r.info["holders"] = {n: st[r.key] for n, st in states.items() if r.key in st}
        return rows

    # -- hand-off to and from other replicas (streamlearn.service.handoff) -------------------------

    def rows_of(
        self, keys: KeyTable, names: Sequence[str], tables: RowView, base: np.ndarray | None
    ) -> list[SpilledKey]:
        """The state of ``names``, resident or spilled, holders' states included."""
        slots = [keys.get(n) for n in names]
        here = [n for n, s in zip(names, slots, strict=True) if s is not None]
        rows = np.array([s for s in slots if s is not None], dtype=np.int64)
        out = self._with_holders(self._rows(here, rows, tables, base))
        away = [n for n, s in zip(names, slots, strict=True) if s is None]
        if away and self.store is not None and self._spilled_any:
            found = self.store.get(away)
            out += [found[n] for n in away if n in found]
        return out

    def drop(self, keys: KeyTable, names: Sequence[str]) -> np.ndarray:
        """Forget ``names`` in memory (rows freed, returned) and in the spill store."""
        here = [n for n in names if keys.get(n) is not None]
        for h in self.holders:
            h.drop_keys(here)
        if self.store is not None and self._spilled_any and names:
            self.store.delete(names)
        return keys.remove(here) if here else np.zeros(0, dtype=np.int64)

    def receive(self, rows: Sequence[SpilledKey]) -> None:
        """Another replica's key state, into the spill store as if spilled here now (resets
        and pools of that replica's past are not this one's: taken as current)."""
        if not rows or self.store is None:
            return
        for r in rows:
            r.info.update(epoch=self.epoch, pool=self.pool_generation)
        self.store.put(self.generation, rows)
        self._spilled_any = True

    def bring_back(
        self,
        keys: list[str],
        slots: np.ndarray,
        tables: RowView,
        theta0: np.ndarray,
        n_pool: int,
        reset: Callable[[np.ndarray, int], None],
    ) -> None:
        """Fill the rows of newly admitted ``keys`` that were spilled (the rest are left as
        they are: fresh from theta0). ``reset(rows, start)`` resets rows as the learner does."""
        found = self.fetch(keys)
        fresh: set[str] = set()
        p = len(theta0)
        for key, slot in zip(keys, slots.tolist(), strict=True):
            got = found.get(key)
            if got is None:
                continue
            info = got.info
            if got.params.shape != (p,) or got.accum.shape != (p,):
                found.pop(key)  # spilled under another model layout: starts afresh
                continue
            if info["epoch"] != self.epoch:  # every key was reset while it was away
                fresh.add(key)
                reset(np.array([slot]), self.epoch_start)
                if self.epoch_start:  # a pool start keeps the AdaGrad state (as resident keys)
                    tables.accum[slot] = got.accum
                continue
            tables.params[slot] = got.params + (theta0 if info["offset"] else 0.0)
            tables.accum[slot] = got.accum
            same_pool = info["pool"] == self.pool_generation and info["start"] <= n_pool
            tables.start_of[slot] = info["start"] if same_pool else 0
        self.restore_holders(found, fresh)

    # -- spilling --------------------------------------------------------------------------

    def spill(self, rows: list[SpilledKey]) -> bool:
        """Write evicted keys (with every holder's state for them); False, keeping them
        resident, when the store cannot be written."""
        if self.store is None or not rows:
            return self.store is not None
        keys = [r.key for r in self._with_holders(rows)]
        try:
            self.store.put(self.generation, rows)
        except (sqlite3.Error, OSError) as exc:
            if self._write_error is None:
                log.error(
                    "cannot spill %d keys to %s: %s; they stay in memory",
                    len(rows),
                    self.store.path,
                    exc,
                )
            self._write_error = f"spill failed: {exc}"
            return False
        if self._write_error is not None:
            log.info("spilling works again")
        self._write_error = None
        for h in self.holders:
            h.drop_keys(keys)
        self.evicted += len(rows)
        self._spilled_any = True
        return True

    def fetch(self, keys: Sequence[str]) -> dict[str, SpilledKey]:
        """Spilled state of those of ``keys`` that have some (new keys have none)."""
        if self.store is None or not self._spilled_any or not keys:
            return {}
        try:
            found = self.store.get(keys)
        except (sqlite3.Error, OSError) as exc:
            self._read_error = f"reading spilled keys failed: {exc}"
            log.error("%s; %d keys start afresh", self._read_error, len(keys))
            return {}
        self._read_error = None
        self.restored += len(found)
        return found

    def restore_holders(self, found: Mapping[str, SpilledKey], fresh: set[str]) -> None:
        """Give each holder back its state of the restored keys (not those in ``fresh``:
        keys that come back reset)."""
        for h in self.holders:
            states = {
                k: r.info["holders"][h.name]
                for k, r in found.items()
                if k not in fresh and h.name in r.info.get("holders", {})
            }
            if states:
                h.import_keys(states)

    # -- checkpoints -----------------------------------------------------------------------

    def before_checkpoint(self, durable: bool = True) -> None:
        """Before a checkpoint: a durable one first makes the spill store durable too (its
        WAL commits already survive a killed process)."""
        if durable and self.store is not None and self._spilled_any:
            self.store.checkpoint()

    def checkpoint_saved(self, sequence: int, oldest_retained: int) -> None:
        self.generation = sequence + 1
        if self.store is not None and self._spilled_any:
            self.store.compact(oldest_retained)

    def resume(self, sequence: int) -> None:
        """A (re)start from checkpoint ``sequence`` (0: none): rows written after it go."""
        self.generation = sequence + 1
        if self.store is not None and self.store.exists:
            dropped = self.store.discard_after(sequence)
            if dropped:
                log.info("dropped %d spilled rows newer than checkpoint %d", dropped, sequence)
            self._spilled_any = self.store.count() > 0

    def take_counts(self) -> tuple[int, int]:
        """Keys evicted and restored since the last call (for counters)."""
        before, self._counted = self._counted, (self.evicted, self.restored)
        return self.evicted - before[0], self.restored - before[1]

    def state_dict(self) -> dict[str, int]:
        return {
            "tick": self._tick,
            "epoch": self.epoch,
            "epoch_start": self.epoch_start,
            "pool_generation": self.pool_generation,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in ("epoch", "epoch_start", "pool_generation"):
            setattr(self, name, int(state.get(name, 0)))
        self._tick = int(state.get("tick", 0))

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

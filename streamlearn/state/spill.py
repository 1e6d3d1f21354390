"""Where evicted keys wait for their next event: an SQLite table beside the checkpoints.

A row is one key's state at eviction: fast weights and AdaGrad accumulators as float32
bytes, the rest (start, epochs, other components' per-key state) as JSON (Python's, which
keeps the infinities a drift detector starts from). Nothing is pickled. Rows carry a
*generation*, the number of the checkpoint that will cover them (one past the newest
saved), so a restart from checkpoint N can drop rows written after it
(their keys are resident in checkpoint N, or their events are replayed) and read, for every
other key, the newest row of generation <= N: its state when checkpoint N was taken.
Superseded rows are deleted once no retained checkpoint can need them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 500  # keys per SELECT: below SQLite's bound on bound parameters


@dataclass(frozen=True)
class SpilledKey:
    """One evicted key: its rows of the learner's tables and everything else as JSON."""

    key: str
    params: np.ndarray
    accum: np.ndarray
    info: dict[str, Any]


class SpillStore:
    """Evicted keys' state in one SQLite file.

    >>> import tempfile
    >>> store = SpillStore(Path(tempfile.mkdtemp()) / "spill.sqlite3")
    >>> row = SpilledKey("a", np.ones(2, np.float32), np.zeros(2, np.float32), {"start": 0})
    >>> store.put(1, [row])
    >>> got = store.get(["a", "b"])
    >>> list(got), got["a"].params.tolist(), got["a"].info
    (['a'], [1.0, 1.0], {'start': 0})
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # Opened on first use: a daemon that never evicts never touches the file, and an
        # unusable directory is reported where a write fails (OSError or sqlite3.Error).
        self._conn: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The connection as a context manager commits, or rolls back when the body raises.
            db = sqlite3.connect(self.path, check_same_thread=False)
            # WAL: a commit survives a killed process; checkpoint() fsyncs before each saved
            # checkpoint so a power loss cannot undo what that checkpoint relies on.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS spill (key TEXT NOT NULL, generation INTEGER NOT"
                " NULL, params BLOB NOT NULL, accum BLOB NOT NULL, info TEXT NOT NULL,"
                " PRIMARY KEY (key, generation)) WITHOUT ROWID"
            )
            self._conn = db
        return self._conn

    @property
    def exists(self) -> bool:
        return self._conn is not None or self.path.exists()

    def put(self, generation: int, rows: Iterable[SpilledKey]) -> None:
        """Write rows in one transaction. Raises sqlite3.Error (disk full, read-only)."""
        data = [
            (
                r.key,
                generation,
                np.ascontiguousarray(r.params, dtype=np.float32).tobytes(),
                np.ascontiguousarray(r.accum, dtype=np.float32).tobytes(),
                json.dumps(r.info),
            )
            for r in rows
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO spill VALUES (?, ?, ?, ?, ?)", data)

    def get(self, keys: Sequence[str]) -> dict[str, SpilledKey]:
        """The newest row of each of ``keys`` that has one."""
        out: dict[str, SpilledKey] = {}
        for lo in range(0, len(keys), _CHUNK):
            chunk = keys[lo : lo + _CHUNK]
            marks = ",".join("?" * len(chunk))
            cur = self._db.execute(
                f"SELECT key, params, accum, info FROM spill WHERE key IN ({marks})"
                " ORDER BY generation",
                list(chunk),
            )
            for key, params, accum, info in cur:  # newest generation last: it wins
                out[key] = SpilledKey(
                    key,
                    np.frombuffer(params, dtype=np.float32).copy(),
                    np.frombuffer(accum, dtype=np.float32).copy(),
                    json.loads(info),
                )
        return out

    def delete(self, keys: Sequence[str]) -> int:
        """Delete every row of ``keys``; how many rows."""
        n = 0
        with self._db:
            for lo in range(0, len(keys), _CHUNK):
                chunk = list(keys[lo : lo + _CHUNK])
                marks = ",".join("?" * len(chunk))
                cur = self._db.execute(f"DELETE FROM spill WHERE key IN ({marks})", chunk)
                n += int(cur.rowcount)
        return n

    def discard_after(self, generation: int) -> int:
        """Delete rows newer than checkpoint ``generation`` (a restart from it); how many."""
        with self._db:
            cur = self._db.execute("DELETE FROM spill WHERE generation > ?", (generation,))
        return int(cur.rowcount)

    def compact(self, oldest_retained: int) -> int:
        """Delete rows that no retained checkpoint (numbers >= ``oldest_retained``) can read:
        those older than a key's newest row of generation <= ``oldest_retained``."""
        with self._db:
            cur = self._db.execute(
                "DELETE FROM spill WHERE generation < (SELECT MAX(s.generation) FROM spill s"
                " WHERE s.key = spill.key AND s.generation <= ?)",
                (oldest_retained,),
            )
        return int(cur.rowcount)

    def count(self) -> int:
        """Keys with at least one row."""
        return int(self._db.execute("SELECT COUNT(DISTINCT key) FROM spill").fetchone()[0])

    def checkpoint(self) -> None:
        """Move the write-ahead log into the database file and fsync it."""
        self._db.execute("PRAGMA wal_checkpoint(FULL)")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

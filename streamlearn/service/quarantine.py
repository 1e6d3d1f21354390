"""Records suspected of failing a poll, kept across restarts so none can cause a crash loop.

A poll that fails after its records were decoded (learning, outputs) leaves the daemon's
state part-way through that poll. With a checkpoint store the daemon then stops without
saving or committing anything, and names the poll's records as *suspects* in a small
ledger beside the checkpoints. The restarted daemon replays from its last checkpoint and
processes a poll that holds a suspect one record at a time; a record that fails on its own
is *poison*: the daemon stops again, and from then on that record is dead-lettered
(reason ``processing_failed``) before anything else sees it. Entries are dropped once the
committed positions pass them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import orjson

from streamlearn.state.atomic import atomic_write
from streamlearn.wire.messages import Origin, bounded

log = logging.getLogger("streamlearn")

LEDGER_NAME = "quarantine.json"

Place = tuple[str, int, int]


class PollFailedError(RuntimeError):
    """A poll failed after its records were taken: nothing was checkpointed or committed
    past the last checkpoint, and its records are suspects for the next run."""


def place(origin: Origin) -> Place:
    return (origin.topic, origin.partition, origin.offset)


class Quarantine:
    """Suspects and poison records by (topic, partition, offset), in ``directory`` when
    given (kept across restarts), else in memory.

    >>> q = Quarantine(None)
    >>> q.suspect([Origin("t", 0, 5), Origin("t", 0, 6)])
    >>> q.is_suspect(Origin("t", 0, 5)), q.poison_reason(Origin("t", 0, 6))
    (True, None)
    >>> q.condemn(Origin("t", 0, 6), "ValueError: bad")
    >>> q.poison_reason(Origin("t", 0, 6))
    'ValueError: bad'
    >>> q.settle({"t:0": 7}); q.empty
    True
    """

    def __init__(self, directory: Path | None) -> None:
        self.path = directory / LEDGER_NAME if directory is not None else None
        self._suspects: set[Place] = set()
        self._poison: dict[Place, str] = {}
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        try:
            data = orjson.loads(path.read_bytes())
            self._suspects = {(str(t), int(p), int(o)) for t, p, o in data["suspects"]}
            self._poison = {(str(t), int(p), int(o)): str(why) for t, p, o, why in data["poison"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Losing the ledger costs at most one more failed run per poison record.
            log.warning("ignoring an unreadable %s (%s)", path.name, bounded(str(exc)))
            self._suspects, self._poison = set(), {}
            return
        if not self.empty:
            log.warning(
                "quarantine: %d suspect and %d poison records from an earlier failed run",
                len(self._suspects),
                len(self._poison),
            )

    @property
    def empty(self) -> bool:
        return not self._suspects and not self._poison

    def is_suspect(self, origin: Origin) -> bool:
        return place(origin) in self._suspects

    def poison_reason(self, origin: Origin) -> str | None:
        return self._poison.get(place(origin)) if self._poison else None

    def suspect(self, origins: Iterable[Origin]) -> None:
        self._suspects.update(place(o) for o in origins)
        self._save()

    def condemn(self, origin: Origin, reason: str) -> None:
        where = place(origin)
        self._suspects.discard(where)
        self._poison[where] = bounded(reason)
        self._save()

    def settle(self, committed: Mapping[str, int]) -> None:
        """Drop the entries before ``committed`` positions (``"topic:partition"`` -> next
        offset): those records are never read again."""
        if self.empty:
            return

        def live(p: Place) -> bool:
            return p[2] >= committed.get(f"{p[0]}:{p[1]}", -1)

        suspects = {p for p in self._suspects if live(p)}
        poison = {p: why for p, why in self._poison.items() if live(p)}
        if len(suspects) != len(self._suspects) or len(poison) != len(self._poison):
            self._suspects, self._poison = suspects, poison
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        body = orjson.dumps(
            {
                "suspects": sorted(self._suspects),
                "poison": [[*p, why] for p, why in sorted(self._poison.items())],
            }
        )
        atomic_write(self.path, [body])

"""The loop's checkpoint step: flush the outputs, save the state with the positions it
covers, publish hand-off state, then commit those positions; and resuming from the newest
checkpoint that passes its checks and applies."""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable

from streamlearn.config import CheckpointConfig
from streamlearn.io.base import Sink, Source
from streamlearn.ops.metrics import ServiceMetrics
from streamlearn.service.handoff import KeyHandoff
from streamlearn.service.quarantine import Quarantine
from streamlearn.state.checkpoint import Checkpoint, CheckpointError, CheckpointStore
from streamlearn.state.residency import Residency
from streamlearn.wire.messages import bounded

log = logging.getLogger("streamlearn")


class Checkpointer:
    """When to checkpoint (``checkpoint.every_events`` / ``every_seconds``), the checkpoint
    step itself, and resuming. Without a store the step flushes, publishes and commits.
    Offsets are never committed ahead of a saved checkpoint; ``error`` says why the last
    step failed (None after one succeeded).

    >>> from prometheus_client import CollectorRegistry
    >>> from streamlearn.io.memory import MemorySink, MemorySource
    >>> ck = Checkpointer(CheckpointConfig(), None, MemorySource(iter([])), MemorySink(),
    ...                   ServiceMetrics(CollectorRegistry()), Quarantine(None), dict)
    >>> ck.count(5); ck.due(), ck.save(), ck.since
    (False, True, 5)
    """

    def __init__(
        self,
        cfg: CheckpointConfig,
        store: CheckpointStore | None,
        source: Source,
        sink: Sink,
        metrics: ServiceMetrics,
        quarantine: Quarantine,
        state: Callable[[], dict[str, object]],
        residency: Residency | None = None,
        handoff: KeyHandoff | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.source = source
        self.sink = sink
        self.metrics = metrics
        self.quarantine = quarantine
        self.state = state
        self.residency = residency
        self.handoff = handoff
        self.since = 0  # records since the last checkpoint
        self.error: str | None = None
        self._last = time.monotonic()
        self._last_fsync = -math.inf  # the first checkpoint is always fsynced

    def count(self, records: int) -> None:
        self.since += records

    def due(self) -> bool:
        if self.since == 0:
            return False
        waited = time.monotonic() - self._last
        return self.since >= self.cfg.every_events or waited >= self.cfg.every_seconds

    def save(self, *, durable: bool = False) -> bool:
        """Flush outputs, save state with the positions it covers, then commit those
        positions; False when not committed. The save is fsynced when ``durable`` or when
        ``checkpoint.fsync_every_s`` has passed since the last one."""
        if self.store is None:
            return self._publish_and_commit()
        mt = self.metrics
        started = time.perf_counter()
        positions = self.source.positions()
        try:
            durable = durable or time.monotonic() - self._last_fsync >= self.cfg.fsync_every_s
            if self.residency is not None:
                self.residency.before_checkpoint(durable)
            # The outputs are flushed between writing the file and naming it: their acks
            # come in while it is written, and a restart (which resumes from a
            # checkpoint's own offsets) never finds one whose outputs were not delivered.
            path = self.store.save(
                self.state(), positions, durable=durable, before_rename=self.sink.flush
            )
            if durable:
                self._last_fsync = time.monotonic()
            if self.handoff is not None:  # the committed offsets never outrun it
                self.handoff.publish(positions)
        except (CheckpointError, OSError, RuntimeError, sqlite3.Error) as exc:
            # KafkaTimeoutError from a producer flush is a RuntimeError subclass too.
            self.error = f"checkpoint failed: {exc}"
            mt.checkpoints.labels("failed").inc()
            log.error("%s; offsets stay uncommitted, retrying at the next cadence", exc)
            return False
        self.error = None
        if self.residency is not None:
            retained = self.store.retained()
            self.residency.checkpoint_saved(retained[-1], retained[0])
        mt.checkpoints.labels("saved").inc()
        mt.checkpoint_seconds.observe(time.perf_counter() - started)
        mt.last_checkpoint.set(time.time())
        self.quarantine.settle(positions)  # a restart resumes from these positions
        committed = self.source.commit(positions)
        mt.commits.labels("ok" if committed else "failed").inc()
        log.debug("checkpoint %s covers %s; committed=%s", path.name, positions, committed)
        self.since = 0
        self._last = time.monotonic()
        return committed

    def _publish_and_commit(self) -> bool:
        """The step without a store: outputs flushed, changed key state published (with
        hand-off), then the current positions committed."""
        try:
            self.sink.flush()
            if self.handoff is not None:
                self.handoff.publish(self.source.positions())
        except RuntimeError as exc:
            log.error("publishing key state failed: %s; offsets stay uncommitted", exc)
            return False
        return self.source.commit(self.source.positions())

    def restore(self, apply: Callable[[Checkpoint], None]) -> Checkpoint | None:
        """Resume from the newest checkpoint that passes its checks and ``apply`` takes
        (nothing when there is none). One that fails either is skipped, with its name and
        reason, for the one before it. Raises CheckpointError when files exist but none
        is usable."""
        tried = 0
        for ck in self.store.loadable() if self.store is not None else ():
            tried += 1
            if self.residency is not None:
                self.residency.resume(ck.sequence)
            try:
                apply(ck)
            except Exception as exc:  # a checkpoint that verifies but does not fit this build
                log.warning(
                    "skipping checkpoint %s: its state cannot be applied (%s: %s)",
                    ck.path.name,
                    type(exc).__name__,
                    bounded(str(exc)),
                )
                continue
            self.source.seek(ck.offsets)
            return ck
        if tried and self.store is not None:
            raise CheckpointError(
                f"none of the checkpoints in {str(self.store.directory)!r} can be applied "
                "(each one's reason is logged above)"
            )
        if self.residency is not None:
            self.residency.resume(0)
        return None

"""What the daemon saves in a checkpoint, the checkpoint step (save, publish, commit) and
how it resumes from one."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING

from streamlearn.meta.maml import MetaParams
from streamlearn.state.checkpoint import Checkpoint, CheckpointError, CheckpointStore
from streamlearn.wire.messages import Query, bounded

if TYPE_CHECKING:
    from streamlearn.service.daemon import Daemon

log = logging.getLogger("streamlearn")


def state_of(d: Daemon) -> dict[str, object]:
    """Everything a restart needs (tensors and plain data only)."""
    o = d.outcomes
    return {
        "learner": d.learner.state_dict(),
        "baseline": o.baseline.state_dict() if o.baseline is not None else {},
        "meta": {
            "log_rate": d._meta.log_rate.clone(),
            "tasks": d.tasks.state_dict() if d.tasks is not None else {},
        },
        "active": d.active.state_dict() if d.active is not None else {},
        "resets": d.outcomes.resetter.state_dict(),
        "drift": d.outcomes.drift.state_dict(),
        "totals": {"events": d.events_seen, **o.totals()},
        "handoff": d.handoff.state_dict() if d.handoff is not None else {},
        "recent_ids": d.recent_ids.state_dict() if d.recent_ids is not None else {},
    }


def restore(d: Daemon, store: CheckpointStore) -> Checkpoint | None:
    """Resume from the newest checkpoint of ``store`` that passes its checks and applies
    (nothing when there is none). One that fails either is skipped, with its name and
    reason, for the one before it. Raises CheckpointError when files exist but none is
    usable."""
    tried = 0
    for ck in store.loadable():
        tried += 1
        if d.residency is not None:
            d.residency.resume(ck.sequence)
        try:
            _apply(d, ck)
        except Exception as exc:  # a checkpoint that verifies but does not fit this build
            log.warning(
                "skipping checkpoint %s: its state cannot be applied (%s: %s)",
                ck.path.name,
                type(exc).__name__,
                bounded(str(exc)),
            )
            continue
        log.info(
            "resumed from checkpoint %d (%s): %d keys, %d labels learned, offsets %s",
            ck.sequence,
            ck.path.name,
            d.learner.n_keys,
            d.labels_seen,
            ck.offsets,
        )
        return ck
    if tried:
        raise CheckpointError(
            f"none of the checkpoints in {str(store.directory)!r} can be applied "
            "(each one's reason is logged above)"
        )
    if d.residency is not None:
        d.residency.resume(0)
    return None


def _apply(d: Daemon, ck: Checkpoint) -> None:
    state = ck.state
    d.learner.load_state_dict(state["learner"])
    o = d.outcomes
    if o.baseline is not None and state.get("baseline"):
        o.baseline.load_state_dict(state["baseline"])
    meta = state.get("meta", {})
    if "log_rate" in meta:
        d._meta = MetaParams(d.learner.theta0, meta["log_rate"])
    if d.tasks is not None and meta.get("tasks"):
        d.tasks.load_state_dict(meta["tasks"])
    if d.active is not None and state.get("active"):
        d.active.load_state_dict(state["active"])
    if state.get("resets"):
        o.resetter.load_state_dict(state["resets"])
    if state.get("drift"):
        o.drift.load_state_dict(state["drift"])
    if d.handoff is not None and state.get("handoff"):
        d.handoff.load_state_dict(state["handoff"])
    if d.recent_ids is not None and state.get("recent_ids"):
        d.recent_ids.load_state_dict(state["recent_ids"])
    totals = state["totals"]
    d.events_seen = int(totals["events"])
    o.restore_totals(totals)
    d.source.seek(ck.offsets)
    d.resumed_from = ck.sequence
    d.metrics.model_version.set(d.learner.model_version)
    d.metrics.active_keys.set(d.learner.n_keys)


# Queries sent up to this long before a checkpoint was written are read again at a restart
# (they are in its state, and skipped): one clock, but the producer stamps a query when
# it is sent, and the checkpoint's time is taken before its state is gathered.
RECOVERY_MARGIN_S = 60.0


def recover_queries(d: Daemon, resumed_at: float | None) -> int:
    """Open again the queries sent after the checkpoint ``d`` resumed from (``resumed_at``;
    None: no checkpoint), read back from the queries topic: an answer to any query the
    service sent is learned, whatever stopped the run that sent it."""
    from streamlearn.io.kafka import read_since

    assert d.active is not None
    cfg = d.cfg
    since = d.clock() - cfg.active.expiry_s
    if resumed_at is not None:
        since = max(since, resumed_at - RECOVERY_MARGIN_S)
    topic = cfg.kafka.topics.queries
    sent = []
    for value, sent_at in read_since(cfg.kafka, topic, since, cfg.active.max_pending):
        try:
            sent.append((Query.from_json(value), sent_at))
        except ValueError as exc:  # another writer's message: not ours to answer
            log.debug("skipping a message of %s: %s", topic, exc)
    n = d.active.recover(sent)
    if n:
        log.info("reopened %d queries sent after the checkpoint (read back from %s)", n, topic)
    return n


def checkpoint(d: Daemon, *, durable: bool = False) -> bool:
    """Flush outputs, save state with the positions it covers, then commit those
    positions. Offsets are never committed ahead of a saved checkpoint. The save is fsynced
    when ``durable`` or when ``checkpoint.fsync_every_s`` has passed since the last one."""
    if d.store is None:
        return publish_and_commit(d)
    mt = d.metrics
    started = time.perf_counter()
    positions = d.source.positions()
    try:
        every = d.cfg.checkpoint.fsync_every_s
        durable = durable or time.monotonic() - d._last_fsync >= every
        if d.residency is not None:
            d.residency.before_checkpoint(durable)
        # The outputs are flushed between writing the file and naming it: their acks come
        # in while it is written, and a restart (which resumes from a checkpoint's own
        # offsets) never finds one whose outputs were not delivered.
        path = d.store.save(state_of(d), positions, durable=durable, before_rename=d.sink.flush)
        if durable:
            d._last_fsync = time.monotonic()
        if d.handoff is not None:  # the committed offsets never outrun it
            d.handoff.publish(positions)
    except (CheckpointError, OSError, RuntimeError, sqlite3.Error) as exc:
        # KafkaTimeoutError from a producer flush is a RuntimeError subclass too.
        d._checkpoint_error = f"checkpoint failed: {exc}"
        mt.checkpoints.labels("failed").inc()
        log.error("%s; offsets stay uncommitted, retrying at the next cadence", exc)
        return False
    d._checkpoint_error = None
    if d.residency is not None:
        retained = d.store.retained()
        d.residency.checkpoint_saved(retained[-1], retained[0])
    mt.checkpoints.labels("saved").inc()
    d.quarantine.settle(positions)  # a restart resumes from these positions
    mt.checkpoint_seconds.observe(time.perf_counter() - started)
    mt.last_checkpoint.set(time.time())
    committed = d.source.commit(positions)
    mt.commits.labels("ok" if committed else "failed").inc()
    log.debug("checkpoint %s covers %s; committed=%s", path.name, positions, committed)
    d._since_checkpoint = 0
    d._last_checkpoint = time.monotonic()
    return committed


def publish_and_commit(d: Daemon) -> bool:
    """The checkpoint without a store: outputs flushed, changed key state published
    (with hand-off), then the current positions committed."""
    try:
        d.sink.flush()
        if d.handoff is not None:
            d.handoff.publish(d.source.positions())
    except RuntimeError as exc:
        log.error("publishing key state failed: %s; offsets stay uncommitted", exc)
        return False
    return d.source.commit(d.source.positions())

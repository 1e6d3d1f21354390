"""Queries a stopped run sent, opened again at the next start (read back from Kafka)."""

from __future__ import annotations

import logging

from streamlearn.active.loop import ActiveLearning
from streamlearn.config import Config
from streamlearn.wire.messages import Query

log = logging.getLogger("streamlearn")

# Queries sent up to this long before a checkpoint was written are read again at a restart
# (they are in its state, and skipped): one clock, but the producer stamps a query when
# it is sent, and the checkpoint's time is taken before its state is gathered.
RECOVERY_MARGIN_S = 60.0


def recover_queries(
    active: ActiveLearning, cfg: Config, now: float, resumed_at: float | None
) -> int:
    """Open again in ``active`` the queries sent after the checkpoint the daemon resumed
    from (``resumed_at``; None: no checkpoint), read back from the queries topic: an answer
    to any query the service sent is learned, whatever stopped the run that sent it."""
    since = now - cfg.active.expiry_s
    if resumed_at is not None:
        since = max(since, resumed_at - RECOVERY_MARGIN_S)
    topic = cfg.kafka.topics.queries
    from streamlearn.io.kafka import read_since  # kafka-python only when used

    sent = []
    for value, sent_at in read_since(cfg.kafka, topic, since, cfg.active.max_pending):
        try:
            sent.append((Query.from_json(value), sent_at))
        except ValueError as exc:  # another writer's message: not ours to answer
            log.debug("skipping a message of %s: %s", topic, exc)
    n = active.recover(sent)
    if n:
        log.info("reopened %d queries sent after the checkpoint (read back from %s)", n, topic)
    return n

"""Hot swap: the daemon's loop side of background re-meta-training, one call per poll."""

from __future__ import annotations

import logging

from streamlearn.learning.learner import OnlineLearner
from streamlearn.meta.maml import MetaParams
from streamlearn.meta.tasks import TaskBuffer
from streamlearn.meta.trainer import BackgroundMetaTrainer
from streamlearn.ops.metrics import Metrics

log = logging.getLogger("streamlearn")


def meta_tick(
    trainer: BackgroundMetaTrainer,
    tasks: TaskBuffer,
    learner: OnlineLearner,
    mt: Metrics,
    current: MetaParams,
    labels_seen: int,
    *,
    use_learned_rates: bool,
) -> MetaParams:
    """Install a finished candidate if it is better (a new version for new keys and later
    resets); start the next run when due. Returns the meta-parameters now current."""
    try:
        outcome = trainer.result()
    except Exception as exc:  # a failed run must never take the stream down
        mt.meta.meta_runs.labels("failed").inc()
        log.error("background meta-training failed: %s", exc)
        outcome = None
    if outcome is not None:
        mt.meta.meta_seconds.observe(outcome.seconds)
        mt.meta.meta_loss_before.set(outcome.loss_before)
        mt.meta.meta_loss_after.set(outcome.loss_after)
        if trainer.promotes(outcome):
            version = learner.model_version + 1
            cand = outcome.candidate
            rates = cand.log_rate.exp() if use_learned_rates else None
            learner.set_theta0(cand.theta0, version, rates)
            if outcome.pool_helps:  # otherwise the pool in force stays
                learner.set_pool(outcome.pool)
            current = cand
            mt.stream.model_version.set(version)
            mt.meta.meta_runs.labels("promoted").inc()
            mt.meta.meta_pool_members.set(len(learner.starts) - 1)
            if rates is not None:
                mt.meta.meta_inner_rate.labels("min").set(float(rates.min()))
                mt.meta.meta_inner_rate.labels("median").set(float(rates.median()))
                mt.meta.meta_inner_rate.labels("max").set(float(rates.max()))
            log.info(
                "meta-init version %d promoted: held-out meta-loss %.4f -> %.4f (%.1f s on %s)",
                version,
                outcome.loss_before,
                outcome.loss_after,
                outcome.seconds,
                outcome.device,
            )
        else:
            mt.meta.meta_runs.labels("rejected").inc()
            log.info(
                "meta-training candidate rejected: %.4f -> %.4f",
                outcome.loss_before,
                outcome.loss_after,
            )
    mt.meta.meta_buffer_tasks.set(tasks.n_tasks)
    mt.meta.meta_buffer_examples.set(tasks.n_examples)
    if trainer.due(labels_seen):
        current = MetaParams(learner.theta0, current.log_rate)
        try:
            started = trainer.start(tasks, current, labels_seen)
        except Exception as exc:  # e.g. a broken worker pool: rebuilt at the next start
            trainer.close()
            mt.meta.meta_runs.labels("failed").inc()
            log.error("cannot start background meta-training: %s", exc)
            return current
        if not started:
            mt.meta.meta_runs.labels("skipped").inc()
    return current

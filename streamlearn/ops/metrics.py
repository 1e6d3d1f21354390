"""Every Prometheus metric of the service, declared per component on an injected registry.

Conventions: ``streamlearn_`` prefix, base units (seconds, ratios), ``_total`` on counters,
no label per entity key (label values come from small fixed sets).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from importlib.metadata import version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from streamlearn.optim.sharpness import CurvatureWatch
from streamlearn.wire.messages import Reason

POLL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)
RECOVERY_BUCKETS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000)


def _counter_by(
    registry: CollectorRegistry, name: str, doc: str, label: str, values: Iterable[str]
) -> Counter:
    """A counter with one label whose every (fixed, small) value is exported from the start,
    so that rates and alerts see zeros instead of missing series."""
    counter = Counter(name, doc, [label], registry=registry)
    for value in values:
        counter.labels(value)
    return counter


def _gauge(registry: CollectorRegistry, name: str, doc: str) -> Gauge:
    return Gauge(name, doc, registry=registry)


class StreamMetrics:
    """What flowed: events, labels, predictions, dead letters, keys and polls."""

    def __init__(self, r: CollectorRegistry, task: str) -> None:
        self.info = Info("streamlearn_build", "Version and task of this process.", registry=r)
        self.info.info({"version": version("streamlearn"), "task": task})
        self.events = Counter(
            "streamlearn_events", "Valid events decoded and predicted.", registry=r
        )
        self.labels = Counter("streamlearn_labels", "Labelled events learned from.", registry=r)
        self.duplicates = Counter(
            "streamlearn_duplicate_events",
            "Events dropped as repeats of an id in the recent-id window (source.dedup_window).",
            registry=r,
        )
        self.predictions = Counter("streamlearn_predictions", "Predictions emitted.", registry=r)
        self.dead_letters = _counter_by(
            r,
            "streamlearn_dead_letters",
            "Records rejected to the dead-letter sink, by reason.",
            "reason",
            (reason.value for reason in Reason),
        )
        self.active_keys = _gauge(
            r, "streamlearn_active_keys", "Entity keys with fast weights in memory."
        )
        self.keys_evicted = Counter(
            "streamlearn_keys_evicted",
            "Keys spilled out of memory (least recently used beyond learner.max_keys).",
            registry=r,
        )
        self.keys_restored = Counter(
            "streamlearn_keys_restored",
            "Spilled keys brought back into memory by a new event.",
            registry=r,
        )
        self.model_version = _gauge(
            r, "streamlearn_model_version", "Version of the meta-init in force."
        )
        self.poll_seconds = Histogram(
            "streamlearn_poll_duration_seconds",
            "Processing time of one poll (decode to metrics), excluding the wait for records.",
            buckets=POLL_BUCKETS,
            registry=r,
        )


class QualityMetrics:
    """How well it learns: prequential loss, the shadow baseline and regret."""

    def __init__(self, r: CollectorRegistry, task: str) -> None:
        self.loss = Counter(
            "streamlearn_loss",
            "Cumulative prequential loss (log loss in nats, or half squared error).",
            registry=r,
        )
        self.baseline_loss = Counter(
            "streamlearn_baseline_loss",
            "Cumulative prequential loss of the shadow baseline on the same labels.",
            registry=r,
        )
        self.regret = _gauge(
            r,
            "streamlearn_regret",
            "Cumulative loss minus the shadow baseline's cumulative loss (negative is better).",
        )
        self.rolling_loss = _gauge(
            r, "streamlearn_rolling_loss", "Mean prequential loss over the rolling window."
        )
        self.rolling_baseline_loss = _gauge(
            r,
            "streamlearn_rolling_baseline_loss",
            "Mean prequential loss of the shadow baseline over the rolling window.",
        )
        quality = "accuracy" if task != "regression" else "mae"
        self.rolling_quality = Gauge(
            f"streamlearn_rolling_{quality}",
            "Prequential accuracy (ratio) over the rolling window."
            if task != "regression"
            else "Prequential mean absolute error over the rolling window.",
            registry=r,
        )


class DriftMetrics:
    """Drift detections, the resets they caused, recovery after them."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.drifts = _counter_by(
            r,
            "streamlearn_drift_detections",
            "Drifts detected, by scope (global stream or one key).",
            "scope",
            ("global", "key"),
        )
        self.last_drift = _gauge(
            r,
            "streamlearn_last_drift_timestamp_seconds",
            "Unix time of the last global drift detection (0 before any).",
        )
        self.since_drift = _gauge(
            r,
            "streamlearn_seconds_since_last_drift",
            "Seconds since the last global drift detection (since start before any).",
        )
        self._last_drift_at = time.time()
        self.since_drift.set_function(lambda: time.time() - self._last_drift_at)
        self.reset_starts = Counter(
            "streamlearn_reset_starts",
            "Keys reset after drift, by the start chosen (0: theta0; i: meta-init pool member i).",
            ["start"],
            registry=r,
        )
        self.reset_starts.labels("0")
        self.resets = _counter_by(
            r,
            "streamlearn_resets",
            "Keys whose fast weights were reset to the meta-init, by cause.",
            "cause",
            ("key_drift", "global_drift"),
        )
        self.recovery = Histogram(
            "streamlearn_drift_recovery_labels",
            "Labelled events needed after a global drift to return to the pre-drift quality.",
            buckets=RECOVERY_BUCKETS,
            registry=r,
        )
        self.unrecovered = Counter(
            "streamlearn_drift_unrecovered",
            "Global drifts after which quality did not return before the next drift or limit.",
            registry=r,
        )

    def global_drift_now(self) -> None:
        self._last_drift_at = time.time()
        self.last_drift.set(self._last_drift_at)
        self.drifts.labels("global").inc()


class StepMetrics:
    """The learner's steps: rates, the expert mixture, curvature, rollbacks, recall."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.step_size = _gauge(r, "streamlearn_step_size", "Base learning rate eta_t in force.")
        self.hypergradient = _gauge(
            r,
            "streamlearn_hypergradient",
            "Last rate hypergradient signal, mean -cos(g_t, u_{t-1}) (0 when off).",
        )
        self.curriculum_weight = _gauge(
            r,
            "streamlearn_curriculum_weight",
            "Mean curriculum step multiplier of the last poll (1 when off).",
        )
        self.expert_weight = Gauge(
            "streamlearn_expert_weight",
            "Weight of each expert in the prediction served (key: the key's weights; shared: "
            "the shared weights alone; linear: the linear expert).",
            ["expert"],
            registry=r,
        )
        self.curvature = Gauge(
            "streamlearn_curvature_lambda",
            "Extreme eigenvalue estimates of the preconditioned Hessian of the recent loss.",
            ["bound"],
            registry=r,
        )
        self.curvature_age = _gauge(
            r,
            "streamlearn_curvature_age_labels",
            "Labelled events since the eigenvalue estimates were refreshed.",
        )
        self.step_cap = _gauge(
            r,
            "streamlearn_step_cap",
            "Cap on the base rate from curvature, 2 / (lambda_min + lambda_max) (0: none).",
        )
        self.controller_error = _gauge(
            r,
            "streamlearn_controller_error",
            "PI controller error: setpoint minus the measured signal (sharpness or loss trend).",
        )
        self.controller_integral = _gauge(
            r, "streamlearn_controller_integral", "PI controller integral term."
        )
        self.update_norm = _gauge(
            r,
            "streamlearn_update_norm",
            "Root mean square L2 norm of the per-event parameter updates in the last poll.",
        )
        self.rollbacks = Counter(
            "streamlearn_rollbacks",
            "Per-key updates rolled back because they were non-finite or exploding.",
            registry=r,
        )
        self.concept_recalls = Counter(
            "streamlearn_concept_recalls",
            "The shared weights moved to a remembered concept that fit the newest labels "
            "better than the weights in force and a coin (learner.shared.recall).",
            registry=r,
        )
        self.concept_members = _gauge(
            r, "streamlearn_concept_members", "Concepts (settled shared weights) in the memory."
        )

    def set_curvature(self, watch: CurvatureWatch) -> None:
        """The curvature watch's state, after a poll."""
        if watch.spectrum is not None:
            self.curvature.labels("min").set(watch.spectrum.lambda_min)
            self.curvature.labels("max").set(watch.spectrum.lambda_max)
        self.curvature_age.set(watch.labels_since_refresh)
        self.step_cap.set(watch.cap or 0.0)
        if watch.pi is not None:
            self.controller_error.set(watch.pi.error)
            self.controller_integral.set(watch.pi.integral)


class ServiceMetrics:
    """The service itself: up, ready, lag, checkpoints, commits, hand-offs."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.up = Gauge("streamlearn_up", "1 while the processing loop runs.", registry=r)
        self.ready = Gauge(
            "streamlearn_ready",
            "1 while /readyz answers 200 (consuming, broker and stores ok).",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "streamlearn_consumer_lag_records",
            "Records between the consumer's positions and the partitions' ends (Kafka only).",
            registry=r,
        )
        self.checkpoints = _counter_by(
            r,
            "streamlearn_checkpoints",
            "Checkpoint attempts, by outcome.",
            "outcome",
            ("saved", "failed"),
        )
        self.commits = _counter_by(
            r,
            "streamlearn_offset_commits",
            "Offset commits after a checkpoint, by outcome.",
            "outcome",
            ("ok", "failed"),
        )
        self.handoff_keys = _counter_by(
            r,
            "streamlearn_handoff_keys",
            "Key states handed between replicas at rebalances (kafka.handoff): published to "
            "the state topic, received from it, dropped with a partition lost.",
            "direction",
            ("published", "received", "dropped"),
        )
        self.checkpoint_seconds = Histogram(
            "streamlearn_checkpoint_duration_seconds",
            "Time to flush outputs and save state.",
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self.last_checkpoint = _gauge(
            r,
            "streamlearn_last_checkpoint_timestamp_seconds",
            "Unix time of the last saved checkpoint (0 before any).",
        )


class MetaMetrics:
    """Background meta-training."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.meta_runs = _counter_by(
            r,
            "streamlearn_meta_training_runs",
            "Background meta-training runs, by outcome.",
            "outcome",
            ("promoted", "rejected", "failed", "skipped"),
        )
        self.meta_seconds = Histogram(
            "streamlearn_meta_training_duration_seconds",
            "Wall time of one background meta-training run (in its worker process).",
            buckets=(1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000),
            registry=r,
        )
        self.meta_loss_before = _gauge(
            r,
            "streamlearn_meta_loss_before",
            "Held-out meta-loss of the current theta0 at the last meta-training run.",
        )
        self.meta_loss_after = _gauge(
            r,
            "streamlearn_meta_loss_after",
            "Held-out meta-loss of the last meta-training run's candidate.",
        )
        self.meta_buffer_tasks = _gauge(
            r, "streamlearn_meta_buffer_tasks", "Tasks (entity x segment) in the task buffer."
        )
        self.meta_buffer_examples = _gauge(
            r, "streamlearn_meta_buffer_examples", "Labelled examples held in the task buffer."
        )
        self.meta_pool_members = _gauge(
            r,
            "streamlearn_meta_pool_members",
            "Starts in the meta-init pool besides theta0, as of the last promotion.",
        )
        self.meta_inner_rate = Gauge(
            "streamlearn_meta_inner_rate",
            "The meta-learned per-parameter rates of the online steps at the last promotion "
            "(with meta.use_learned_rates), by statistic.",
            ["stat"],
            registry=r,
        )


class ActiveMetrics:
    """Active learning: queries, answers, the budget and its pacer, lambda."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.queries = _counter_by(
            r,
            "streamlearn_queries",
            "Label queries produced, by the policy that scored them (explore: drawn at random "
            "from the budget's exploration share).",
            "reason",
            ("uncertainty", "sensitivity", "combined", "random", "explore"),
        )
        self.answers = _counter_by(
            r,
            "streamlearn_label_answers",
            "Label answers received, by outcome (ok: joined and learned; late: its query had "
            "expired; duplicate; unknown: never asked; malformed: dead-lettered).",
            "outcome",
            ("ok", "late", "duplicate", "unknown", "malformed"),
        )
        self.label_latency = Histogram(
            "streamlearn_label_latency_seconds",
            "Time from a query to its answer, for answers joined in time.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queries_expired = Counter(
            "streamlearn_queries_expired",
            "Queries closed unanswered at their expiry.",
            registry=r,
        )
        self.pending_queries = _gauge(
            r, "streamlearn_pending_queries", "Queries awaiting an answer."
        )
        self.query_budget = _gauge(
            r, "streamlearn_query_budget", "Share of unlabelled events the budget allows to query."
        )
        self.query_share_target = _gauge(
            r,
            "streamlearn_query_share_target",
            "Share of unlabelled events to query now: the budget moved by the pacer "
            "(active.pacing: more while the model errs more than usual).",
        )
        self.label_surges = Counter(
            "streamlearn_label_surges",
            "Surges of queries: the answers said the model does no better than a coin "
            "(active.pacing.alarm_nats), so the pacer queried at its maximum share for "
            "active.pacing.surge_events events (when the bank allows).",
            registry=r,
        )
        self.shared_restarts = Counter(
            "streamlearn_shared_restarts",
            "Restarts of the shared model's steps on a surge's alarm: no one key carried "
            "more than active.pacing.restart_key_share of its evidence.",
            registry=r,
        )
        self.label_bank = _gauge(
            r,
            "streamlearn_label_bank",
            "Labels the budget earned and the pacer has not spent (negative: overspent, "
            "paid back by querying below budget).",
        )
        self.query_rate = _gauge(
            r, "streamlearn_query_rate", "Smoothed share of unlabelled events queried."
        )
        self.query_threshold = _gauge(
            r,
            "streamlearn_query_threshold",
            "Score quantile an event must exceed to be queried (set by the budget controller).",
        )
        self.proximal_lambda = _gauge(
            r, "streamlearn_proximal_lambda", "Proximal strength lambda in force."
        )
        self.lambda_hypergradient = _gauge(
            r,
            "streamlearn_lambda_hypergradient",
            "Last validation hypergradient dL_val/dlambda (implicit differentiation).",
        )


class Metrics:
    """The service's metrics: one group per component (``stream``, ``quality``, ``drift``,
    ``steps``, ``service``, ``meta``, ``active``), each declared on the same injected
    registry; a component is handed its own group.

    >>> reg = CollectorRegistry()
    >>> m = Metrics(reg, task="binary")
    >>> m.stream.events.inc(3); reg.get_sample_value("streamlearn_events_total")
    3.0
    """

    def __init__(self, registry: CollectorRegistry, task: str = "binary") -> None:
        self.registry = registry
        self.stream = StreamMetrics(registry, task)
        self.quality = QualityMetrics(registry, task)
        self.drift = DriftMetrics(registry)
        self.steps = StepMetrics(registry)
        self.service = ServiceMetrics(registry)
        self.meta = MetaMetrics(registry)
        self.active = ActiveMetrics(registry)

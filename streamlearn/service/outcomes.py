"""What each label tells the service, whenever it arrives: prequential loss against the
prediction made before the label was known, regret against the shadow baseline, rolling
quality, drift detection and the resets it triggers, recovery times, and the task buffer.

The daemon calls :meth:`Outcomes.record` for the labels events carry and, with active
learning, for label answers joined to their queries (delayed labels); both paths account
the same way, each against the prediction published for that event.
"""

from __future__ import annotations

import numpy as np
import torch

from streamlearn.config import Config
from streamlearn.drift.detectors import DriftMonitor, DriftReport, RecoveryTracker
from streamlearn.drift.resets import Resetter
from streamlearn.learning.learner import OnlineLearner
from streamlearn.learning.regret import GlobalBaseline
from streamlearn.meta.tasks import TaskBuffer
from streamlearn.model.spec import ModelSpec
from streamlearn.ops.metrics import Metrics
from streamlearn.service.rolling import RollingMean

_P_FLOOR = 1e-7


def prediction_loss(spec: ModelSpec, p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Loss of published predictions ``p`` (probabilities or values) against labels ``y``:
    log loss or half squared error, as the learner's own.

    >>> prediction_loss(ModelSpec(1), np.array([0.5, 0.9]), np.array([1.0, 0.0])).round(3)
    array([0.693, 2.303])
    """
    if spec.task == "regression":
        return np.asarray(0.5 * (p - y) ** 2)
    if spec.task == "binary":
        q = np.clip(p, _P_FLOOR, 1.0 - _P_FLOOR)
        return np.asarray(-(y * np.log(q) + (1.0 - y) * np.log1p(-q)))
    picked = p[np.arange(len(y)), y.astype(np.int64)]
    return np.asarray(-np.log(np.clip(picked, _P_FLOOR, 1.0)))


def correctness(spec: ModelSpec, p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1/0 per labelled event for classification, NaN for regression."""
    if spec.task == "binary":
        return np.asarray(((p >= 0.5) == (y == 1.0)) * 1.0)
    if spec.task == "multiclass":
        return np.asarray((p.argmax(1) == y) * 1.0)
    return np.full(len(y), np.nan)


class Outcomes:
    """Accounting of labelled events; state read through properties.

    Not run as a doctest (it needs the daemon's parts): see ``tests/test_daemon.py``.
    """

    def __init__(
        self,
        cfg: Config,
        learner: OnlineLearner,
        metrics: Metrics,
        theta0: torch.Tensor,
        tasks: TaskBuffer | None,
    ) -> None:
        self.spec = learner.spec
        self.learner = learner
        self.metrics = metrics
        self.tasks = tasks
        self.resetter = Resetter(learner, cfg.drift)
        self.on_global_drift = cfg.drift.on_global_drift
        self.baseline = (
            GlobalBaseline(self.spec, cfg.learner, theta0, cfg.metrics.baseline_batch)
            if cfg.metrics.baseline == "global_model"
            else None
        )
        self.drift = DriftMonitor(cfg.drift)
        # What the last poll's labels triggered (read by benchmarks of recovery per key).
        self.last_drift = DriftReport()
        d = cfg.drift
        self.recovery = RecoveryTracker(
            d.recovery_window,
            d.recovery_tolerance,
            d.recovery_max_labels,
            relative=self.spec.task == "regression",
        )
        window = cfg.metrics.rolling_window
        self.rolling_loss = RollingMean(window)
        self._rolling_base = RollingMean(window)
        self._rolling_quality = RollingMean(window)
        self.cum_loss = 0.0
        self.cum_base = 0.0
        self.labels = 0
        # Told of every label after it is accounted (the active learner's lambda watch).

    @property
    def regret(self) -> float:
        return self.cum_loss - self.cum_base

    @property
    def rolling_quality(self) -> float:
        return self._rolling_quality.value

    def record(
        self,
        keys: list[str],
        x_std: np.ndarray,
        y: np.ndarray,
        p: np.ndarray,
        loss: np.ndarray,
        detect: np.ndarray | None = None,
    ) -> None:
        """Labelled events, in arrival order: keys, standardised features, labels, the
        predictions published for them (before their labels) and those predictions' loss;
        ``detect`` masks the labels drift detection may see (default: all)."""
        m = len(y)
        if m == 0:
            return
        mt, spec = self.metrics, self.spec
        self.labels += m
        mt.stream.labels.inc(m)
        total = float(loss.sum())
        self.cum_loss += total
        mt.quality.loss.inc(total)
        self.rolling_loss.extend(loss.tolist())
        mt.quality.rolling_loss.set(self.rolling_loss.value)
        if self.baseline is not None:
            base = self.baseline.process(x_std, y)
            self.cum_base += float(base.sum())
            mt.quality.baseline_loss.inc(float(base.sum()))
            self._rolling_base.extend(base.tolist())
            mt.quality.rolling_baseline_loss.set(self._rolling_base.value)
            mt.quality.regret.set(self.regret)
        if spec.task == "regression":
            quality = (-loss).tolist()
            error = loss
            self._rolling_quality.extend(np.abs(p - y).tolist())
        else:
            correct = correctness(spec, p, y)
            quality = correct.tolist()
            error = 1.0 - correct
            self._rolling_quality.extend(quality)
        mt.quality.rolling_quality.set(self._rolling_quality.value)
        if self.tasks is not None:
            self.tasks.add(keys, x_std, y)
        self.resetter.remember(keys, x_std, y)
        for length in self.recovery.update(quality):
            mt.drift.recovery.observe(length)
        if detect is None:
            self._drift(keys, error.tolist())
        elif detect.any():
            self._drift(
                [k for k, d in zip(keys, detect.tolist(), strict=True) if d], error[detect].tolist()
            )

    def _drift(self, keys: list[str], errors: list[float]) -> None:
        mt = self.metrics
        report = self.drift.update(keys, errors)
        self.last_drift = report
        if report.drifted_keys:
            if self.tasks is not None:
                self.tasks.close_segments(report.drifted_keys)
            mt.drift.drifts.labels("key").inc(len(report.drifted_keys))
            mt.drift.resets.labels("key_drift").inc(
                self._count_starts(self.resetter.reset(report.drifted_keys))
            )
        if report.global_drift:
            if self.tasks is not None:
                self.tasks.close_all()
            mt.drift.global_drift_now()
            unrecovered_before = self.recovery.unrecovered
            self.recovery.drift()
            mt.drift.unrecovered.inc(self.recovery.unrecovered - unrecovered_before)
            if self.on_global_drift == "reset_all":
                mt.drift.resets.labels("global_drift").inc(
                    self._count_starts(self.resetter.reset_all())
                )

    def _count_starts(self, by_start: dict[int, int]) -> int:
        for start, n in by_start.items():
            self.metrics.drift.reset_starts.labels(str(start)).inc(n)
        return sum(by_start.values())

    def totals(self) -> dict[str, float]:
        return {"labels": self.labels, "loss": self.cum_loss, "baseline_loss": self.cum_base}

    def restore_totals(self, totals: dict[str, float]) -> None:
        self.labels = int(totals["labels"])
        self.cum_loss = float(totals["loss"])
        self.cum_base = float(totals["baseline_loss"])

"""Drift detection over the prequential error stream with river's detectors, globally and per
key, and measurement of how many labelled events each recovery takes."""

from __future__ import annotations

import base64
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from river import drift as river_drift
from river import stats as river_stats

from streamlearn.config import DriftConfig
from streamlearn.state.checkpoint import from_json_tensor, json_tensor


class StatefulADWIN(river_drift.ADWIN):
    """river's ADWIN, telling a rise of the error from a fall, with its state as plain data.

    ``worsened`` is true when ADWIN detects a change and its window's mean went up (the
    window's sum and width are mirrored here: reading them from river costs ~1.4 us). The
    window lives in river's Rust extension, whose ``__getstate__`` gives it as bytes (serde,
    not pickle; base64 here).

    >>> a = StatefulADWIN(delta=0.002)
    >>> any(a.worsened(1.0 if i > 500 else 0.0) for i in range(1000))
    True
    >>> b = StatefulADWIN(delta=0.002); b.restore(a.state()); b.state() == a.state()
    True
    """

    def __init__(self, delta: float) -> None:
        super().__init__(delta=delta)
        self._sum = 0.0
        self._n = 0

    def worsened(self, x: float) -> bool:
        before = self._sum / self._n if self._n else 0.0
        self._sum += x
        self._n += 1
        self.update(x)
        if not self.drift_detected:
            return False
        # river's ADWIN clears its whole window on the update after a detection.
        self._n, self._sum = 0, 0.0
        return bool(self.estimation > before)

    def state(self) -> dict[str, Any]:
        window = base64.b64encode(self._helper.__getstate__()).decode("ascii")
        return {"sum": self._sum, "n": self._n, "window": window, "detected": self.drift_detected}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._sum, self._n = float(state["sum"]), int(state["n"])
        self._helper.__setstate__(base64.b64decode(state["window"]))
        # absent before 0.3: a detector checkpointed the event after it fired reset late
        self._drift_detected = bool(state.get("detected", False))


class StatefulPageHinkley(river_drift.PageHinkley):
    """river's PageHinkley in "up" mode (only a rise of the error is a change), with its
    state as plain numbers (a fresh detector's extremes are infinite, which JSON has no
    number for: they go as text).

    >>> a = StatefulPageHinkley(30, 0.005, 5.0)
    >>> any(a.worsened(1.0 if i > 100 else 0.0) for i in range(200))
    True
    >>> b = StatefulPageHinkley(30, 0.005, 5.0); b.restore(a.state()); b.state() == a.state()
    True
    """

    def __init__(self, min_instances: int, delta: float, threshold: float) -> None:
        super().__init__(min_instances=min_instances, delta=delta, threshold=threshold, mode="up")

    def worsened(self, x: float) -> bool:
        self.update(x)
        return bool(self.drift_detected)

    def state(self) -> dict[str, Any]:
        m = self._x_mean
        values = (
            m.n,
            m.get(),
            self._sum_increase,
            self._sum_decrease,
            self._min_increase,
            self._max_decrease,
        )
        return {
            "ph": [v if math.isfinite(v) else repr(float(v)) for v in values],
            "detected": self.drift_detected,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        n, mean, s_inc, s_dec, min_inc, max_dec = (float(v) for v in state["ph"])
        self._x_mean = river_stats.Mean._from_state(n=n, mean=mean)
        self._sum_increase, self._sum_decrease = s_inc, s_dec
        self._min_increase = min_inc
        # river starts it at the int -1 and stores floats in it from the first update on
        self._max_decrease = max_dec  # type: ignore[assignment]
        self._drift_detected = bool(state.get("detected", False))


class StatefulKSWIN(river_drift.KSWIN):
    """river's KSWIN, telling a rise of the error from a fall, with its state as plain data:
    its window, count and random state.

    ``worsened`` is true when KSWIN detects a change and its newest ``stat_size`` errors are
    worse than the rest of its window.

    >>> a = StatefulKSWIN(0.005, 100, 30)
    >>> any(a.worsened(1.0 if i > 500 else 0.0) for i in range(1000))
    True
    >>> b = StatefulKSWIN(0.005, 100, 30); b.restore(a.state()); b.state() == a.state()
    True
    """

    def __init__(self, alpha: float, window_size: int, stat_size: int) -> None:
        super().__init__(alpha=alpha, window_size=window_size, stat_size=stat_size, seed=0)

    def worsened(self, x: float) -> bool:
        window = list(self.window)
        self.update(x)
        if not self.drift_detected:
            return False
        recent, older = window[-self.stat_size :], window[: -self.stat_size]
        return bool(older) and sum(recent) / len(recent) > sum(older) / len(older)

    def state(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {
            "window": list(self.window),
            "count": self.n,
            "rng": [version, list(internal), gauss],
            "detected": self.drift_detected,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.window.clear()
        self.window.extend(state["window"])
        self.n = int(state["count"])
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._drift_detected = bool(state.get("detected", False))


Detector = StatefulADWIN | StatefulPageHinkley | StatefulKSWIN


def make_detector(cfg: DriftConfig) -> Detector:
    """A fresh detector as configured: ``worsened(error)`` (a change for the worse), and its
    state as plain data (``state()`` / ``restore(state)``)."""
    if cfg.detector == "adwin":
        return StatefulADWIN(cfg.adwin_delta)
    if cfg.detector == "page_hinkley":
        return StatefulPageHinkley(cfg.ph_min_instances, cfg.ph_delta, cfg.ph_threshold)
    return StatefulKSWIN(cfg.kswin_alpha, cfg.kswin_window_size, cfg.kswin_stat_size)


class Degradation:
    """A river detector that reports only changes for the worse.

    ADWIN and KSWIN flag any change in distribution, including the error *falling* while a
    model learns; acting on those resets models that are improving (seen as a drift storm on
    the default stream: 52 "drifts" for 4 real ones). ``update`` returns true only when a
    detected change raised the error: ADWIN's window mean went up, KSWIN's newest
    ``stat_size`` errors are worse than the rest of its window; PageHinkley runs in "up" mode.

    >>> d = Degradation(DriftConfig())
    >>> any(d.update(1.0 if i > 500 else 0.0) for i in range(1000))
    True
    >>> d = Degradation(DriftConfig())
    >>> any(d.update(0.0 if i > 500 else 1.0) for i in range(1000))
    False
    """

    __slots__ = ("_det", "_kind", "_state")

    def __init__(self, cfg: DriftConfig) -> None:
        self._det = make_detector(cfg)
        self._kind = cfg.detector
        # state() until the next update: a checkpoint every poll re-encoded every key's
        # window (~1 KB each) while a poll changes a fraction of them.
        self._state: dict[str, Any] | None = None

    def update(self, error: float) -> bool:
        self._state = None
        return self._det.worsened(error)

    def state(self) -> dict[str, Any]:
        """The detector's state as plain data (its kind, then the river detector's)."""
        if self._state is None:
            self._state = {"kind": self._kind, **self._det.state()}
        return self._state

    def restore(self, state: dict[str, Any]) -> None:
        if state["kind"] != self._kind:
            raise ValueError(
                f"checkpointed detector is {state['kind']!r}, drift.detector is {self._kind!r}"
            )
        self._state = None
        self._det.restore(state)


@dataclass(slots=True)
class DriftReport:
    """What one poll's labelled events triggered."""

    global_drift: bool = False
    drifted_keys: list[str] = field(default_factory=list)


class DriftMonitor:
    """Feeds each labelled event's error to the global detector and to its key's detector.

    A key's detector is replaced by a fresh one when that key drifts (its model is reset, so
    the old error history no longer describes it); after a global drift every key's detector
    is renewed too when ``on_global_drift`` resets all keys.

    >>> mon = DriftMonitor(DriftConfig(detector="page_hinkley", ph_threshold=5.0))
    >>> r = mon.update(["a"] * 200, [0.0] * 100 + [1.0] * 100)
    >>> r.global_drift, r.drifted_keys
    (True, ['a'])
    """

    def __init__(self, cfg: DriftConfig) -> None:
        self.cfg = cfg
        self._global = Degradation(cfg) if cfg.global_ else None
        self._per_key: dict[str, Degradation] = {}
        self.n_global = 0
        self.n_key = 0

    def update(self, keys: Sequence[str], errors: Sequence[float]) -> DriftReport:
        report = DriftReport()
        per_key = self.cfg.per_key
        detectors = self._per_key
        drifted: set[str] = set()
        glob = self._global
        for key, err in zip(keys, errors, strict=True):
            if glob is not None and glob.update(err):
                report.global_drift = True
            if per_key:
                det = detectors.get(key)
                if det is None:
                    det = detectors[key] = Degradation(self.cfg)
                if det.update(err) and key not in drifted:
                    drifted.add(key)
                    report.drifted_keys.append(key)
                    detectors[key] = Degradation(self.cfg)
        if report.global_drift:
            self.n_global += 1
            if self.cfg.on_global_drift == "reset_all":
                detectors.clear()
        self.n_key += len(report.drifted_keys)
        return report

    # Per-key detectors follow evicted keys to the spill store (streamlearn.state.residency).
    name = "drift"

    def export_keys(self, keys: Sequence[str]) -> dict[str, Any]:
        det = self._per_key
        return {k: det[k].state() for k in keys if k in det}

    def drop_keys(self, keys: Sequence[str]) -> None:
        for k in keys:
            self._per_key.pop(k, None)

    def import_keys(self, states: Mapping[str, Any]) -> None:
        for key, st in states.items():
            det = self._per_key[key] = Degradation(self.cfg)
            det.restore(st)

    def state_dict(self) -> dict[str, Any]:
        """Every detector's state (a per-key detector is about 1 KB). The per-key states go
        as one JSON text: pickled as objects they were three quarters of a checkpoint's
        pickling time with 1,000 keys (about ten objects each). Every detector's state is
        plain JSON (infinities as text), so orjson writes it (20x ``json``'s speed here)."""
        return {
            "global": self._global.state() if self._global is not None else None,
            # As a tensor: torch.save pickled the 1 MB text ~4x slower than a tensor's bytes.
            "keys_orjson": json_tensor({k: d.state() for k, d in self._per_key.items()}),
            "counts": [self.n_global, self.n_key],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._global is not None and state["global"] is not None:
            self._global.restore(state["global"])
        self._per_key = {}
        # "keys_json" (a str) and "keys" (objects): checkpoints of earlier versions.
        if "keys_orjson" in state:
            keys = from_json_tensor(state["keys_orjson"])
        elif "keys_json" in state:
            keys = orjson.loads(state["keys_json"])
        else:
            keys = state["keys"]
        self.import_keys(keys)
        self.n_global, self.n_key = (int(v) for v in state["counts"])


class RecoveryTracker:
    """Labelled events needed after a drift to get back to the pre-drift quality.

    Quality is 1 for a right prediction and 0 for a wrong one (classification), or minus the
    loss (regression). At a drift, ``pre`` is the mean over the last ``window`` labels. The
    recovery length is the smallest ``k`` such that the mean over labels ``k .. k+window``
    after the drift is within ``tolerance`` of ``pre`` (absolute for accuracy, relative for
    loss): the benchmark protocol's definition, computed online.

    >>> t = RecoveryTracker(window=10, tolerance=0.0, max_labels=1000)
    >>> _ = t.update([1.0] * 10); t.drift()
    >>> t.update([0.0] * 5 + [1.0] * 10)
    [5]
    """

    def __init__(
        self, window: int, tolerance: float, max_labels: int, relative: bool = False
    ) -> None:
        self.window = window
        self.tolerance = tolerance
        self.max_labels = max_labels
        self.relative = relative
        self._recent: deque[float] = deque(maxlen=window)
        self._since: deque[float] = deque(maxlen=window)
        self._since_sum = 0.0
        self._target: float | None = None
        self._n_since = 0
        self.unrecovered = 0

    @property
    def in_recovery(self) -> bool:
        return self._target is not None

    def drift(self) -> None:
        """A drift was detected now; an unfinished recovery counts as not recovered."""
        if self._target is not None:
            self.unrecovered += 1
        if len(self._recent) < self.window:
            self._target = None
            return
        pre = float(np.mean(self._recent))
        slack = self.tolerance * abs(pre) if self.relative else self.tolerance
        self._target = pre - slack
        self._since.clear()
        self._since_sum = 0.0
        self._n_since = 0

    def update(self, quality: Sequence[float]) -> list[int]:
        """Feed labelled events' quality in order; returns recovery lengths completed."""
        done: list[int] = []
        for q in quality:
            self._recent.append(q)
            if self._target is None:
                continue
            if len(self._since) == self.window:
                self._since_sum -= self._since[0]
            self._since.append(q)
            self._since_sum += q
            self._n_since += 1
            if len(self._since) == self.window:
                if self._since_sum / self.window >= self._target:
                    done.append(self._n_since - self.window)
                    self._target = None
                elif self._n_since >= self.max_labels:
                    self.unrecovered += 1
                    self._target = None
        return done

import json

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from streamlearn.config import DriftConfig, load_config
from streamlearn.drift.detectors import Degradation, DriftMonitor, RecoveryTracker
from streamlearn.io.memory import MemorySource
from streamlearn.service.daemon import Daemon
from tests.helpers import sample, with_linear


def _errors(before: float, after: float, n: int = 1500, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    flips = rng.random(2 * n) < np.r_[np.full(n, before), np.full(n, after)]
    return [float(f) for f in flips]


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley", "kswin"])
def test_detectors_flag_a_rise_in_error(detector):
    det = Degradation(DriftConfig(detector=detector))
    flags = [det.update(e) for e in _errors(0.1, 0.6)]
    first = flags.index(True)
    assert 1500 <= first < 1800


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley", "kswin"])
def test_detectors_ignore_a_fall_in_error(detector):
    det = Degradation(DriftConfig(detector=detector))
    assert not any(det.update(e) for e in _errors(0.6, 0.1))


def test_monitor_reports_global_and_per_key_drift():
    mon = DriftMonitor(DriftConfig())
    errs = _errors(0.05, 0.9, n=600)
    report = mon.update(["a"] * len(errs), errs)
    assert report.global_drift
    assert report.drifted_keys == ["a"]
    assert (mon.n_global, mon.n_key) == (1, 1)


def test_monitor_can_skip_global_or_per_key():
    errs = _errors(0.05, 0.9, n=600)
    only_key = DriftMonitor(DriftConfig.model_validate({"global": False}))
    r = only_key.update(["a"] * len(errs), errs)
    assert (r.global_drift, r.drifted_keys) == (False, ["a"])
    only_global = DriftMonitor(DriftConfig(per_key=False))
    r = only_global.update(["a"] * len(errs), errs)
    assert (r.global_drift, r.drifted_keys) == (True, [])


def test_recovery_tracker_hand_computed():
    t = RecoveryTracker(window=4, tolerance=0.25, max_labels=100)
    t.update([1, 1, 1, 1])
    t.drift()  # pre = 1.0, target 0.75
    assert t.in_recovery
    # windows after the drift: [0,0,1,1]=.5 [0,1,1,1]=.75 -> k = 1
    assert t.update([0, 0, 1, 1, 1]) == [1]
    assert not t.in_recovery


def test_recovery_tracker_counts_unrecovered():
    t = RecoveryTracker(window=2, tolerance=0.0, max_labels=10)
    t.update([1, 1])
    t.drift()
    t.update([0] * 3)
    t.drift()  # the first never recovered; the new pre-drift level is 0
    assert t.unrecovered == 1
    assert t.update([0, 0]) == [0]
    slow = RecoveryTracker(window=2, tolerance=0.0, max_labels=10)
    slow.update([1, 1])
    slow.drift()
    assert slow.update([0] * 20) == []  # gives up after max_labels
    assert slow.unrecovered == 1
    assert not slow.in_recovery
    relative = RecoveryTracker(window=2, tolerance=0.5, max_labels=10, relative=True)
    relative.update([-1.0, -1.0])
    relative.drift()  # quality is -loss; target -1.5
    assert relative.update([-1.4, -1.4]) == [0]


def _flip_stream(n: int, flip_at: int):
    rng = np.random.default_rng(0)
    for i in range(n):
        x = rng.normal(size=2)
        y = int(x[0] > 0)
        if i >= flip_at:
            y = 1 - y
        yield {"id": str(i), "key": "solo", "ts": float(i), "x": x.tolist(), "y": y}


def test_daemon_resets_key_to_theta0_on_drift_and_measures_recovery():
    cfg = load_config(
        overrides=with_linear(
            {
                "model": {"n_features": 2},
                "source": {"synthetic": {"n_features": 2}, "batch_size": 50},
                "drift": {"recovery_window": 100},
            }
        ),
        env={},
    )
    reg = CollectorRegistry()
    daemon = Daemon(cfg, reg, source=MemorySource(_flip_stream(6000, 3000)))
    theta0 = daemon.learner.theta0.clone()
    resets_seen = []
    while not daemon.source.exhausted:
        before = sample(reg, "streamlearn_resets_total", {"cause": "key_drift"})
        daemon.step()
        after = sample(reg, "streamlearn_resets_total", {"cause": "key_drift"})
        if after > before:
            resets_seen.append(daemon.events_seen)
    assert resets_seen, "the flip was never detected"
    assert 3000 < resets_seen[0] <= 3300
    assert sample(reg, "streamlearn_drift_detections_total", {"scope": "global"}) >= 1
    assert sample(reg, "streamlearn_drift_recovery_labels_count") >= 1
    # After the reset the key learns the flipped concept again from theta0.
    assert not torch.equal(daemon.learner.params_of("solo"), theta0)
    assert daemon.rolling_quality > 0.9


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley", "kswin"])
def test_a_restored_detector_goes_on_as_the_uninterrupted_one(detector):
    """A detector checkpointed at any point, the event after a detection included, detects
    what the uninterrupted one detects from there on (river resets a detector on the
    update after it fired, so the restored one must know that it fired)."""
    cfg = DriftConfig(detector=detector, ph_threshold=5.0)
    rng = np.random.default_rng(0)
    errors = np.concatenate([rng.random(300) < 0.1, rng.random(300) < 0.6, rng.random(300) < 0.1])
    whole = Degradation(cfg)
    fired = [whole.update(float(e)) for e in errors]
    assert any(fired)
    first = fired.index(True)
    for cut in sorted({first + 1, first + 2, 150, 450, 700}):
        head = Degradation(cfg)
        for e in errors[:cut]:
            head.update(float(e))
        resumed = Degradation(cfg)
        resumed.restore(json.loads(json.dumps(head.state())))  # as plain JSON, as checkpointed
        tail = [resumed.update(float(e)) for e in errors[cut:]]
        assert tail == fired[cut:], f"cut at {cut}"
        assert resumed.state() == whole.state()

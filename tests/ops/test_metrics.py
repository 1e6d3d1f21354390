"""The daemon's metrics: names, types, values that agree with what was processed."""

import urllib.error
import urllib.request

import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamlearn.config import Config, load_config
from streamlearn.io.memory import MemorySink, MemorySource
from streamlearn.io.synthetic import build_family
from streamlearn.ops.http import ServiceHTTP
from streamlearn.service.daemon import Daemon
from tests.helpers import sample

EXPECTED_TYPES = {
    "streamlearn_reset_starts": "counter",
    "streamlearn_hypergradient": "gauge",
    "streamlearn_curriculum_weight": "gauge",
    "streamlearn_events": "counter",
    "streamlearn_labels": "counter",
    "streamlearn_predictions": "counter",
    "streamlearn_dead_letters": "counter",
    "streamlearn_loss": "counter",
    "streamlearn_baseline_loss": "counter",
    "streamlearn_regret": "gauge",
    "streamlearn_rolling_loss": "gauge",
    "streamlearn_rolling_baseline_loss": "gauge",
    "streamlearn_rolling_accuracy": "gauge",
    "streamlearn_drift_detections": "counter",
    "streamlearn_last_drift_timestamp_seconds": "gauge",
    "streamlearn_seconds_since_last_drift": "gauge",
    "streamlearn_resets": "counter",
    "streamlearn_drift_recovery_labels": "histogram",
    "streamlearn_drift_unrecovered": "counter",
    "streamlearn_step_size": "gauge",
    "streamlearn_expert_weight": "gauge",
    "streamlearn_update_norm": "gauge",
    "streamlearn_rollbacks": "counter",
    "streamlearn_active_keys": "gauge",
    "streamlearn_model_version": "gauge",
    "streamlearn_poll_duration_seconds": "histogram",
    "streamlearn_up": "gauge",
    "streamlearn_build": "info",
    "streamlearn_checkpoints": "counter",
    "streamlearn_offset_commits": "counter",
    "streamlearn_checkpoint_duration_seconds": "histogram",
    "streamlearn_last_checkpoint_timestamp_seconds": "gauge",
}
# "start": 0..K for a meta-init pool of K <= MAX_POOL members
ALLOWED_LABELS = {
    "expert",  # three at most: key, shared, linear
    "reason",
    "scope",
    "cause",
    "outcome",
    "le",
    "version",
    "task",
    "start",
    "bound",
    "direction",
}


def _cfg(**synthetic: object) -> Config:
    return load_config(
        overrides={"source": {"batch_size": 200, "synthetic": {"n_keys": 10, **synthetic}}},
        env={},
    )


def _mixed_source(n_good: int):
    good = (e.event for e in build_family(_cfg().source.synthetic))
    bad = [b"{", b'{"id":"b1","key":"k","x":[1]}', orjson.dumps({"id": "b2", "x": [0] * 8})]
    items: list[object] = []
    for i in range(n_good):
        items.append(next(good))
        if i % 100 == 0 and bad:
            items.append(bad.pop())
    return MemorySource(iter(items)), 3  # type: ignore[arg-type]


def test_metric_types_and_bounded_labels():
    reg = CollectorRegistry()
    Daemon(_cfg(), reg).run(max_events=500)
    families = {f.name: f for f in reg.collect()}
    for name, kind in EXPECTED_TYPES.items():
        assert name in families, name
        assert families[name].type == kind, name
    for fam in families.values():
        for s in fam.samples:
            assert set(s.labels) <= ALLOWED_LABELS, (fam.name, s.labels)


def test_counts_agree_with_the_stream():
    reg = CollectorRegistry()
    src, n_bad = _mixed_source(1000)
    sink = MemorySink()
    daemon = Daemon(_cfg(), reg, source=src, sink=sink)
    assert daemon.run() == 0

    def v(name: str, labels: dict[str, str] | None = None) -> float:
        return sample(reg, name, labels)

    assert v("streamlearn_events_total") == 1000
    assert v("streamlearn_labels_total") == 1000
    assert v("streamlearn_predictions_total") == 1000 == sink.n_predictions
    assert (
        sum(
            v("streamlearn_dead_letters_total", {"reason": r})
            for r in ("invalid_json", "dimension_mismatch", "missing_field")
        )
        == n_bad
    )
    assert sink.n_dead_letters == n_bad
    assert v("streamlearn_active_keys") == 10
    assert v("streamlearn_loss_total") > 0
    assert v("streamlearn_regret") == pytest.approx(
        v("streamlearn_loss_total") - v("streamlearn_baseline_loss_total")
    )
    assert 0.0 <= v("streamlearn_rolling_accuracy") <= 1.0
    assert v("streamlearn_poll_duration_seconds_count") == 6  # 1003 records, 200 per poll
    assert v("streamlearn_up") == 0


def test_regression_task_exports_mae():
    cfg = load_config(
        overrides={
            "source": {"synthetic": {"family": "sinusoid", "n_keys": 3}},
            "model": {"task": "regression", "n_features": 1, "hidden": [16], "init": "normal"},
        },
        env={},
    )
    reg = CollectorRegistry()
    Daemon(cfg, reg).run(max_events=300)
    assert sample(reg, "streamlearn_rolling_mae") > 0


def test_http_serves_metrics_and_health(free_port):
    reg = CollectorRegistry()
    daemon = Daemon(_cfg(), reg)
    srv = ServiceHTTP(reg, "127.0.0.1", free_port, daemon.ready)
    port = srv.start()
    try:
        daemon.run(max_events=300)
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(base + "/metrics") as resp:
            body = resp.read().decode()
        names = {f.name for f in text_string_to_metric_families(body)}
        assert {"streamlearn_events", "streamlearn_regret"} <= names
        with urllib.request.urlopen(base + "/healthz") as resp:
            assert resp.read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/readyz")
        assert err.value.code == 503  # the loop has ended: not consuming
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/nope")
        assert err.value.code == 404
    finally:
        srv.stop()

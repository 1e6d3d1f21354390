"""The broker stopped for 30 s mid-stream and started again (the real broker of
scripts/kafka.sh, its data kept): the daemon says it is not ready, keeps serving metrics,
recovers by itself and loses nothing."""

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from streamlearn.state.checkpoint import CheckpointStore
from tests.helpers import ROOT, run_cli
from tests.io.test_kafka import _cli, _wait_ready
from tests.kafka_util import (
    committed_offsets,
    end_offsets,
    kafka_overrides,
    unique_prefix,
    write_config,
)

PARTITIONS = 2
KAFKA_SH = str(ROOT / "scripts" / "kafka.sh")


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


def _simulate(cfg: str, n: int, seed: int) -> None:
    env = {"STREAMLEARN_SOURCE__SYNTHETIC__SEED": str(seed)}
    res = run_cli("simulate", "-c", cfg, "--events", str(n), "--no-progress", env=env)
    assert res.returncode == 0, res.stderr


@pytest.mark.slow
def test_broker_outage_is_not_ready_then_recovers_and_loses_nothing(
    kafka_bootstrap, tmp_path, free_port
):
    prefix = unique_prefix()
    ck_dir = tmp_path / "ck"
    cfg = write_config(
        tmp_path / "outage.yaml",
        {
            "source": {"kind": "kafka", "synthetic": {"n_keys": 20}},
            "kafka": {
                **kafka_overrides(kafka_bootstrap, prefix, PARTITIONS),
                "request_timeout_ms": 5000,
                "reconnect_backoff_max_ms": 2000,
            },
            "checkpoint": {"dir": str(ck_dir), "every_events": 1000, "every_seconds": 0.5},
            "metrics": {"port": free_port},
        },
    )
    _simulate(str(cfg), 3000, seed=1)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    daemon = subprocess.Popen(
        _cli("run", cfg), cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    outage = {}
    try:
        _wait_ready(free_port, daemon)
        deadline = time.monotonic() + 60
        while _metric(free_port, "streamlearn_events_total") < 3000 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _metric(free_port, "streamlearn_events_total") == 3000

        stopped_at = time.monotonic()
        subprocess.run([KAFKA_SH, "stop"], check=True, timeout=60)
        not_ready = served = 0
        while time.monotonic() - stopped_at < 30:
            not_ready += _status(free_port, "/readyz") == 503
            served += _status(free_port, "/metrics") == 200
            assert _status(free_port, "/healthz") == 200
            assert daemon.poll() is None
            time.sleep(1.0)
        outage = {"not_ready_samples": not_ready, "metrics_served": served}
        assert not_ready >= 20, outage  # within a few seconds of the stop, and then throughout
        assert served >= 25, outage
    finally:
        subprocess.run([KAFKA_SH, "start"], check=True, timeout=300)
    try:
        started = time.monotonic()
        while _status(free_port, "/readyz") != 200 and time.monotonic() - started < 120:
            time.sleep(0.5)
        recovered_s = time.monotonic() - started
        assert _status(free_port, "/readyz") == 200, "did not recover by itself"
        _simulate(str(cfg), 2000, seed=2)  # the second batch has fresh ids (another seed)
        deadline = time.monotonic() + 120
        while _metric(free_port, "streamlearn_events_total") < 5000 and time.monotonic() < deadline:
            time.sleep(0.3)
        ends = end_offsets(kafka_bootstrap, f"{prefix}.events", PARTITIONS)
        deadline = time.monotonic() + 60
        while committed_offsets(kafka_bootstrap, f"{prefix}-group") != ends:
            assert time.monotonic() < deadline, "offsets never caught up after the outage"
            time.sleep(0.3)
    finally:
        daemon.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.communicate(timeout=60)
    assert daemon.returncode == 0
    final = CheckpointStore(ck_dir).load_latest()
    assert final is not None
    assert final.offsets == ends
    assert final.state["totals"]["events"] == 5000
    assert final.state["totals"]["labels"] == 5000  # every label learned, none twice
    print(f"\nbroker outage: 30 s; {outage}; ready again {recovered_s:.1f} s after the restart")

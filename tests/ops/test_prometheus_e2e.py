"""A real Prometheus (Debian's package) scraping a running daemon: the regret and drift
series come back through its HTTP API, the shipped alert rules evaluate cleanly, every
Grafana panel's query runs, `promtool check metrics` accepts a live scrape, and
`streamlearn report` draws the run from Prometheus and from the daemon's metrics log."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT, free_tcp_port, run_cli
from tests.io.test_kafka import _wait_ready

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _api(base: str, path: str, **params: object) -> Any:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]


def _wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = check()
        except OSError:  # not listening yet
            got = None
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _value(base: str, query: str) -> float | None:
    result = _api(base, "query", query=query)["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.mark.slow
def test_prometheus_scrapes_the_daemon_and_the_shipped_rules_and_dashboard_work(tmp_path):
    assert Path(PROMETHEUS).exists(), "prometheus missing: scripts/test.sh installs Debian's"
    metrics_port, prom_port = free_tcp_port(), free_tcp_port()
    log = tmp_path / "metrics.jsonl"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "STREAMLEARN_SOURCE__SYNTHETIC__RATE": "4000",
        "STREAMLEARN_ACTIVE__ENABLED": "true",  # queries go to the in-process sink
        "STREAMLEARN_METRICS__LOG_PATH": str(log),
        "STREAMLEARN_METRICS__LOG_EVERY_S": "1",
    }
    daemon = subprocess.Popen(
        [sys.executable, "-m", "streamlearn", "run", "--metrics-port", str(metrics_port)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    prom: subprocess.Popen[bytes] | None = None
    try:
        _wait_ready(metrics_port, daemon)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as r:
            scrape = r.read()
        lint = subprocess.run(
            [PROMTOOL, "check", "metrics"],
            input=scrape,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr

        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ROOT / "deploy" / "prometheus" / "rules.yml")],
            "scrape_configs": [
                {
                    "job_name": "streamlearn",
                    "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{prom_port}"
        _wait_for(
            lambda: _value(base, 'streamlearn_regret{job="streamlearn"}') is not None,
            60,
            "the regret series",
        )
        drifts = _wait_for(
            lambda: _value(base, "sum(streamlearn_drift_detections_total)"), 90, "a drift"
        )
        assert drifts >= 1
        time.sleep(15)  # a stretch of history for the range queries and the report
        end = time.time()
        regret = _api(
            base, "query_range", query="streamlearn_regret", start=end - 15, end=end, step=1
        )["result"]
        assert len(regret[0]["values"]) >= 10
        by_scope = {
            r["metric"]["scope"]: float(r["value"][1])
            for r in _api(base, "query", query="streamlearn_drift_detections_total")["result"]
        }
        assert set(by_scope) == {"global", "key"}

        # The shipped alert rules load and evaluate without error on the live series.
        groups = _api(base, "rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 12
        assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
        firing = {r["name"] for r in rules if r["state"] == "firing"}
        assert "StreamlearnNotReady" not in firing
        assert "StreamlearnDown" not in firing

        # Every query of the Grafana dashboard runs on this Prometheus.
        dash = json.loads((ROOT / "deploy/grafana/dashboards/streamlearn.json").read_text())
        queries = [t["expr"] for p in dash["panels"] for t in p["targets"]]
        queries += [a["expr"] for a in dash["annotations"]["list"]]
        with_data = 0
        for q in queries:
            data = _api(base, "query", query=q.replace("$job", ".*"))
            with_data += bool(data["result"])
        assert with_data >= len(queries) * 2 // 3, (with_data, len(queries))

        rep = run_cli(
            "report",
            "--prometheus",
            base,
            "--minutes",
            "2",
            "--step",
            "1",
            "--out",
            str(tmp_path / "from-prometheus"),
        )
        assert rep.returncode == 0, rep.stderr
        _assert_report(tmp_path / "from-prometheus")
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=30)
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=60)
    assert daemon.returncode == 0
    rep = run_cli("report", "--log", str(log), "--out", str(tmp_path / "from-log"))
    assert rep.returncode == 0, rep.stderr
    assert "regret" in rep.stderr
    _assert_report(tmp_path / "from-log")


def _assert_report(out: Path) -> None:
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == ["labels_budget", "loss_regret", "quality_drift", "step_size"]
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.stat().st_size > 10_000
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "regret" in page

"""The command line, as a user runs it: real processes, real signals, a real scrape."""

import contextlib
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_help_is_useful():
    out = run_cli("--help").stdout
    assert "run" in out
    assert "config" in out
    run_help = run_cli("run", "--help").stdout
    assert "--max-events" in run_help
    assert "--config" in run_help


def test_run_max_events_exits_zero(free_port):
    res = run_cli(
        "run",
        "--max-events",
        "3000",
        "--metrics-port",
        str(free_port),
        env={"STREAMLEARN_SOURCE__SYNTHETIC__RATE": "0"},
    )
    assert res.returncode == 0, res.stderr
    assert "events=3,000" in res.stderr
    assert "stopped cleanly" in res.stderr
    # Every line is the daemon's own log (torch's jit deprecation, from its forward-mode AD
    # internals, is not shown to operators).
    assert "Warning" not in res.stderr, res.stderr


def test_bad_config_fails_with_one_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("learner:\n  learning_rate: 0\n")
    res = run_cli("run", "--config", str(cfg))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "learner.learning_rate = 0" in lines[0]
    env = run_cli("config", env={"STREAMLEARN_DRIFT__DETECTOR": "nope"})
    assert env.returncode == 2
    assert "drift.detector = 'nope'" in env.stderr


def test_config_command_prints_effective_tree():
    res = run_cli("config", env={"STREAMLEARN_LEARNER__LEARNING_RATE": "0.3"})
    assert res.returncode == 0
    assert "learning_rate: 0.3" in res.stdout


def test_sigterm_drains_and_exits_zero_while_serving_metrics(free_port):
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlearn", "run", "--metrics-port", str(free_port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        body = b""
        while time.monotonic() < deadline:
            url = f"http://127.0.0.1:{free_port}/metrics"
            with contextlib.suppress(OSError), urllib.request.urlopen(url) as resp:
                body = resp.read()  # (OSError: not listening yet)
            if b"streamlearn_events_total" in body and b"events_total 0.0" not in body:
                break
            time.sleep(0.3)
        assert b"streamlearn_events_total" in body
        with urllib.request.urlopen(f"http://127.0.0.1:{free_port}/readyz") as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err
    assert "stopped cleanly" in err

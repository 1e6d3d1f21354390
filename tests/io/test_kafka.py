"""Against the real Apache Kafka broker (scripts/kafka.sh): nothing here is mocked."""

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from streamlearn.config import SyntheticSourceConfig, load_config
from streamlearn.io.synthetic import build_family
from streamlearn.learning.learner_state import key_names
from streamlearn.service.daemon import Daemon
from streamlearn.state.checkpoint import CheckpointStore
from streamlearn.state.residency import SPILL_FILE
from streamlearn.state.spill import SpillStore
from tests.helpers import run_cli, sample
from tests.kafka_util import (
    committed_offsets,
    end_offsets,
    kafka_overrides,
    read_topic,
    unique_prefix,
    write_config,
)

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 3
KILLS = 3


def _produce(bootstrap: str, topic: str, values: list[tuple[str | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=5)
    for key, value in values:
        producer.send(topic, key=key.encode() if key else None, value=value)
    producer.flush()
    producer.close()


def _events(n: int, n_keys: int = 20, label_fraction: float = 1.0) -> list[dict[str, object]]:
    cfg = SyntheticSourceConfig(n_keys=n_keys, max_events=n, label_fraction=label_fraction)
    return [e.event for e in build_family(cfg)]


MALFORMED = [
    b"{not json",
    b"\xff\xfe\xfd",
    b"[1,2,3]",
    orjson.dumps({"id": "m1", "key": "k", "x": [1, 2]}),
    orjson.dumps({"id": "m2", "key": "k", "x": ["a"] * 8}),
    orjson.dumps({"key": "k", "x": [0] * 8}),
    orjson.dumps({"id": "m3", "key": "k", "x": [0] * 8, "y": 7}),
    b'{"id":"m4","key":"k","x":[NaN,0,0,0,0,0,0,0]}',
]


def test_broker_script_is_idempotent(kafka_bootstrap):
    script = str(ROOT / "scripts" / "kafka.sh")
    again = subprocess.run(
        [script, "start"], capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0
    assert "already running" in again.stderr
    status = subprocess.run(
        [script, "status"], capture_output=True, text=True, timeout=30, check=False
    )
    assert status.returncode == 0
    assert "running (pid" in status.stdout


def test_every_event_predicted_and_every_malformed_record_dead_lettered(kafka_bootstrap, tmp_path):
    prefix = unique_prefix()
    cfg = load_config(
        overrides={
            "source": {"kind": "kafka", "batch_size": 500},
            "kafka": kafka_overrides(kafka_bootstrap, prefix, PARTITIONS),
            "checkpoint": {"dir": str(tmp_path / "ck"), "every_events": 1000},
        },
        env={},
    )
    reg = CollectorRegistry()
    daemon = Daemon(cfg, reg)  # creates the topics
    events = _events(3000)
    values: list[tuple[str | None, bytes]] = [(str(e["key"]), orjson.dumps(e)) for e in events]
    for i, bad in enumerate(MALFORMED):
        values.insert(300 * i + 7, ("k", bad))
    _produce(kafka_bootstrap, cfg.kafka.topics.events, values)

    runner = threading.Thread(target=daemon.run)
    runner.start()
    deadline = time.monotonic() + 90
    while daemon.events_seen < len(values) and time.monotonic() < deadline:
        time.sleep(0.2)
    daemon.request_stop()
    runner.join(timeout=60)
    assert daemon.events_seen == len(values)

    preds = read_topic(kafka_bootstrap, cfg.kafka.topics.predictions, len(events))
    assert len(preds) == len(events)
    assert {p["event_id"] for p in preds} == {e["id"] for e in events}
    assert all(0.0 <= p["p"] <= 1.0 and p["model_version"] == 0 for p in preds)
    per_key: dict[str, list[int]] = {}
    for p in preds:  # read partition by partition: each key's predictions stay in event order
        per_key.setdefault(p["key"], []).append(int(p["event_id"].rsplit("-", 1)[1]))
    assert all(ids == sorted(ids) for ids in per_key.values())

    dead = read_topic(kafka_bootstrap, cfg.kafka.topics.dead_letter, len(MALFORMED))
    assert len(dead) == len(MALFORMED)
    import base64

    assert sorted(base64.b64decode(d["original_b64"]) for d in dead) == sorted(MALFORMED)
    assert all(d["topic"] == cfg.kafka.topics.events and d["offset"] >= 0 for d in dead)
    assert {d["reason"] for d in dead} >= {
        "invalid_json",
        "invalid_utf8",
        "not_an_object",
        "dimension_mismatch",
        "missing_field",
    }

    assert sample(reg, "streamlearn_events_total") == len(events)
    assert sample(reg, "streamlearn_predictions_total") == len(events)
    assert sample(reg, "streamlearn_labels_total") == len(events)
    dl = sum(
        s.value
        for f in reg.collect()
        if f.name == "streamlearn_dead_letters"
        for s in f.samples
        if s.name.endswith("_total")
    )
    assert dl == len(MALFORMED)
    # Stopping drained, checkpointed and committed everything.
    ends = end_offsets(kafka_bootstrap, cfg.kafka.topics.events, PARTITIONS)
    assert committed_offsets(kafka_bootstrap, cfg.kafka.group_id) == ends
    ck = CheckpointStore(tmp_path / "ck").load_latest()
    assert ck is not None
    assert ck.offsets == ends


def test_simulate_produces_keyed_events_and_keeps_withheld_truth(kafka_bootstrap, tmp_path):
    prefix = unique_prefix()
    cfg_path = write_config(
        tmp_path / "sim.yaml",
        {
            "source": {"kind": "kafka", "synthetic": {"n_keys": 7}},
            "kafka": kafka_overrides(kafka_bootstrap, prefix, PARTITIONS),
        },
    )
    truth = tmp_path / "truth.jsonl"
    res = run_cli(
        "simulate",
        "--config",
        str(cfg_path),
        "--events",
        "2000",
        "--withhold",
        "0.25",
        "--truth",
        str(truth),
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    assert "produced 2,000 events" in res.stderr
    got = read_topic(kafka_bootstrap, f"{prefix}.events", 2000)
    assert len(got) == 2000
    assert len({e["key"] for e in got}) == 7
    withheld = [e for e in got if "y" not in e]
    lines = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    assert len(lines) == len(withheld)
    assert 0.18 < len(withheld) / 2000 < 0.32
    expected = {
        e.event["id"]: e.y_true
        for e in build_family(SyntheticSourceConfig(n_keys=7, max_events=2000, label_fraction=0.75))
    }
    assert all(expected[t["event_id"]] == t["y"] for t in lines)


def _every_key(ck_dir: Path) -> dict[str, np.ndarray]:
    """Every key's weights after a run: resident in the newest checkpoint, else spilled."""
    ck = CheckpointStore(ck_dir).load_latest()
    assert ck is not None
    learner = ck.state["learner"]
    out = dict(zip(key_names(learner), learner["params"].numpy(), strict=True))
    spill = SpillStore(ck_dir / SPILL_FILE)
    rows = spill.get([f"k{j:05d}" for j in range(10_000)])
    out.update({k: r.params for k, r in rows.items() if k not in out})
    return out


def run_alone(cfg_path: Path, n_events: int, ck_dir: Path) -> dict[str, np.ndarray]:
    """One daemon over a topic to ``n_events``, uninterrupted; every key's final weights."""
    res = subprocess.run(
        [*_cli("run", cfg_path), "--max-events", str(n_events)],
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return _every_key(ck_dir)


def _cli(command: str, cfg_path: Path) -> list[str]:
    return [sys.executable, "-m", "streamlearn", command, "--config", str(cfg_path)]


def _wait_ready(port: int, proc: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        url = f"http://127.0.0.1:{port}/readyz"  # OSError: not listening yet, or 503
        with contextlib.suppress(OSError), urllib.request.urlopen(url) as resp:
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise AssertionError("daemon never became ready")


@pytest.mark.slow
def test_kill_9_mid_stream_loses_nothing_and_never_commits_ahead(
    kafka_bootstrap, tmp_path, free_port
):
    """Three kill -9 at random points while keys are being evicted (500 keys, 150 in
    memory) and restored. Every labelled event is learned exactly once (checkpoint + replay),
    and, since a key's learning here depends only on its own events (no standardiser, shared
    model, drift resets or curvature: per-poll quantities that change with poll boundaries),
    every key ends with the weights of an uncrashed run over the same topic."""
    prefix = unique_prefix()
    ck_dir = tmp_path / "ck"
    n_events, label_fraction, n_keys = 60_000, 0.8, 500
    kafka = kafka_overrides(kafka_bootstrap, prefix, PARTITIONS)
    checkpoint = {"dir": str(ck_dir), "every_events": 1500, "every_seconds": 0.3}
    tree = {
        "source": {
            "kind": "kafka",
            "batch_size": 500,
            "synthetic": {"n_keys": n_keys, "label_fraction": 0.8},
        },
        "kafka": kafka,
        "checkpoint": checkpoint,
        "metrics": {"port": free_port},
        "service": {"status_interval_s": 1.0},
        "model": {"standardize": False},
        "drift": {"global": False, "per_key": False},
        "learner": {"max_keys": 150, "shared": {"enabled": False}, "curvature": {"enabled": False}},
    }
    cfg_path = write_config(tmp_path / "daemon.yaml", tree)
    daemon_cmd = _cli("run", cfg_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    producer = subprocess.Popen(
        [*_cli("simulate", cfg_path), "--events", str(n_events), "--rate", "3000", "--no-progress"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    group = f"{prefix}-group"
    store = CheckpointStore(ck_dir)
    rng = random.Random(7)
    samples = 0
    kills: list[int] = []  # events covered by the last checkpoint at each kill
    for _ in range(KILLS):
        daemon = subprocess.Popen(daemon_cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        _wait_ready(free_port, daemon)
        # A restarted member gets its partitions after the group rebalances (the killed one
        # is dropped at its session timeout): kill only once this run has made progress.
        before = kills[-1] if kills else 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            latest = store.load_latest()
            if latest is not None and sum(latest.offsets.values()) > before:
                break
            time.sleep(0.1)
        # While it runs, committed offsets must never be ahead of a saved checkpoint.
        deadline = time.monotonic() + rng.uniform(0.3, 2.0)
        while time.monotonic() < deadline:
            committed = committed_offsets(kafka_bootstrap, group)
            latest = store.load_latest()
            if committed:
                assert latest is not None
                for part, off in committed.items():
                    assert off <= latest.offsets.get(part, -1), (part, off, latest.offsets)
                samples += 1
            time.sleep(0.05)
        daemon.send_signal(signal.SIGKILL)  # at a random point: mid-poll, mid-checkpoint...
        daemon.wait(timeout=30)
        crashed_at = store.load_latest()
        assert crashed_at is not None
        committed = committed_offsets(kafka_bootstrap, group)
        assert all(off <= crashed_at.offsets.get(p, -1) for p, off in committed.items())
        kills.append(sum(crashed_at.offsets.values()))
    assert samples > 5
    assert kills == sorted(set(kills)), f"every kill at a new point: {kills}"
    assert kills[0] < n_events, "the first crash came after the stream ended"
    assert producer.wait(timeout=120) == 0

    second = subprocess.Popen(daemon_cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    _wait_ready(free_port, second)
    ends = end_offsets(kafka_bootstrap, f"{prefix}.events", PARTITIONS)
    assert sum(ends.values()) == n_events
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and committed_offsets(kafka_bootstrap, group) != ends:
        time.sleep(0.3)
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert "resumed from checkpoint" in err

    final = store.load_latest()
    assert final is not None
    assert final.offsets == ends
    labelled = sum(
        1
        for e in build_family(
            SyntheticSourceConfig(n_keys=n_keys, max_events=n_events, label_fraction=label_fraction)
        )
        if "y" in e.event
    )
    # Every labelled event is in the final state exactly once (resume = checkpoint + replay).
    assert final.state["totals"]["labels"] == labelled
    assert final.state["totals"]["events"] == n_events
    preds = read_topic(kafka_bootstrap, f"{prefix}.predictions", n_events)
    assert {p["event_id"] for p in preds} == {f"42-{i}" for i in range(n_events)}
    # The same topic read once more, without crashes, by another group into its own store.
    kafka["group_id"] = f"{prefix}-uncrashed"
    checkpoint["dir"] = str(tmp_path / "uncrashed")
    calm = write_config(tmp_path / "uncrashed.yaml", tree)
    calm_w = run_alone(calm, n_events, tmp_path / "uncrashed")
    crashed_w = _every_key(ck_dir)
    assert len(calm_w) == n_keys
    # At most 150 keys stay in memory (or a poll's own keys, when it holds more).
    assert len(key_names(final.state["learner"])) < n_keys == len(crashed_w)
    assert sorted(crashed_w) == sorted(calm_w)
    for key, w in calm_w.items():
        np.testing.assert_allclose(crashed_w[key], w, rtol=1e-5, atol=1e-6)
    gap = max(float(np.abs(crashed_w[k] - w).max()) for k, w in calm_w.items())
    print(  # shown with pytest -s: the figures quoted in the issue note
        f"\ncrash test: {n_events} events, {labelled} labelled; killed {KILLS} times with "
        f"{kills} events covered by the last checkpoint; {samples} commit samples, none ahead; "
        f"after restart {final.state['totals']['labels']} labels in the final state, "
        f"{len(preds)} predictions for {len({p['event_id'] for p in preds})} distinct events; "
        f"{len(crashed_w)} keys ({len(final.state['learner']['keys'])} resident, the rest "
        f"spilled) equal to an uncrashed run: max |dw| {gap:.2e}"
    )

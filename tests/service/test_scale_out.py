"""Scale-out on the real broker: three daemons in one consumer group with key-state hand-off
(kafka.handoff, streamlearn.service.handoff); one is killed with SIGKILL mid-stream."""

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamlearn.config import load_config
from streamlearn.service.handoff import StateTopic
from streamlearn.state.checkpoint import CheckpointStore
from tests.helpers import ROOT, free_tcp_port, run_cli
from tests.io.test_kafka import _cli, _wait_ready, run_alone
from tests.kafka_util import (
    committed_offsets,
    end_offsets,
    kafka_overrides,
    read_topic,
    unique_prefix,
    write_config,
)

PARTITIONS = 6


def _tree(kafka: dict[str, Any], ck_dir: Path, port: int, handoff: bool) -> dict[str, Any]:
    # With the network default this failed once (3 of 90 keys 0.04-0.06 away from the
    # uninterrupted daemon's), in a run during which the learner's code was being edited
    # (the daemons here import it when they start); it passed 7 runs of 7 since, 2 of them
    # with both cores busy. Not batching: key weights are bitwise equal across poll sizes.
    return {
        "source": {"kind": "kafka", "batch_size": 200, "synthetic": {"n_keys": 90}},
        "kafka": {
            **kafka,
            "handoff": handoff,
            "meta_init_check_s": 0.5,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
        "checkpoint": {"dir": str(ck_dir), "every_events": 1000, "every_seconds": 0.5},
        "metrics": {"port": port},
        "service": {"status_interval_s": 1.0},
        # A key's learning depends on its own events only (as in the kill -9 test), so the
        # replicas' result can be held equal to one uninterrupted daemon's, key by key.
        "model": {"standardize": False},
        "drift": {"global": False, "per_key": False},
        # No proximal pull either: the meta-init published mid-run moves theta0, which
        # would change every key's steps from then on (by design), here and not there.
        "learner": {
            "proximal_lambda": 0.0,
            "shared": {"enabled": False},
            "curvature": {"enabled": False},
        },
    }


def _version(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith("streamlearn_model_version "):
            return float(line.split()[1])
    return -1.0


@pytest.mark.slow
def test_three_replicas_kill_one_key_state_moves_and_nothing_is_lost(kafka_bootstrap, tmp_path):
    prefix = unique_prefix()
    n_events = 48_000
    kafka = kafka_overrides(kafka_bootstrap, prefix, PARTITIONS)
    kafka["topics"]["state"] = f"{prefix}.key-state"
    kafka["topics"]["meta_init"] = f"{prefix}.meta-init"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    group = kafka["group_id"]
    names = ("a", "b", "c")
    ports = {n: free_tcp_port() for n in names}
    cfgs = {
        n: write_config(tmp_path / f"{n}.yaml", _tree(kafka, tmp_path / n, ports[n], True))
        for n in names
    }
    producer = subprocess.Popen(
        [*_cli("simulate", cfgs["a"]), "--events", str(n_events), "--rate", "2000"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs: dict[str, subprocess.Popen[str]] = {}
    logs = {n: open(tmp_path / f"{n}.log", "w") for n in names}  # noqa: SIM115
    for n in names:
        procs[n] = subprocess.Popen(
            _cli("run", cfgs[n]), cwd=ROOT, env=env, stderr=logs[n], text=True
        )
        _wait_ready(ports[n], procs[n])
        time.sleep(2.0)  # let the group settle with this member before the next joins

    def owned(name: str) -> set[int]:
        ck = CheckpointStore(tmp_path / name).load_latest()
        return set() if ck is None else {int(k.split(":")[1]) for k in ck.offsets}

    # Wait until all three own partitions and have checkpointed them, then kill one.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(owned(n) for n in names):
        time.sleep(0.2)
    # A meta-init version published once reaches every replica (installed for new keys and
    # resets; every key exists by now, so the per-key comparison below is unaffected).
    published = run_cli(
        "meta-train",
        "--config",
        str(cfgs["a"]),
        "--out",
        str(tmp_path / "m.pt"),
        "--events",
        "3000",
        "--steps",
        "5",
        "--version",
        "7",
        "--publish",
        "--no-progress",
    )
    assert published.returncode == 0, published.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(_version(ports[n]) == 7 for n in names):
        time.sleep(0.3)
    assert [_version(ports[n]) for n in names] == [7, 7, 7]
    before_kill = committed_offsets(kafka_bootstrap, group)
    procs["a"].send_signal(signal.SIGKILL)
    procs["a"].wait(timeout=30)
    killed_at = time.monotonic()
    assert producer.wait(timeout=120) == 0
    ends = end_offsets(kafka_bootstrap, f"{prefix}.events", PARTITIONS)
    assert sum(ends.values()) == n_events
    # Rebalance time: until every partition's committed offset moved past its value at the
    # kill (those of the killed member's partitions included), or is at the end.
    moved_at = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = committed_offsets(kafka_bootstrap, group)
        moved = [done.get(k, 0) > v or done.get(k, 0) == ends[k] for k, v in before_kill.items()]
        if moved_at is None and all(moved):
            moved_at = time.monotonic()
        if done == ends:
            break
        time.sleep(0.2)
    assert committed_offsets(kafka_bootstrap, group) == ends
    assert [_version(ports[n]) for n in ("b", "c")] == [7, 7]
    for n in ("b", "c"):
        procs[n].send_signal(signal.SIGTERM)
        assert procs[n].wait(timeout=60) == 0
    for f in logs.values():
        f.close()
    log_b = (tmp_path / "b.log").read_text() + (tmp_path / "c.log").read_text()
    assert "took over" in log_b

    # Every event predicted at least once; the ones after the killed member's last
    # checkpoint twice (replayed by the new owner).
    preds = read_topic(kafka_bootstrap, f"{prefix}.predictions", n_events)
    ids = [p["event_id"] for p in preds]
    assert set(ids) == {f"42-{i}" for i in range(n_events)}
    replayed = len(ids) - n_events
    # One daemon alone over the same topic (another group, no hand-off).
    calm = dict(kafka, group_id=f"{prefix}-calm")
    calm_cfg = write_config(
        tmp_path / "calm.yaml", _tree(calm, tmp_path / "calm", free_tcp_port(), False)
    )
    calm_w = run_alone(calm_cfg, n_events, tmp_path / "calm")
    # Every key's final state, whichever replica owned it last, is its newest record in
    # the compacted state topic (published at each checkpoint, the stopping ones included).
    cfg = load_config(path=cfgs["b"], env={})
    topic = StateTopic(cfg.kafka)
    try:
        state = topic.read(list(range(PARTITIONS)))
    finally:
        topic.close()
    replicas = {k: row.params for k, (_, row) in state.items()}
    assert not any(row.info["offset"] for _, row in state.values())  # no shared model here
    assert sorted(replicas) == sorted(calm_w)
    gaps = {k: float(np.abs(replicas[k] - w).max()) for k, w in calm_w.items()}
    gap = max(gaps.values())
    off = {
        k: (state[k][0], f"{gaps[k]:.2e}")
        for k, w in calm_w.items()
        if not np.allclose(replicas[k], w, rtol=1e-5, atol=1e-6)
    }
    assert not off, f"keys (partition, max |dw|) that differ from one daemon's: {off}"
    assert moved_at is not None
    print(
        f"\nscale-out: {n_events} events over {PARTITIONS} partitions, 3 replicas, one killed "
        f"(-9): every partition's commits moved on {moved_at - killed_at:.1f} s after the "
        f"kill (session timeout 6 s); {replayed} events predicted twice (replayed after "
        f"rebalances); {len(replicas)} keys in the state topic equal to one uninterrupted "
        f"daemon's: max |dw| {gap:.2e}"
    )

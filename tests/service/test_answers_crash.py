"""Label answers survive kill -9 (the real broker of scripts/kafka.sh): with an oracle
answering every query live and the daemon killed twice mid-stream, every query ever sent
and answered is learned exactly once, whichever run sent it."""

import os
import signal
import subprocess
import time

import pytest

from streamlearn.state.checkpoint import CheckpointStore
from tests.active.test_active_kafka import _cmd
from tests.io.test_kafka import _wait_ready
from tests.kafka_util import (
    committed_offsets,
    end_offsets,
    kafka_overrides,
    read_topic,
    unique_prefix,
    write_config,
)

PARTITIONS = 2
N_EVENTS = 12_000


@pytest.mark.slow
def test_every_answered_query_is_learned_once_across_kill_9(kafka_bootstrap, tmp_path, free_port):
    prefix = unique_prefix()
    ck_dir = tmp_path / "ck"
    cfg = write_config(
        tmp_path / "answers.yaml",
        {
            "source": {"kind": "kafka", "synthetic": {"n_keys": 20}},
            "kafka": kafka_overrides(kafka_bootstrap, prefix, PARTITIONS),
            "active": {
                "enabled": True,
                "policy": "uncertainty",
                "budget": 0.1,
                "expiry_s": 600,
                "pacing": {"warmup_events": 0},
            },
            "checkpoint": {"dir": str(ck_dir), "every_events": 2000, "every_seconds": 2.0},
            "metrics": {"port": free_port},
        },
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    truth = tmp_path / "truth.jsonl"
    producer = subprocess.Popen(
        [
            *_cmd("simulate", "-c", str(cfg), "--events", str(N_EVENTS), "--rate", "1500"),
            *("--withhold", "1", "--truth", str(truth), "--no-progress"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = _cmd("run", "-c", str(cfg))
    daemon = subprocess.Popen(run, env=env, stderr=subprocess.PIPE, text=True)
    _wait_ready(free_port, daemon)
    labeller = subprocess.Popen(
        [*_cmd("label", "-c", str(cfg), "--oracle", str(truth)), "--idle-timeout", "20"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = CheckpointStore(ck_dir)
    try:
        for _ in range(2):  # kill -9 once answers are flowing, a while after a checkpoint
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                latest = store.load_latest()
                if latest is not None and time.time() - latest.path.stat().st_mtime > 1.0:
                    break
                time.sleep(0.1)
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=30)
            daemon = subprocess.Popen(run, env=env, stderr=subprocess.PIPE, text=True)
            _wait_ready(free_port, daemon)
        assert producer.wait(timeout=120) == 0
        assert labeller.wait(timeout=180) == 0
        ends = end_offsets(kafka_bootstrap, f"{prefix}.labels", PARTITIONS)
        ends |= end_offsets(kafka_bootstrap, f"{prefix}.events", PARTITIONS)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if committed_offsets(kafka_bootstrap, f"{prefix}-group") == ends:
                break
            time.sleep(0.3)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
        if labeller.poll() is None:
            labeller.kill()
    assert daemon.returncode == 0, err
    assert "reopened" in err or "resumed from checkpoint" in err
    answers = read_topic(kafka_bootstrap, f"{prefix}.labels", 1, timeout_s=10)
    answered = {a["query_id"] for a in answers}
    final = store.load_latest()
    assert final is not None
    labels = int(final.state["totals"]["labels"])
    assert labels == len(answered), (labels, len(answered))
    learned = int(final.state["active"]["counts"]["joined"])
    sent = read_topic(kafka_bootstrap, f"{prefix}.queries", 1, timeout_s=10)
    print(
        f"queries sent {len(sent)} ({len({q['query_id'] for q in sent})} distinct), "
        f"answered {len(answered)} distinct, learned {learned}, labels {labels}"
    )
    assert len(answered) > 200
    assert learned == len(answered) == labels

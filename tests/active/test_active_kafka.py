"""Active learning end to end on the real broker: simulate withholds every label, the daemon
queries, the oracle labeller answers, the daemon learns; counts agree across topics and
metrics; malformed and unknown answers do no harm. And the interactive labeller."""

import signal
import subprocess
import sys
import time
import urllib.request

import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, run_cli
from tests.io.test_kafka import _produce, _wait_ready
from tests.kafka_util import kafka_overrides, read_topic, unique_prefix, write_config

PARTITIONS = 2
N_EVENTS = 3000


def _metrics(port: int) -> "Samples":
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _value(m: Samples, name: str, **labels: str) -> float:
    return float(m.get((name, tuple(sorted(labels.items()))), 0.0))


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamlearn", *args]


def test_queries_answers_and_learning_agree_across_topics_and_metrics(
    kafka_bootstrap, tmp_path, free_port
):
    prefix = unique_prefix()
    kafka = kafka_overrides(kafka_bootstrap, prefix, PARTITIONS)
    cfg = write_config(
        tmp_path / "active.yaml",
        {
            "source": {"kind": "kafka", "synthetic": {"n_keys": 10}},
            "kafka": kafka,
            # No warm-up: this stream is shorter than its payback, and the share is checked.
            "active": {
                "enabled": True,
                "policy": "combined",
                "budget": 0.1,
                "expiry_s": 600,
                "pacing": {"warmup_events": 0},
            },
            "checkpoint": {"dir": str(tmp_path / "ck"), "every_events": 500},
            "service": {"status_interval_s": 1.0},
        },
    )
    truth = tmp_path / "truth.jsonl"
    sim = run_cli(
        "simulate",
        "-c",
        str(cfg),
        "--events",
        str(N_EVENTS),
        "--withhold",
        "1",
        "--truth",
        str(truth),
        "--no-progress",
    )
    assert sim.returncode == 0, sim.stderr
    assert len(truth.read_bytes().splitlines()) == N_EVENTS
    daemon = subprocess.Popen(
        _cmd("run", "-c", str(cfg), "--metrics-port", str(free_port)),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    labeller = None
    try:
        _wait_ready(free_port, daemon)
        labeller = subprocess.Popen(
            _cmd(
                "label",
                "-c",
                str(cfg),
                "--oracle",
                str(truth),
                "--delay",
                "0.2",
                "--idle-timeout",
                "15",
            ),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        m = _metrics(free_port)
        while time.monotonic() < deadline:
            m = _metrics(free_port)
            asked = sum(
                _value(m, "streamlearn_queries_total", reason=r) for r in ("combined", "explore")
            )
            ok = _value(m, "streamlearn_label_answers_total", outcome="ok")
            learned = _value(m, "streamlearn_labels_total")
            # A scrape can fall inside the poll that joins answers and then learns from them.
            if _value(m, "streamlearn_events_total") == N_EVENTS and 0 < ok == asked == learned:
                break
            time.sleep(0.5)
        assert _value(m, "streamlearn_events_total") == N_EVENTS
        assert ok == asked > 0
        assert 0.06 < asked / N_EVENTS < 0.16, asked
        # Learned from exactly the answers (no label came with the events).
        assert _value(m, "streamlearn_labels_total") == ok
        assert _value(m, "streamlearn_label_latency_seconds_count") == ok
        assert _value(m, "streamlearn_pending_queries") == 0
        # Stray answers: unknown ids, malformed records. Counted, dead-lettered, harmless.
        learned = _value(m, "streamlearn_labels_total")
        bad: list[tuple[str | None, bytes]] = [
            ("k0", orjson.dumps({"query_id": "q-never-asked", "y": 1})),
            ("k0", b"{not json"),
            ("k1", orjson.dumps({"query_id": "q-0", "y": 5})),
            ("k1", orjson.dumps({"y": 1})),
        ]
        _produce(kafka_bootstrap, f"{prefix}.labels", bad)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = _metrics(free_port)
            if _value(m, "streamlearn_label_answers_total", outcome="malformed") == 3:
                break
            time.sleep(0.5)
        assert _value(m, "streamlearn_label_answers_total", outcome="malformed") == 3
        assert _value(m, "streamlearn_label_answers_total", outcome="unknown") == 1
        assert _value(m, "streamlearn_labels_total") == learned
        assert _value(m, "streamlearn_up") == 1
        assert labeller.wait(timeout=60) == 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon_err = daemon.communicate(timeout=60)[1]
        if labeller is not None and labeller.poll() is None:
            labeller.kill()
    assert daemon.returncode == 0, daemon_err
    lab_err = labeller.stderr.read() if labeller.stderr else ""
    # Topics agree with the metrics: every query on the query topic, every answer on the
    # labels topic, the malformed ones on the dead-letter topic with their reasons.
    queries = read_topic(kafka_bootstrap, f"{prefix}.queries", int(asked))
    assert len(queries) == asked
    assert len({q["event_id"] for q in queries}) == len(queries)
    assert {q["reason"] for q in queries} <= {"combined", "explore"}
    assert f"sent {int(asked):,} answers" in lab_err, lab_err
    dead = read_topic(kafka_bootstrap, f"{prefix}.dead-letter", 3)
    assert sorted(d["reason"] for d in dead) == ["invalid_json", "invalid_label", "missing_field"]
    assert all(d["topic"] == f"{prefix}.labels" for d in dead)


def test_interactive_labeller_shows_queries_and_sends_typed_labels(kafka_bootstrap, tmp_path):
    prefix = unique_prefix()
    cfg = write_config(
        tmp_path / "label.yaml", {"kafka": kafka_overrides(kafka_bootstrap, prefix, PARTITIONS)}
    )
    queries = [
        {
            "query_id": f"q-e{i}",
            "event_id": f"e{i}",
            "key": f"k{i}",
            "x": [0.5] * 8,
            "score": 0.9,
            "reason": "uncertainty",
            "p": 0.5,
            "model_version": 0,
            "expires_at": time.time() + 600,
        }
        for i in range(3)
    ]
    _produce(
        kafka_bootstrap, f"{prefix}.queries", [(str(q["key"]), orjson.dumps(q)) for q in queries]
    )
    res = subprocess.run(
        _cmd("label", "-c", str(cfg), "--max-answers", "2", "--labeller", "ana"),
        cwd=ROOT,
        input="1\nmaybe\ns\n0\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "key=k0" in res.stdout
    assert "why: uncertainty" in res.stdout
    assert "not a label: 'maybe'" in res.stdout
    answers = read_topic(kafka_bootstrap, f"{prefix}.labels", 2)
    assert sorted((a["query_id"], a["y"]) for a in answers) == [("q-e0", 1), ("q-e2", 0)]
    assert all(a["labeller"] == "ana" for a in answers)
    assert "sent 2 answers, skipped 1" in res.stderr

"""End-to-end throughput through the real broker, beside the in-process figure, in one run.

Phases, each in a fresh process with one torch thread, on the same stream (the default
drifting family, ``--keys`` keys (1,000), every event labelled), median over ``--repeats``:

- ``in-process``: the daemon on the embedded bus (decode, learn, drift, regret, metrics);
- ``produce``: ``streamlearn simulate``'s producer writing the stream into a topic;
- ``consume raw``: kafka-python's consumer alone, polling the topic to the end (no decoding):
  the ceiling the client library sets;
- ``consume+decode``: the same plus the wire-contract decoder;
- ``daemon via kafka``: the daemon consuming the topic (checkpoints and commits on, no
  predictions produced), then ``... + predictions`` with the predictions topic on.

Each daemon phase reports the consumer lag (end offsets minus committed offsets) when it
stops. Needs the broker: ``scripts/kafka.sh start``.

    .venv/bin/python -m bench.kafka_throughput --events 200000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = "127.0.0.1:9092"
PARTITIONS = 4


def _config(prefix: str, ck_dir: str, emit: bool) -> Any:
    from streamlearn.config import load_config
    from tests.kafka_util import kafka_overrides

    return load_config(
        overrides={
            "source": {"kind": "kafka", "batch_size": 2000, "synthetic": {"rate": 0}},
            "kafka": {
                **kafka_overrides(BOOTSTRAP, prefix, PARTITIONS),
                "group_id": f"{prefix}-{uuid.uuid4().hex[:6]}",
                "emit_predictions": emit,
            },
            "checkpoint": {"dir": ck_dir, "every_events": 50_000, "every_seconds": 5.0},
            "metrics": {"enabled": False},
        },
        env={},
    )


SETTINGS = {"keys": 1000}  # --keys


def _stream(n: int) -> list[Any]:
    from streamlearn.config import SyntheticSourceConfig
    from streamlearn.io.synthetic import build_family

    return list(build_family(SyntheticSourceConfig(max_events=n, n_keys=SETTINGS["keys"])))


def phase_in_process(n: int, prefix: str) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from streamlearn.config import load_config
    from streamlearn.daemon import Daemon
    from streamlearn.io.base import NullSink
    from streamlearn.io.memory import MemorySource

    items = _stream(n)
    over = {"source": {"batch_size": 2000, "synthetic": {"n_keys": SETTINGS["keys"]}}}
    cfg = load_config(overrides=over, env={})
    daemon = Daemon(cfg, CollectorRegistry(), source=MemorySource(iter(items)), sink=NullSink())
    t0 = time.perf_counter()
    daemon.run()
    return {"per_second": n / (time.perf_counter() - t0)}


def phase_produce(n: int, prefix: str) -> dict[str, float]:
    from streamlearn.simulate import simulate

    items = _stream(n)
    cfg = _config(prefix, "", emit=False)
    report = simulate(cfg, iter(items), total=n, rate=0.0, progress=False)
    return {"per_second": report.produced / report.seconds}


def phase_consume(n: int, prefix: str, decode: bool) -> dict[str, float]:
    from kafka import KafkaConsumer

    from streamlearn.messages import EventDecoder, Origin, RawRecord

    consumer = KafkaConsumer(
        f"{prefix}.events",
        bootstrap_servers=[BOOTSTRAP],
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2000,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    dec = EventDecoder(n_features=8)
    got = 0
    consumer.poll(timeout_ms=5000, max_records=1)  # join and fetch metadata before timing
    consumer.seek_to_beginning()
    t0 = time.perf_counter()
    while got < n:
        batches = consumer.poll(timeout_ms=1000, max_records=2000)
        for tp, recs in batches.items():
            got += len(recs)
            if decode:
                dec.decode(
                    [RawRecord(r.value, Origin(tp.topic, tp.partition, r.offset)) for r in recs]
                )
    seconds = time.perf_counter() - t0
    consumer.close()
    return {"per_second": n / seconds}


def phase_daemon(n: int, prefix: str, emit: bool) -> dict[str, float]:
    import threading

    from prometheus_client import CollectorRegistry

    from streamlearn.daemon import Daemon
    from tests.kafka_util import committed_offsets, end_offsets

    with tempfile.TemporaryDirectory() as ck:
        cfg = _config(prefix, ck, emit)
        daemon = Daemon(cfg, CollectorRegistry())
        runner = threading.Thread(target=daemon.run)
        t0 = time.perf_counter()
        runner.start()
        while daemon.events_seen < n:
            time.sleep(0.005)
        seconds = time.perf_counter() - t0
        daemon.request_stop()
        runner.join()
        ends = end_offsets(BOOTSTRAP, cfg.kafka.topics.events, PARTITIONS)
        done = committed_offsets(BOOTSTRAP, cfg.kafka.group_id)
        lag = sum(ends.values()) - sum(done.get(k, 0) for k in ends)
    return {"per_second": n / seconds, "lag": float(lag)}


def phase_paced(n: int, prefix: str, rate: float = 10_000.0) -> dict[str, float]:
    """The daemon (predictions on, 500 records per poll) reading a topic produced at
    ``rate`` events/s while it runs. Per poll: processing time (poll returned -> predictions
    handed to the producer) and poll-to-commit time (poll returned -> the first offset
    commit that covers the poll's records; commits follow checkpoints, every 1 s here)."""
    import threading

    from prometheus_client import CollectorRegistry

    from streamlearn.daemon import Daemon
    from streamlearn.simulate import simulate

    items = _stream(n)
    with tempfile.TemporaryDirectory() as ck:
        cfg = _config(prefix + "p", ck, emit=True)
        cfg = cfg.model_copy(
            update={
                "source": cfg.source.model_copy(update={"batch_size": 500}),
                "checkpoint": cfg.checkpoint.model_copy(
                    update={"every_events": 10_000_000, "every_seconds": 1.0}
                ),
            }
        )
        daemon = Daemon(cfg, CollectorRegistry())
        src = daemon.source
        polls: list[tuple[float, dict[str, int]]] = []
        commits: list[tuple[float, dict[str, int]]] = []
        busy: list[float] = []
        poll, commit, step = src.poll, src.commit, daemon.step

        def timed_poll(max_records: int, timeout_s: float) -> Any:
            out = poll(max_records, timeout_s)
            if out:
                polls.append((time.perf_counter(), src.positions()))
            return out

        def timed_commit(positions: Any = None) -> bool:
            ok = commit(positions)
            if ok:
                commits.append((time.perf_counter(), dict(positions or src.positions())))
            return ok

        def timed_step(max_records: int | None = None) -> int:
            got = step(max_records)
            if got:
                busy.append(time.perf_counter() - polls[-1][0])
            return got

        src.poll, src.commit, daemon.step = timed_poll, timed_commit, timed_step  # type: ignore[method-assign]
        runner = threading.Thread(target=daemon.run)
        runner.start()
        report = simulate(cfg, iter(items), total=n, rate=rate, progress=False)
        while daemon.events_seen < n:
            time.sleep(0.01)
        time.sleep(1.5)  # one more checkpoint and commit
        daemon.request_stop()
        runner.join()
    to_commit = []
    for t, pos in polls:
        for tc, cpos in commits:
            if tc >= t and all(cpos.get(k, -1) >= v for k, v in pos.items()):
                to_commit.append(tc - t)
                break
    q = statistics.quantiles
    return {
        "per_second": report.produced / report.seconds,
        "p50_poll_ms": 1000 * statistics.median(busy),
        "p99_poll_ms": 1000 * q(busy, n=100)[98],
        "p50_commit_ms": 1000 * statistics.median(to_commit),
        "p99_commit_ms": 1000 * q(to_commit, n=100)[98],
    }


PHASES: dict[str, Callable[[int, str], dict[str, float]]] = {
    "in-process": phase_in_process,
    "produce": phase_produce,
    "consume raw": lambda n, p: phase_consume(n, p, decode=False),
    "consume+decode": lambda n, p: phase_consume(n, p, decode=True),
    "daemon via kafka": lambda n, p: phase_daemon(n, p, emit=False),
    "daemon via kafka + predictions": lambda n, p: phase_daemon(n, p, emit=True),
    "daemon at 10k/s (paced)": phase_paced,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--worker", nargs=3, metavar=("PHASE", "N", "PREFIX"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    SETTINGS["keys"] = args.keys
    if args.worker:
        import torch

        torch.set_num_threads(1)
        phase, n, prefix = args.worker
        print(json.dumps(PHASES[phase](int(n), prefix)))
        return 0
    subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "start"], check=True)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in PHASES}
    for rep in range(args.repeats):
        prefix = f"bench{uuid.uuid4().hex[:8]}"  # a fresh topic per repeat
        for name in PHASES:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.kafka_throughput",
                    "--keys",
                    str(args.keys),
                    "--worker",
                    name,
                    str(args.events),
                    prefix,
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=False,
            )
            if out.returncode != 0:
                print(f"{name} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                return 1
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"repeat {rep + 1}: {name}: {results[name][-1]}", file=sys.stderr)
    base = statistics.median(r["per_second"] for r in results["in-process"])
    what = f"{args.events:,} events ({args.keys:,} keys, all labelled)"
    print(f"\n{what}, median of {args.repeats} runs\n")
    print("| phase | events/s (median) | min - max | x in-process | lag at stop |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        speeds = [r["per_second"] for r in runs]
        med = statistics.median(speeds)
        lag = "-" if "lag" not in runs[0] else f"{max(r['lag'] for r in runs):,.0f}"
        print(
            f"| {name} | {med:,.0f} | {min(speeds):,.0f} - {max(speeds):,.0f} | "
            f"{med / base:.2f} | {lag} |"
        )
    paced = results["daemon at 10k/s (paced)"]

    def pmed(f: str) -> float:
        return statistics.median(r[f] for r in paced)

    print(
        f"\nAt 10,000 events/s through the broker (predictions on, 500 records per poll, "
        f"checkpoint + commit every second): poll processing p50 {pmed('p50_poll_ms'):.1f} ms, "
        f"p99 {pmed('p99_poll_ms'):.1f} ms; poll-to-commit p50 {pmed('p50_commit_ms'):.0f} ms, "
        f"p99 {pmed('p99_commit_ms'):.0f} ms (medians over runs)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
import os
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


# deep-river learns about 1,300 events/s: its phase takes the stream's first events only.
PEER_EVENTS = {"river-lr (StandardScaler + LogisticRegression)": 10**9, "deep-river MLP": 20_000}
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"  # bench/setup.sh: river 0.25, deep-river


def phase_peer(n: int, prefix: str, name: str) -> dict[str, float]:
    """A peer on the same stream in process (one model for every key, as in
    ``bench/learners.py``: predict, then learn, per event); run by ``.venv-bench``."""
    from bench import learners

    items = _stream(min(n, PEER_EVENTS[name]))
    stream = [(e.event["key"], e.event["x"], int(e.y_true)) for e in items]
    if name.startswith("river"):
        learners._run_river(stream, learners._river_lr, per_key=False)
    else:
        learners._run_river(stream, learners.deep_river_mlp, per_key=False, bool_labels=False)
    return {"per_second": len(stream) / learners.TIMER.seconds}


def phase_in_process(n: int, prefix: str) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from streamlearn.config import load_config
    from streamlearn.io.base import NullSink
    from streamlearn.io.memory import MemorySource
    from streamlearn.service.daemon import Daemon

    items = _stream(n)
    over = {"source": {"batch_size": 2000, "synthetic": {"n_keys": SETTINGS["keys"]}}}
    cfg = load_config(overrides=over, env={})
    daemon = Daemon(cfg, CollectorRegistry(), source=MemorySource(iter(items)), sink=NullSink())
    t0 = time.perf_counter()
    daemon.run()
    return {"per_second": n / (time.perf_counter() - t0)}


def phase_produce(n: int, prefix: str) -> dict[str, float]:
    from streamlearn.cli.simulate import simulate

    items = _stream(n)
    cfg = _config(prefix, "", emit=False)
    report = simulate(cfg, iter(items), total=n, rate=0.0, progress=False)
    return {"per_second": report.produced / report.seconds}


def phase_consume(n: int, prefix: str, decode: bool) -> dict[str, float]:
    from kafka import KafkaConsumer

    from streamlearn.wire.messages import EventDecoder, Origin, RawRecord

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

    from streamlearn.service.daemon import Daemon
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


def _produce_paced(prefix: str, n: int, rate: float, keys: int) -> None:
    """The paced producer, in its own process (as producers are in production: the
    daemon's latency is not measured with a producer sharing its interpreter)."""
    from streamlearn.cli.simulate import simulate

    SETTINGS["keys"] = keys
    with tempfile.TemporaryDirectory() as ck:
        simulate(
            _config(prefix, ck, emit=False), iter(_stream(n)), total=n, rate=rate, progress=False
        )


def phase_paced(
    n: int,
    prefix: str,
    every_s: float,
    fsync_s: float = 0.0,
    rate: float = 10_000.0,
) -> dict[str, float]:
    """The daemon (predictions on, 500 records per poll, a checkpoint every ``every_s``
    seconds, fsynced every ``fsync_s``) reading a topic produced at ``rate`` events/s by
    another process while it runs. Per poll: processing time (poll returned -> predictions
    handed to the producer, the checkpoint when one follows included) and poll-to-commit
    time (poll returned -> the first offset commit that covers the poll's records); the
    loop's time in checkpoints."""
    import multiprocessing
    import threading

    from prometheus_client import CollectorRegistry

    from streamlearn.service.daemon import Daemon

    with tempfile.TemporaryDirectory() as ck:
        cfg = _config(prefix + "p", ck, emit=True)
        cfg = cfg.model_copy(
            update={
                "source": cfg.source.model_copy(update={"batch_size": 500}),
                "checkpoint": cfg.checkpoint.model_copy(
                    update={
                        "every_events": 10_000_000,
                        "every_seconds": every_s,
                        "fsync_every_s": fsync_s,
                    }
                ),
            }
        )
        daemon = Daemon(cfg, CollectorRegistry())
        src = daemon.source
        polls: list[tuple[float, dict[str, int]]] = []
        commits: list[tuple[float, dict[str, int]]] = []
        busy: list[float] = []
        in_checkpoints: list[float] = []
        poll, commit, step, checkpoint = src.poll, src.commit, daemon.step, daemon.checkpoint

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

        def timed_checkpoint(durable: bool = False) -> bool:
            t = time.perf_counter()
            ok = checkpoint(durable=durable)
            in_checkpoints.append(time.perf_counter() - t)
            return ok

        src.poll, src.commit, daemon.step = timed_poll, timed_commit, timed_step  # type: ignore[method-assign]
        daemon.checkpoint = timed_checkpoint  # type: ignore[method-assign]
        runner = threading.Thread(target=daemon.run)
        runner.start()
        producer = multiprocessing.get_context("spawn").Process(
            target=_produce_paced, args=(prefix + "p", n, rate, SETTINGS["keys"])
        )
        t0 = time.perf_counter()
        producer.start()
        producer.join()
        produce_s = time.perf_counter() - t0
        while daemon.events_seen < n:
            time.sleep(0.01)
        busy_s = time.perf_counter() - t0
        time.sleep(max(1.5, 1.5 * every_s))  # one more checkpoint and commit
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
        "per_second": n / produce_s,
        "p50_poll_ms": 1000 * statistics.median(busy),
        "p99_poll_ms": 1000 * q(busy, n=100)[98],
        "p50_commit_ms": 1000 * statistics.median(to_commit),
        "p99_commit_ms": 1000 * q(to_commit, n=100)[98],
        "checkpoint_share": sum(in_checkpoints) / busy_s,
    }


def coordinator_linger_ms() -> str:
    """The broker's ``group.coordinator.append.linger.ms`` as scripts/kafka.sh set it (every
    offset commit waits up to this long at the broker; Kafka's default is 5)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamlearn"
    run = Path(os.environ.get("STREAMLEARN_KAFKA_HOME", cache / "kafka" / "run"))
    conf = run / "server.properties"
    lines = conf.read_text().splitlines() if conf.exists() else []
    key = "group.coordinator.append.linger.ms="
    found = [ln.split("=", 1)[1] for ln in lines if ln.startswith(key)]
    return found[0].strip() if found else "5 (Kafka's default)"


PACED_SLOW = "daemon at 10k/s, checkpoint every 1 s"
PACED_FAST = "daemon at 10k/s, checkpoint every poll"
PACED_FAST_SYNC_1S = "daemon at 10k/s, checkpoint every poll, fsync every 1 s"
PHASES: dict[str, Callable[[int, str], dict[str, float]]] = {
    "in-process": phase_in_process,
    **{
        name: (lambda n, p, name=name: phase_peer(n, p, name))  # type: ignore[misc]
        for name in PEER_EVENTS
    },
    "produce": phase_produce,
    "consume raw": lambda n, p: phase_consume(n, p, decode=False),
    "consume+decode": lambda n, p: phase_consume(n, p, decode=True),
    "daemon via kafka": lambda n, p: phase_daemon(n, p, emit=False),
    "daemon via kafka + predictions": lambda n, p: phase_daemon(n, p, emit=True),
    PACED_SLOW: lambda n, p: phase_paced(n, p, every_s=1.0),
    PACED_FAST: lambda n, p: phase_paced(n, p, every_s=0.001),
    PACED_FAST_SYNC_1S: lambda n, p: phase_paced(n, p, every_s=0.001, fsync_s=1.0),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument(
        "--phases", nargs="*", default=None, help="run only the phases whose name has one of these"
    )
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
    chosen = [name for name in PHASES if args.phases is None or any(w in name for w in args.phases)]
    if "in-process" not in chosen:
        chosen.insert(0, "in-process")  # the table's reference
    results: dict[str, list[dict[str, float]]] = {name: [] for name in chosen}
    for rep in range(args.repeats):
        prefix = f"bench{uuid.uuid4().hex[:8]}"  # a fresh topic per repeat
        for name in chosen:
            python = PEER_PYTHON if name in PEER_EVENTS else Path(sys.executable)
            if not python.exists():
                print(f"{name}: skipped, {python} is missing (bench/setup.sh)", file=sys.stderr)
                continue
            out = subprocess.run(
                [
                    str(python),
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
    river = results.get(next(iter(PEER_EVENTS)), [])
    river_base = statistics.median(r["per_second"] for r in river) if river else None
    print("| phase | events/s (median) | min - max | x in-process | x river LR | lag at stop |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        if not runs:
            continue
        speeds = [r["per_second"] for r in runs]
        med = statistics.median(speeds)
        lag = "-" if "lag" not in runs[0] else f"{max(r['lag'] for r in runs):,.0f}"
        vs_river = "-" if river_base is None else f"{med / river_base:.2f}"
        print(
            f"| {name} | {med:,.0f} | {min(speeds):,.0f} - {max(speeds):,.0f} | "
            f"{med / base:.2f} | {vs_river} | {lag} |"
        )
    print(
        f"\nPeers: one model for every key, in process, on the same stream "
        f"(deep-river on its first {PEER_EVENTS['deep-river MLP']:,} events)."
    )
    if not any(results.get(name) for name in (PACED_SLOW, PACED_FAST, PACED_FAST_SYNC_1S)):
        return 0
    print(
        "\nAt 10,000 events/s through the broker (another process producing; predictions on, "
        "500 records per poll; the broker's group.coordinator.append.linger.ms = "
        f"{coordinator_linger_ms()}), medians over runs:\n"
    )
    print(
        "| cadence | produced events/s | poll processing p50 / p99 ms "
        "| poll-to-commit p50 / p99 ms | loop time in checkpoints |"
    )
    print("|---|---|---|---|---|")
    for name in (PACED_SLOW, PACED_FAST, PACED_FAST_SYNC_1S):
        if name not in results or not results[name]:
            continue
        runs = results[name]

        def mid(f: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[f] for r in runs)

        print(
            f"| {', '.join(name.split(', ')[1:])} | {mid('per_second'):,.0f} | "
            f"{mid('p50_poll_ms'):.1f} / {mid('p99_poll_ms'):.1f} | "
            f"{mid('p50_commit_ms'):.0f} / {mid('p99_commit_ms'):.0f} | "
            f"{100 * mid('checkpoint_share'):.0f}% |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

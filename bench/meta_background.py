"""Does background re-meta-training slow the stream? Labelled events per second of the
daemon (in process, default family, 100 keys, pre-generated) with ``meta.enabled`` off and
on (a new run every second, 300 outer steps each, i.e. training back to back), one fresh
process per run, alternating, median over ``--repeats``.

    .venv/bin/python -m bench.meta_background --events 600000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from bench.worker import run_worker


def worker(events: int, meta: bool) -> dict[str, Any]:
    import torch
    from prometheus_client import CollectorRegistry

    from streamlearn.config import load_config
    from streamlearn.io.base import NullSink
    from streamlearn.io.memory import MemorySource
    from streamlearn.io.synthetic import build_family
    from streamlearn.service.daemon import Daemon

    torch.set_num_threads(1)
    cfg = load_config(
        overrides={
            "meta": {"enabled": meta, "every_seconds": 1.0, "every_labels": 10**9, "steps": 300}
        },
        env={},
    )
    items = list(build_family(cfg.source.synthetic.model_copy(update={"max_events": events})))
    reg = CollectorRegistry()
    daemon = Daemon(cfg, reg, source=MemorySource(iter(items)), sink=NullSink())
    t0 = time.perf_counter()
    daemon.run()
    seconds = time.perf_counter() - t0
    runs = sum(
        reg.get_sample_value("streamlearn_meta_training_runs_total", {"outcome": o}) or 0.0
        for o in ("promoted", "rejected")
    )
    return {
        "per_second": events / seconds,
        "meta_runs": runs,
        "version": daemon.learner.model_version,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=600_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", nargs=2, metavar=("EVENTS", "META"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1] == "on")))
        return 0
    res: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for mode in ("off", "on"):
            res[mode].append(run_worker("bench.meta_background", str(args.events), mode))
            print(mode, res[mode][-1], file=sys.stderr)
    off = statistics.median(r["per_second"] for r in res["off"])
    on = statistics.median(r["per_second"] for r in res["on"])
    print(f"\n{args.events:,} labelled events, default family, median of {args.repeats}\n")
    print(
        "| background meta-training | labelled/s | runs finished during the stream | "
        "meta-init version at end |"
    )
    print("|---|---|---|---|")
    for mode, val in (("off", off), ("on", on)):
        runs = statistics.median(r["meta_runs"] for r in res[mode])
        ver = max(r["version"] for r in res[mode])
        print(f"| {mode} | {val:,.0f} | {runs:.0f} | {ver} |")
    print(f"\nthroughput with / without = {on / off:.2f} (the bar: >= 0.85)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Step-size ablation: the daemon with each step-size piece on and off, same streams.

Protocol as ``bench/learners.py`` (prequential, stream generated before timing, one fresh
process per (stream, variant), one torch thread): prequential accuracy, mean log loss
(cumulative loss / n), median recovery after the abrupt drifts, labelled events per second
and its ratio to the baseline's in the same run. Variants switch one piece on at a time (the PI
controller needs the curvature it measures), then all of them, at the config's default
settings (curvature refreshed every 20,000 labels on a window of 256).

    .venv/bin/python -m bench.step_size --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from tqdm import tqdm

from bench.learners import run_streamlearn, score
from bench.streams import STREAMS, build_stream
from bench.worker import run_worker

VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "+ curriculum": {"curriculum": {"enabled": True}},
    "+ hypergradient": {"hypergradient": {"enabled": True}},
    "+ guard (loss x4)": {"guard_loss_factor": 4.0},
    "+ curvature cap": {"curvature": {"enabled": True}},
    "+ curvature + PI": {"curvature": {"enabled": True}, "controller": {"enabled": True}},
    "+ PI on loss trend": {"controller": {"enabled": True, "signal": "loss_trend"}},
    "all on": {
        "curriculum": {"enabled": True},
        "hypergradient": {"enabled": True},
        "guard_loss_factor": 4.0,
        "curvature": {"enabled": True},
        "controller": {"enabled": True},
    },
}


def worker(stream_name: str, variant: str) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    stream = build_stream(stream_name)
    return score(stream_name, stream, run_streamlearn(stream, VARIANTS[variant]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--streams", default="family100,family10,sea_a,elec")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--worker", nargs=2, metavar=("STREAM", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    streams = args.streams.split(",")
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    jobs = [(s, v) for _ in range(args.repeats) for s in streams for v in VARIANTS]
    for s, v in tqdm(jobs, desc="ablation", unit="run"):
        res = run_worker("bench.step_size", s, v)
        runs.setdefault((s, v), []).append(res)
    print(f"\nstep-size ablation, median of {args.repeats} (throughput ratio: against baseline)\n")
    print(
        "| stream | variant | accuracy | log loss | recovery (median ex.) "
        "| labelled/s | x baseline |"
    )
    print("|---|---|---|---|---|---|---|")
    for s in streams:
        base = statistics.median(r["per_second"] for r in runs[(s, "baseline")])
        for v in VARIANTS:
            rs = runs[(s, v)]
            speed = statistics.median(r["per_second"] for r in rs)
            recs = [r["recovery"] for r in rs if r["recovery"] is not None]
            rec = (
                "-"
                if not STREAMS[s].drifts
                else (f"{statistics.median(recs):,.0f}" if recs else "none")
            )
            print(
                f"| {s} | {v} | {statistics.median(r['accuracy'] for r in rs):.3f} | "
                f"{statistics.median(r['logloss'] for r in rs):.3f} | {rec} | {speed:,.0f} | "
                f"{speed / base:.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Recovery after drift on the drifting classification family: meta-init resets against
resets to a random (zero) init and against no reset, running the daemon loop.

The stream: the default family (100 keys, 3 recurring shared concepts, abrupt drift every
20,000 events), seed 42. The meta-init (a shared start and a pool of ``--pool-size`` starts
for recurring concepts) is meta-trained offline (``streamlearn meta-train``) on the stream's
history, its first 200,000 events; the daemon then runs on the next 200,000, never seen in
training. (Another seed would be another world: the family draws its shared
concepts and feature scales from the seed.) Recovery follows shared/benchmarks.md: for each
true drift, the smallest k such that accuracy over events d+k .. d+k+500 is within 2 points
of accuracy over the 500 before; median over drifts. One process per variant.

    .venv/bin/python -m bench.meta_recovery
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.learners import recovery
from bench.worker import run_worker

N_EVENTS = 200_000
DRIFTS = list(range(20_000, N_EVENTS, 20_000))
VARIANTS = (
    "meta-init pool resets",
    "meta-init resets",
    "meta-init + learned rates",
    "random-init resets",
    "no reset",
)
N_MINE = 3  # the first three variants use the meta-init


def _model_env(hidden: str) -> dict[str, str]:
    """Config overrides for an MLP variant (``--hidden 16`` or ``--hidden 16,16``)."""
    if not hidden:
        return {}
    return {"STREAMLEARN_MODEL__HIDDEN": f"[{hidden}]", "STREAMLEARN_MODEL__INIT": "normal"}


def run_variant(name: str, init_path: str) -> dict[str, Any]:
    import torch
    from prometheus_client import CollectorRegistry

    from streamlearn.config import load_config
    from streamlearn.io.base import NullSink
    from streamlearn.io.memory import MemorySource
    from streamlearn.io.synthetic import build_family
    from streamlearn.meta.initfile import load_meta_init
    from streamlearn.service.daemon import Daemon

    torch.set_num_threads(1)
    drift = (
        {"on_global_drift": "none", "per_key": False}
        if name == "no reset"
        else {"on_global_drift": "reset_all"}
    )
    cfg = load_config(
        overrides={"drift": drift}, env=_model_env(os.environ.get("BENCH_HIDDEN", ""))
    )
    family = build_family(cfg.source.synthetic.model_copy(update={"max_events": 2 * N_EVENTS}))
    items = list(itertools.islice(family, N_EVENTS, 2 * N_EVENTS))  # after the history
    probs: list[float] = []

    class Collect(NullSink):
        def predictions(self, got: Any) -> None:
            probs.extend(p.p for p in got)

    daemon = Daemon(cfg, CollectorRegistry(), source=MemorySource(iter(items)), sink=Collect())
    if name.startswith("meta-init"):
        init = load_meta_init(init_path, daemon.spec)
        if name != "meta-init pool resets":
            init = dataclasses.replace(init, pool=None)  # the shared start alone
        daemon.install_meta_init(init, use_rates=name == "meta-init + learned rates")
    daemon.run()
    y = np.asarray([e.y_true for e in items])
    correct = ((np.asarray(probs) >= 0.5) == (y == 1)).astype(float)
    rec = [recovery(correct, [d]) for d in DRIFTS]
    return {
        "accuracy": float(correct.mean()),
        "recoveries": rec,
        "median": statistics.median([r for r in rec if r is not None])
        if any(r is not None for r in rec)
        else None,
        "unrecovered": sum(r is None for r in rec),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000, help="meta-training outer steps")
    ap.add_argument("--hidden", default="", help="MLP hidden sizes, e.g. 16 or 16,16")
    ap.add_argument("--pool-size", type=int, default=3, help="meta-init pool members")
    ap.add_argument("--worker", nargs=2, metavar=("VARIANT", "INIT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_variant(*args.worker)))
        return 0
    env = {**os.environ, **_model_env(args.hidden), "BENCH_HIDDEN": args.hidden}
    with tempfile.TemporaryDirectory() as tmp:
        init = str(Path(tmp) / "meta-init.pt")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "streamlearn",
                "meta-train",
                "--out",
                init,
                "--steps",
                str(args.steps),
                "--events",
                "200000",
                "--no-progress",
                "--pool-size",
                str(args.pool_size),
            ],
            env=env,
            check=True,
        )
        results = {}
        for name in VARIANTS:
            results[name] = run_worker("bench.meta_recovery", name, init, env=env)
    model = f"MLP hidden {args.hidden}" if args.hidden else "linear"
    print(
        f"\ndrifting family, 100 keys, {N_EVENTS:,} events, {len(DRIFTS)} abrupt drifts, "
        f"{model} model\n"
    )
    print("| variant | accuracy | median recovery (labelled events) | not recovered | per drift |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        med = "-" if r["median"] is None else f"{r['median']:,.0f}"
        per = ", ".join("-" if v is None else f"{v:.0f}" for v in r["recoveries"])
        print(f"| {name} | {r['accuracy']:.3f} | {med} | {r['unrecovered']} | {per} |")
    others = [results[n]["median"] for n in VARIANTS[N_MINE:] if results[n]["median"] is not None]
    mine = min(results[n]["median"] or float("inf") for n in VARIANTS[:N_MINE])
    if others and mine is not None:
        print(f"\nmeta-init / best alternative = {mine / min(others):.2f} (the bar: <= 0.33)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

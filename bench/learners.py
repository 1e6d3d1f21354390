"""Prequential benchmark: streamlearn beside river and deep-river on the same streams.

Protocol (shared/benchmarks.md): for every example in stream order predict first (P(class 1)),
score it, then learn from it. The stream is generated before timing; only the predict+learn
loop is timed; one fresh process per (learner, stream); one torch thread; peak RSS of that
process. streamlearn runs its whole daemon pipeline in process (decode and validate the wire
contract, per-key learning, drift detection, regret baseline, metrics), fed 500 events per poll.

    bench/setup.sh                       # once: .venv-bench with river 0.25 + deep-river
    .venv-bench/bin/python bench/learners.py [--streams family100,elec] [--repeats 3]

Prints one table (median over repeats); ``--json FILE`` keeps the raw runs.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ELEC = ROOT.parent / "shared" / "data" / "elec.csv"
Example = tuple[str, list[float], int]

# name -> (builder, drift points for recovery, needs per-key peer)
STREAMS: dict[str, tuple[str, list[int]]] = {
    "family100": (
        "100 keys, shared recurring concepts, abrupt drift / 20k",
        [20_000, 40_000, 60_000, 80_000],
    ),
    "family1000": (
        "1,000 keys, shared recurring concepts, abrupt drift / 20k",
        [20_000, 40_000, 60_000, 80_000],
    ),
    "family10": (
        "10 keys, shared recurring concepts, abrupt drift / 20k",
        [20_000, 40_000, 60_000, 80_000],
    ),
    "sea_a": ("river SEA variants 0..3, 25k each (one key)", [25_000, 50_000, 75_000]),
    "elec": ("shared/data/elec.csv, 45,312 rows (one key)", []),
}
LEARNERS = ["streamlearn", "river-lr", "river-lr-per-key", "deep-river-mlp"]


def build_stream(name: str) -> list[Example]:
    from streamlearn.config import FileSourceConfig, SyntheticSourceConfig
    from streamlearn.io.files import replay
    from streamlearn.io.synthetic import build_family

    if name.startswith("family"):
        cfg = SyntheticSourceConfig(n_keys=int(name[6:]), max_events=100_000)
        items = build_family(cfg)
    elif name == "sea_a":
        cfg = SyntheticSourceConfig(
            family="sea",
            n_features=3,
            n_keys=1,
            seed=42,
            segment_length=25_000,
            label_noise=0.0,
            max_events=100_000,
        )
        items = build_family(cfg)
    elif name == "elec":
        items = replay(FileSourceConfig(path=str(ELEC), label_column="class"))
    else:
        raise ValueError(f"unknown stream {name!r}")
    return [(e.event["key"], e.event["x"], int(e.y_true)) for e in items]


# -- learners: each returns P(class 1) for every example, predicted before learning ---------


def run_streamlearn(stream: list[Example], learner: dict[str, Any] | None = None) -> list[float]:
    """The daemon in process; ``learner`` overrides the ``learner`` config section."""
    from prometheus_client import CollectorRegistry

    from streamlearn.config import load_config
    from streamlearn.io.base import NullSink
    from streamlearn.io.memory import MemorySource
    from streamlearn.service.daemon import Daemon

    d = len(stream[0][1])
    cfg = load_config(
        overrides={
            "model": {"n_features": d},
            "source": {"synthetic": {"n_features": d}},
            "learner": learner or {},
        },
        env={},
    )
    probs: list[float] = []

    class Collect(NullSink):
        def predictions(self, items: Any) -> None:
            probs.extend(p.p for p in items)

    events = [
        {"id": str(i), "key": k, "ts": float(i), "x": x, "y": y}
        for i, (k, x, y) in enumerate(stream)
    ]
    daemon = Daemon(cfg, CollectorRegistry(), source=MemorySource(iter(events)), sink=Collect())
    _TIMER.start()
    daemon.run()
    _TIMER.stop()
    return probs


def _run_river(
    stream: list[Example], make: Callable[[int], Any], per_key: bool, bool_labels: bool = True
) -> list[float]:
    models: dict[str, Any] = {}
    out: list[float] = []
    d = len(stream[0][1])
    _TIMER.start()
    for key, x, y in stream:
        k = key if per_key else ""
        model = models.get(k)
        if model is None:
            model = models[k] = make(d)
        xd = dict(enumerate(x))
        proba = model.predict_proba_one(xd)
        out.append(float(proba.get(True, proba.get(1, 0.5))))
        model.learn_one(xd, (y == 1) if bool_labels else y)
    _TIMER.stop()
    return out


def _river_lr(d: int) -> Any:
    from river import linear_model, preprocessing

    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _deep_river_mlp(d: int) -> Any:
    """deep-river's Classifier around an MLP 32x2 (ReLU), two logits, Adam 1e-3, with the same
    StandardScaler in front as river's LR."""
    import torch
    from deep_river.classification import Classifier
    from river import preprocessing

    module = torch.nn.Sequential(
        torch.nn.Linear(d, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 2),
    )
    clf = Classifier(
        module=module,
        loss_fn="cross_entropy",
        optimizer_fn="adam",
        lr=1e-3,
        output_is_logit=True,
        is_class_incremental=False,
        seed=42,
    )
    return preprocessing.StandardScaler() | clf


RUNNERS: dict[str, Callable[[list[Example]], list[float]]] = {
    "streamlearn": run_streamlearn,
    "river-lr": lambda s: _run_river(s, _river_lr, per_key=False),
    "river-lr-per-key": lambda s: _run_river(s, _river_lr, per_key=True),
    "deep-river-mlp": lambda s: _run_river(s, _deep_river_mlp, per_key=False, bool_labels=False),
}


class _Timer:
    def __init__(self) -> None:
        self.t0 = 0.0
        self.seconds = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self.t0


_TIMER = _Timer()


# -- scoring --------------------------------------------------------------------------------


def recovery(correct: np.ndarray, drifts: list[int], window: int = 500) -> float | None:
    """Median examples after an abrupt drift until the 500-window accuracy is back within 2
    points of the 500 before (shared/benchmarks.md); None when no drift recovered."""
    found: list[int] = []
    if not drifts:
        return None
    ends = [*drifts[1:], len(correct)]
    for d, nxt in zip(drifts, ends, strict=True):
        pre = correct[d - window : d].mean()
        csum = np.concatenate([[0.0], np.cumsum(correct[d:nxt])])
        means = (csum[window:] - csum[:-window]) / window
        hit = np.flatnonzero(means >= pre - 0.02)
        if len(hit):
            found.append(int(hit[0]))
    return float(statistics.median(found)) if found else None


def worker(stream_name: str, learner: str) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    stream = build_stream(stream_name)
    return {"learner": learner, **score(stream_name, stream, RUNNERS[learner](stream))}


def score(stream_name: str, stream: list[Example], predictions: list[float]) -> dict[str, Any]:
    """Prequential accuracy, log loss, speed of the timed loop, peak RSS and recovery."""
    probs = np.asarray(predictions, dtype=np.float64)
    y = np.asarray([e[2] for e in stream], dtype=np.float64)
    if len(probs) != len(y):
        raise RuntimeError(f"{len(probs)} predictions for {len(y)} examples")
    correct = ((probs >= 0.5) == (y == 1)).astype(np.float64)
    p = np.clip(probs, 1e-15, 1 - 1e-15)
    logloss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return {
        "stream": stream_name,
        "n": len(y),
        "accuracy": float(correct.mean()),
        "logloss": logloss,
        "per_second": len(y) / _TIMER.seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "recovery": recovery(correct, STREAMS[stream_name][1]),
    }


def _fmt_rec(v: float | None, drifts: list[int]) -> str:
    if not drifts:
        return "-"
    return "not recovered" if v is None else f"{v:,.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--streams", default="family100,family10,sea_a,elec")
    ap.add_argument("--learners", default=",".join(LEARNERS))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", nargs=2, metavar=("STREAM", "LEARNER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    from tqdm import tqdm

    jobs = []
    for s in args.streams.split(","):
        for learner in args.learners.split(","):
            if learner == "river-lr-per-key" and not s.startswith("family"):
                continue  # one-key streams: identical to river-lr
            jobs += [(s, learner)] * args.repeats
    runs: list[dict[str, Any]] = []
    for s, learner in tqdm(jobs, desc="bench", unit="run"):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", s, learner],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            print(f"{learner} on {s} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    print()
    print(
        "| stream | learner | accuracy | log loss | labelled/s (median) | x river-lr | "
        "x deep-river | peak RSS MB | recovery (median ex.) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for s in args.streams.split(","):
        rows = [r for r in runs if r["stream"] == s]
        speed = {
            name: statistics.median(r["per_second"] for r in rows if r["learner"] == name)
            for name in {r["learner"] for r in rows}
        }
        for learner in args.learners.split(","):
            mine = [r for r in rows if r["learner"] == learner]
            if not mine:
                continue
            r0 = mine[0]
            ratio_lr = speed[learner] / speed["river-lr"] if "river-lr" in speed else math.nan
            ratio_dr = (
                speed[learner] / speed["deep-river-mlp"] if "deep-river-mlp" in speed else math.nan
            )
            print(
                f"| {s} | {learner} | {r0['accuracy']:.3f} | {r0['logloss']:.3f} | "
                f"{speed[learner]:,.0f} | {ratio_lr:.2f} | {ratio_dr:.1f} | "
                f"{max(r['peak_rss_mb'] for r in mine):.0f} | "
                f"{_fmt_rec(r0['recovery'], STREAMS[s][1])} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

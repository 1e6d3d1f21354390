"""Prequential benchmark: streamlearn beside river, VW, deep-river and CapyMOA on the same streams.

Protocol (shared/benchmarks.md): for every example in stream order predict first (P(class 1)),
score it, then learn from it. The stream is generated before timing; only the predict+learn
loop is timed; one fresh process per (learner, stream); one torch thread; peak RSS of that
process. streamlearn runs its whole daemon pipeline in process (decode and validate the wire
contract, per-key learning, drift detection, regret baseline, metrics), fed 500 events per poll.

    bench/setup.sh       # once: .venv-bench (river, deep-river, VW), .venv-capymoa (CapyMOA)
    .venv-bench/bin/python -m bench.learners [--streams elec,agr_a] [--repeats 3]
        [--variant 'NAME={"learner": {...}, "model": {...}}']   # streamlearn ablations

Prints one table (median speed over repeats), and for ``coldstart_p`` the few-shot windows
(each entity's events 1-5, 6-20, 21+) beside the true weights' ceiling; ``--json FILE``
keeps the raw runs.
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

from bench.streams import FEW_SHOT_WINDOWS, STREAMS, Example, build_stream, coldstart

ROOT = Path(__file__).resolve().parent.parent
CAPYMOA_PYTHON = ROOT / ".venv-capymoa" / "bin" / "python"

LEARNERS = [
    "streamlearn",
    "river-lr",
    "river-lr-per-key",
    "vw",
    "vw-constant-rate",
    "deep-river-mlp",
    "river-arf",
    "capymoa-arf",
    "capymoa-hat",
]
# Per-key peers run only where there are keys; CapyMOA runs in its own environment.
PER_KEY_ONLY = {"river-lr-per-key"}


# -- learners: each returns P(class 1) for every example, predicted before learning ---------


def run_streamlearn(
    stream: list[Example],
    learner: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    sections: dict[str, Any] | None = None,
) -> list[float]:
    """The daemon in process; ``learner`` and ``model`` override those config sections,
    ``sections`` any other."""
    import orjson
    from prometheus_client import CollectorRegistry

    from streamlearn.config import load_config
    from streamlearn.io.base import NullSink
    from streamlearn.io.memory import MemorySource
    from streamlearn.service.daemon import Daemon

    d = len(stream[0][1])
    cfg = load_config(
        overrides={
            "model": {**(model or {}), "n_features": d},
            "source": {"synthetic": {"n_features": d}},
            "learner": learner or {},
            **(sections or {}),
        },
        env={},
    )
    probs: list[float] = []

    class Collect(NullSink):
        def predictions(self, items: Any) -> None:
            probs.extend(p.p for p in items)

    # The records as the wire carries them (JSON bytes, as from Kafka): decoding them is in
    # the timed loop, encoding them is not.
    events = [
        orjson.dumps({"id": str(i), "key": k, "ts": float(i), "x": x, "y": y})
        for i, (k, x, y) in enumerate(stream)
    ]
    daemon = Daemon(cfg, CollectorRegistry(), source=MemorySource(iter(events)), sink=Collect())
    TIMER.start()
    daemon.run()
    TIMER.stop()
    return probs


def _run_river(
    stream: list[Example], make: Callable[[int], Any], per_key: bool, bool_labels: bool = True
) -> list[float]:
    models: dict[str, Any] = {}
    out: list[float] = []
    d = len(stream[0][1])
    TIMER.start()
    for key, x, y in stream:
        k = key if per_key else ""
        model = models.get(k)
        if model is None:
            model = models[k] = make(d)
        xd = dict(enumerate(x))
        proba = model.predict_proba_one(xd)
        out.append(float(proba.get(True, proba.get(1, 0.5))))
        model.learn_one(xd, (y == 1) if bool_labels else y)
    TIMER.stop()
    return out


def _river_lr(d: int) -> Any:
    from river import linear_model, preprocessing

    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _river_arf(d: int) -> Any:
    from river import forest

    return forest.ARFClassifier(n_models=10, seed=42)


def deep_river_mlp(d: int, task: str = "binary") -> Any:
    """deep-river's Classifier (two logits, cross-entropy) or Regressor (one output, MSE)
    around an MLP 32x2 (ReLU), Adam 1e-3, with the same StandardScaler in front as river's
    LR."""
    import torch
    from river import preprocessing

    regression = task == "regression"
    module = torch.nn.Sequential(
        torch.nn.Linear(d, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 1 if regression else 2),
    )
    est: Any
    if regression:
        from deep_river.regression import Regressor

        est = Regressor(module=module, loss_fn="mse", optimizer_fn="adam", lr=1e-3, seed=42)
    else:
        from deep_river.classification import Classifier

        est = Classifier(
            module=module,
            loss_fn="cross_entropy",
            optimizer_fn="adam",
            lr=1e-3,
            output_is_logit=True,
            is_class_incremental=False,
            seed=42,
        )
    return preprocessing.StandardScaler() | est


def run_vw(stream: list[Example], extra: str = "") -> list[float]:
    """Vowpal Wabbit logistic regression with its adaptive, normalised update (pyvw), on
    features standardised by river's StandardScaler, as the protocol's reference row;
    ``extra`` flags (``--power_t 0``: a constant rate, VW's setting for drifting data)."""
    from river import preprocessing
    from vowpalwabbit import Workspace

    vw = Workspace(
        f"--loss_function logistic --link logistic --adaptive --normalized --quiet {extra}"
    )
    scaler = preprocessing.StandardScaler()
    out: list[float] = []
    TIMER.start()
    for _key, x, y in stream:
        xd = dict(enumerate(x))
        scaler.learn_one(xd)
        z = scaler.transform_one(xd)
        feats = " ".join(f"f{j}:{v:.6g}" for j, v in z.items())
        out.append(float(vw.predict(f"| {feats}")))
        vw.learn(f"{1 if y == 1 else -1} | {feats}")
    TIMER.stop()
    vw.finish()
    return out


def run_capymoa(stream: list[Example], learner: str) -> list[float]:
    """CapyMOA in its own environment (bench/setup.sh) on the same arrays; its worker times
    its own loop and reports its own process's peak RSS."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "stream.npz"
        np.savez(
            data,
            x=np.asarray([e[1] for e in stream], dtype=np.float64),
            y=np.asarray([e[2] for e in stream], dtype=np.int64),
        )
        out = subprocess.run(
            [str(CAPYMOA_PYTHON), str(ROOT / "bench" / "capymoa_worker.py"), str(data), learner],
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
        TIMER.seconds = res["seconds"]
        _CHILD_RSS_MB[0] = res["peak_rss_mb"]
        return list(np.load(Path(tmp) / "p.npy").astype(float))


_CHILD_RSS_MB = [0.0]

RUNNERS: dict[str, Callable[[list[Example]], list[float]]] = {
    "streamlearn": run_streamlearn,
    "river-lr": lambda s: _run_river(s, _river_lr, per_key=False),
    "river-lr-per-key": lambda s: _run_river(s, _river_lr, per_key=True),
    "river-arf": lambda s: _run_river(s, _river_arf, per_key=False),
    "vw": run_vw,
    "vw-constant-rate": lambda s: run_vw(s, "--power_t 0"),
    "deep-river-mlp": lambda s: _run_river(s, deep_river_mlp, per_key=False, bool_labels=False),
    "capymoa-arf": lambda s: run_capymoa(s, "arf"),
    "capymoa-hat": lambda s: run_capymoa(s, "hat"),
}
# Labels only (no probabilities): no log loss.
LABELS_ONLY = {"capymoa-arf", "capymoa-hat"}


class _Timer:
    def __init__(self) -> None:
        self.t0 = 0.0
        self.seconds = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self.t0


TIMER = _Timer()


# -- scoring --------------------------------------------------------------------------------


def recovery(
    correct: np.ndarray, drifts: list[int], window: int = 500, *, to_plateau: bool = False
) -> float | None:
    """Median examples after an abrupt drift until the 500-window accuracy is back within 2
    points of the 500 before (shared/benchmarks.md); None when no drift recovered. With
    ``to_plateau``, within 2 points of the learner's own plateau on the new concept (the last
    5,000 examples before the next drift, or the end): for a learner that never gets back to
    where it was."""
    found: list[int] = []
    if not drifts:
        return None
    ends = [*drifts[1:], len(correct)]
    for d, nxt in zip(drifts, ends, strict=True):
        level = correct[max(d, nxt - 5000) : nxt] if to_plateau else correct[d - window : d]
        csum = np.concatenate([[0.0], np.cumsum(correct[d:nxt])])
        means = (csum[window:] - csum[:-window]) / window
        hit = np.flatnonzero(means >= level.mean() - 0.02)
        if len(hit):
            found.append(int(hit[0]))
    return float(statistics.median(found)) if found else None


def _log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(probs, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def few_shot(probs: np.ndarray, y: np.ndarray, position: np.ndarray) -> dict[str, list[float]]:
    """Accuracy and log loss over each entity's events 1-5, 6-20 and 21+."""
    out: dict[str, list[float]] = {}
    for lo, hi in FEW_SHOT_WINDOWS:
        m = (position >= lo) & (position <= hi)
        name = f"{lo}-{hi}" if hi < 10**9 else f"{lo}+"
        out[name] = [float(((probs[m] >= 0.5) == (y[m] == 1)).mean()), _log_loss(probs[m], y[m])]
    return out


def worker(stream_name: str, learner: str, overrides: str = "") -> dict[str, Any]:
    if learner.startswith(("streamlearn", "deep-river")) or overrides:
        import torch  # only where it is used: importing it costs ~700 MB of peak RSS

        torch.set_num_threads(1)
    stream = build_stream(stream_name)
    if overrides:
        over = json.loads(overrides)
        probs = run_streamlearn(
            stream,
            over.pop("learner", None),
            over.pop("model", None),
            over,
        )
    else:
        probs = RUNNERS[learner](stream)
    return {"learner": learner, **score(stream_name, stream, probs, learner in LABELS_ONLY)}


def score(
    stream_name: str, stream: list[Example], predictions: list[float], labels_only: bool = False
) -> dict[str, Any]:
    """Prequential accuracy, log loss, speed of the timed loop, peak RSS and recovery."""
    probs = np.asarray(predictions, dtype=np.float64)
    y = np.asarray([e[2] for e in stream], dtype=np.float64)
    if len(probs) != len(y):
        raise RuntimeError(f"{len(probs)} predictions for {len(y)} examples")
    correct = ((probs >= 0.5) == (y == 1)).astype(np.float64)
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _CHILD_RSS_MB[0])
    out: dict[str, Any] = {
        "stream": stream_name,
        "n": len(y),
        "accuracy": float(correct.mean()),
        "logloss": math.nan if labels_only else _log_loss(probs, y),
        "per_second": len(y) / TIMER.seconds,
        "peak_rss_mb": _CHILD_RSS_MB[0] or rss,
        "recovery": recovery(correct, STREAMS[stream_name].drifts),
        "recovery_plateau": recovery(correct, STREAMS[stream_name].drifts, to_plateau=True),
    }
    if stream_name == "coldstart_p":
        out["few_shot"] = few_shot(probs, y, coldstart().position)
    return out


def _fmt_rec(v: float | None, drifts: list[int]) -> str:
    if not drifts:
        return "-"
    return "not recovered" if v is None else f"{v:,.0f}"


def _fmt_loss(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.4f}"


def print_tables(runs: list[dict[str, Any]], streams: list[str], learners: list[str]) -> None:
    """One row per (stream, learner): medians of speed over repeats, first run's scores."""
    print(
        "| stream | learner | accuracy | log loss | events/s (median) | x river-lr | "
        "peak RSS MB | recovery (median ex.) | to own plateau |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for s in streams:
        rows = [r for r in runs if r["stream"] == s]
        speed = {
            name: statistics.median(r["per_second"] for r in rows if r["learner"] == name)
            for name in {r["learner"] for r in rows}
        }
        for learner in learners:
            mine = [r for r in rows if r["learner"] == learner]
            if not mine:
                continue
            r0 = mine[0]
            ratio = speed[learner] / speed["river-lr"] if "river-lr" in speed else math.nan
            print(
                f"| {s} | {learner} | {r0['accuracy']:.4f} | {_fmt_loss(r0['logloss'])} | "
                f"{speed[learner]:,.0f} | {ratio:.2f} | "
                f"{max(r['peak_rss_mb'] for r in mine):.0f} | "
                f"{_fmt_rec(r0['recovery'], STREAMS[s].drifts)} | "
                f"{_fmt_rec(r0.get('recovery_plateau'), STREAMS[s].drifts)} |"
            )
    cold = [r for r in runs if r["stream"] == "coldstart_p"]
    if cold:
        cs = coldstart()
        y = np.asarray([e[2] for e in cs.examples], dtype=np.float64)
        ceiling = few_shot(cs.true_p, y, cs.position)
        windows = list(ceiling)
        print()
        print("coldstart_p per entity-event window: accuracy / log loss")
        print()
        print("| learner | " + " | ".join(f"events {w}" for w in windows) + " |")
        print("|---|" + "---|" * len(windows))
        seen: set[str] = set()
        for r in [*cold, {"learner": "true weights (ceiling)", "few_shot": ceiling}]:
            if r["learner"] in seen:
                continue
            seen.add(r["learner"])
            cells = [
                f"{a:.4f} / {_fmt_loss(b) if r['learner'] not in LABELS_ONLY else '-'}"
                for a, b in (r["few_shot"][w] for w in windows)
            ]
            print(f"| {r['learner']} | " + " | ".join(cells) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--streams", default="elec,sea_a,hyper_g,agr_a,rbf_d,family100,coldstart_p")
    ap.add_argument("--learners", default=",".join(LEARNERS))
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="streamlearn with these config overrides (any section), e.g. "
        """'mlp={"model": {"hidden": [32, 32]}}' (repeatable; NAME joins the learners)""",
    )
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (speeds: leave at 1)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    variants = dict(v.split("=", 1) for v in args.variant)
    learners = [*args.learners.split(","), *variants]
    streams = args.streams.split(",")
    jobs = []
    for s in streams:
        for learner in learners:
            if learner in PER_KEY_ONLY and s in {"elec", "sea_a", "hyper_g", "agr_a", "rbf_d"}:
                continue  # one-key streams: identical to river-lr
            jobs += [(s, learner)] * args.repeats

    def one(job: tuple[str, str]) -> dict[str, Any] | None:
        s, learner = job
        cmd = [sys.executable, "-m", "bench.learners", "--worker", s, learner]
        if learner in variants:
            cmd.append(variants[learner])
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
        if out.returncode != 0:
            print(f"{learner} on {s} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
            return None
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(tqdm(pool.map(one, jobs), total=len(jobs), desc="bench", unit="run"))
    runs = [r for r in results if r is not None]
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    print()
    print_tables(runs, streams, learners)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

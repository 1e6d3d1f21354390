"""Few-shot per entity: does meta-learning earn its place? A new entity's first labels, and a
key's first labels after a drift, with meta-learning on (the default) and off, beside peers.

Protocol (issue "few-shot per entity"): the daemon meta-trains through its own background
path on the stream's first half, waiting for each run there as a service at a modest rate
would see it finish; the second half runs at full speed (runs go on in the background, as
they would). Scores are over the second half's entities never seen before, per window of
each entity's events (1-5, 6-20, 21+): accuracy and log loss, or MSE for regression. Every
learner predicts each event before learning it (prequential), one fresh process each.

Streams:

- ``coldstart_p`` (shared/benchmarks.md): 1,500 entities arriving and retiring, two shared
  linear concepts plus personal variation; binary.
- ``sinusoid_p``: the few-shot sinusoid family with arriving entities
  (:func:`bench.streams.sinusoid_arrivals`); regression.
- ``family100``: streamlearn's own drifting family; windows count a key's labels since the
  last drift detection that applies to it (its own or the population's: with this default
  the global detector is the one that fires); meta on against off only, as the peers have
  no detector.

Peers: river LR (global, and one per key), deep-river's MLP 32x2 (Adam 1e-3), Vowpal Wabbit
(``--adaptive --normalized``): logistic for classification, squared loss and river's
LinearRegression for regression.

    .venv-bench/bin/python -m bench.few_shot [--streams coldstart_p,sinusoid_p,family100]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.streams import FEW_SHOT_WINDOWS, build_stream, coldstart, sinusoid_arrivals
from bench.worker import run_worker

STREAMS = ["coldstart_p", "sinusoid_p", "family100"]
LEARNERS = [
    "streamlearn",
    "streamlearn-meta-off",
    "river-lr",
    "river-lr-per-key",
    "deep-river-mlp",
    "vw",
]
# Windows after a drift need the daemon's own detections.
DETECTOR_ONLY = {"family100"}
STREAMLEARN = {"streamlearn": True, "streamlearn-meta-off": False}


@dataclass(frozen=True)
class Stream:
    keys: list[str]
    x: list[list[float]]
    y: np.ndarray
    position: np.ndarray  # 1-based index of each event within its entity
    task: str  # binary | regression


def load(name: str) -> Stream:
    if name == "sinusoid_p":
        s = sinusoid_arrivals()
        ex: list[tuple[str, list[float], float]] = list(s.examples)
        position, task = s.position, "regression"
    else:
        ex = [
            (k, x, float(y))
            for k, x, y in (coldstart().examples if name == "coldstart_p" else build_stream(name))
        ]
        position = coldstart().position if name == "coldstart_p" else _positions(ex)
        task = "binary"
    return Stream(
        [e[0] for e in ex], [e[1] for e in ex], np.asarray([e[2] for e in ex]), position, task
    )


def _positions(ex: list[tuple[str, list[float], float]]) -> np.ndarray:
    seen: dict[str, int] = {}
    out = np.empty(len(ex), dtype=np.int64)
    for i, (k, _, _) in enumerate(ex):
        seen[k] = seen.get(k, 0) + 1
        out[i] = seen[k]
    return out


# -- learners: each returns its prediction of every event, made before learning it ---------


def run_streamlearn(
    s: Stream, meta: bool, variant: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The daemon in process, the default configuration (``meta`` sets ``meta.enabled``;
    ``variant`` overrides any section); the first half waits for each background run.
    Returns the predictions and, per event, its key's labels since the last drift detection
    that applies to it, its own or the population's (0: none yet)."""
    import orjson
    from prometheus_client import CollectorRegistry

    from streamlearn.config import load_config, merge_overrides
    from streamlearn.io.base import NullSink
    from streamlearn.io.memory import MemorySource
    from streamlearn.service.daemon import Daemon

    d = len(s.x[0])
    sections: dict[str, Any] = {
        "model": {"n_features": d, "task": s.task},
        "meta": {"enabled": meta},
    }
    if s.task == "regression":  # the synthetic families are binary; events come from memory
        sections["source"] = {"kind": "file", "file": {"path": "(in memory)"}}
    else:
        sections["source"] = {"synthetic": {"n_features": d}}
    cfg = load_config(overrides=merge_overrides(sections, variant or {}), env={})
    preds: list[float] = []

    class Collect(NullSink):
        def predictions(self, items: Any) -> None:
            preds.extend(float(p.p) for p in items)

    events = [
        orjson.dumps({"id": str(i), "key": k, "ts": float(i), "x": x, "y": float(y)})
        for i, (k, x, y) in enumerate(zip(s.keys, s.x, s.y.tolist(), strict=True))
    ]
    daemon = Daemon(cfg, CollectorRegistry(), source=MemorySource(iter(events)), sink=Collect())
    n, half = len(events), len(events) // 2
    since = np.zeros(n, dtype=np.int64)
    count: dict[str, int] = {}  # labels since the key's last detection, for keys that drifted
    poll = cfg.source.batch_size
    try:
        while daemon.events_seen < n:
            first = daemon.events_seen < half
            if first and daemon.meta_trainer is not None:
                daemon.meta_trainer.wait()
            lo = daemon.events_seen
            if daemon.step(min(poll, (half if first else n) - lo)) == 0:
                break
            hi = daemon.events_seen
            for i in range(lo, hi):
                k = s.keys[i]
                if k in count:
                    count[k] += 1
                    since[i] = count[k]
            report = daemon.outcomes.last_drift
            if report.global_drift:  # a drift of the population: every key's, counted anew
                count = dict.fromkeys(set(s.keys[:hi]), 0)
            for k in report.drifted_keys:
                count[k] = 0
    finally:
        if daemon.meta_trainer is not None:
            daemon.meta_trainer.close()
    return np.asarray(preds), since


def _river(s: Stream, make: Callable[[], Any], per_key: bool) -> np.ndarray:
    models: dict[str, Any] = {}
    out = np.empty(len(s.y))
    for i, (key, x, y) in enumerate(zip(s.keys, s.x, s.y.tolist(), strict=True)):
        model = models.get(key if per_key else "")
        if model is None:
            model = models[key if per_key else ""] = make()
        xd = dict(enumerate(x))
        if s.task == "regression":
            out[i] = float(model.predict_one(xd))
            model.learn_one(xd, y)
        else:
            proba = model.predict_proba_one(xd)
            out[i] = float(proba.get(True, proba.get(1, 0.5)))
            model.learn_one(xd, y == 1)
    return out


def _river_linear(task: str) -> Callable[[], Any]:
    from river import linear_model, preprocessing

    def make() -> Any:
        model = (
            linear_model.LinearRegression()
            if task == "regression"
            else (linear_model.LogisticRegression())
        )
        return preprocessing.StandardScaler() | model

    return make


def _deep_river(s: Stream) -> np.ndarray:
    from bench.learners import deep_river_mlp

    pipe = deep_river_mlp(len(s.x[0]), s.task)
    out = np.empty(len(s.y))
    for i, (x, y) in enumerate(zip(s.x, s.y.tolist(), strict=True)):
        xd = dict(enumerate(x))
        if s.task == "regression":
            out[i] = float(pipe.predict_one(xd))
            pipe.learn_one(xd, y)
        else:
            proba = pipe.predict_proba_one(xd)
            out[i] = float(proba.get(1, proba.get(True, 0.5)))
            pipe.learn_one(xd, int(y))
    return out


def _vw(s: Stream) -> np.ndarray:
    from river import preprocessing
    from vowpalwabbit import Workspace

    loss = "squared" if s.task == "regression" else "logistic --link logistic"
    vw = Workspace(f"--loss_function {loss} --adaptive --normalized --quiet")
    scaler = preprocessing.StandardScaler()
    out = np.empty(len(s.y))
    for i, (x, y) in enumerate(zip(s.x, s.y.tolist(), strict=True)):
        xd = dict(enumerate(x))
        scaler.learn_one(xd)
        feats = " ".join(f"f{j}:{v:.6g}" for j, v in scaler.transform_one(xd).items())
        out[i] = float(vw.predict(f"| {feats}"))
        label = y if s.task == "regression" else (1 if y == 1 else -1)
        vw.learn(f"{label} | {feats}")
    vw.finish()
    return out


# -- scoring --------------------------------------------------------------------------------


def windows(
    pred: np.ndarray, y: np.ndarray, position: np.ndarray, mask: np.ndarray, task: str
) -> dict[str, list[float]]:
    """Per window of ``position``: ``[accuracy, log loss]``, or ``[mse]``, over ``mask``."""
    out: dict[str, list[float]] = {}
    for lo, hi in FEW_SHOT_WINDOWS:
        m = mask & (position >= lo) & (position <= hi)
        name = f"{lo}-{hi}" if hi < 10**9 else f"{lo}+"
        p, t = pred[m], y[m]
        if task == "regression":
            out[name] = [float(np.mean((p - t) ** 2)), int(m.sum())]
        else:
            q = np.clip(p, 1e-15, 1 - 1e-15)
            ll = float(-np.mean(t * np.log(q) + (1 - t) * np.log(1 - q)))
            out[name] = [float(((p >= 0.5) == (t == 1)).mean()), ll, int(m.sum())]
    return out


def worker(stream_name: str, learner: str, variant: str = "") -> dict[str, Any]:
    if learner.startswith(("streamlearn", "deep-river")):
        import torch

        torch.set_num_threads(1)
    s = load(stream_name)
    since: np.ndarray | None = None
    if variant:  # a streamlearn variant: meta-learning on, these overrides
        pred, since = run_streamlearn(s, True, json.loads(variant))
    elif learner in STREAMLEARN:
        pred, since = run_streamlearn(s, STREAMLEARN[learner])
    elif learner == "deep-river-mlp":
        pred = _deep_river(s)
    elif learner == "vw":
        pred = _vw(s)
    else:
        pred = _river(s, _river_linear(s.task), per_key=learner == "river-lr-per-key")
    n = len(s.y)
    second = np.arange(n) >= n // 2
    first_seen: dict[str, int] = {}
    for i, k in enumerate(s.keys):
        first_seen.setdefault(k, i)
    new = np.asarray([first_seen[k] >= n // 2 for k in s.keys])
    out: dict[str, Any] = {"stream": stream_name, "learner": learner}
    if stream_name in DETECTOR_ONLY:
        assert since is not None
        out["after_drift"] = windows(pred, s.y, since, second & (since > 0), s.task)
    else:
        out["new_entities"] = windows(pred, s.y, s.position, second & new, s.task)
    return out


def _cell(v: list[float], task: str) -> str:
    return f"{v[0]:.4f}" if task == "regression" else f"{v[0]:.4f} / {v[1]:.4f}"


def print_table(stream: str, rows: list[dict[str, Any]]) -> None:
    task = "regression" if stream == "sinusoid_p" else "binary"
    part = "after_drift" if stream in DETECTOR_ONLY else "new_entities"
    what = "MSE" if task == "regression" else "accuracy / log loss"
    where = (
        "labels since the key's last drift detection, its own or global; second half"
        if part == "after_drift"
        else "entities first seen in the second half"
    )
    print(f"\n{stream}: {what} per window ({where})\n")
    names = list(rows[0][part])
    print("| learner | " + " | ".join(f"events {n}" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for r in rows:
        print(f"| {r['learner']} | " + " | ".join(_cell(r[part][n], task) for n in names) + " |")
    on = next((r for r in rows if r["learner"] == "streamlearn"), None)
    off = next((r for r in rows if r["learner"] == "streamlearn-meta-off"), None)
    if on and off:
        k = 0 if task == "regression" else 1
        ratios = ", ".join(
            f"{n}: {on[part][n][k] / off[part][n][k]:.3f}"
            for n in names
            if not math.isnan(off[part][n][k]) and off[part][n][k] > 0
        )
        print(f"\nmeta on / off ({'MSE' if k == 0 else 'log loss'}): {ratios}")
    print("events per window (" + ", ".join(f"{n}: {rows[0][part][n][-1]:,}" for n in names) + ")")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--streams", default=",".join(STREAMS))
    ap.add_argument("--learners", default=",".join(LEARNERS))
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="streamlearn (meta-learning on) with these config overrides, e.g. "
        """'pool3={"meta": {"pool_size": 3}}' (repeatable; NAME joins the learners)""",
    )
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    variants = dict(v.split("=", 1) for v in args.variant)
    runs = []
    for stream in args.streams.split(","):
        rows = []
        for learner in [*args.learners.split(","), *variants]:
            if stream in DETECTOR_ONLY and learner not in STREAMLEARN and learner not in variants:
                continue
            extra = [variants[learner]] if learner in variants else []
            rows.append(run_worker("bench.few_shot", stream, learner, *extra))
        runs += rows
        print_table(stream, rows)
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Multiclass drift streams: streamlearn's default beside river's softmax regression.

Prequential (predict the class probabilities, score, then learn), one key, the stream built
before timing, one fresh process per (learner, stream). Streams (river's generators, 50,000
examples each): ``rbf4`` (RandomRBFDrift, 4 classes, 10 features, 50 moving centroids),
``led`` (LEDDrift, 10 classes, 24 binary features, 7 drifting, 10% noise) and ``wave``
(Waveform, 3 classes, 21 features). Learners: the default, the 0.2.0 default (a linear
model, AdaGrad 1.0), river's ``StandardScaler | SoftmaxRegression``. Only the loop is timed.

    .venv-bench/bin/python -m bench.multiclass
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from typing import Any

import numpy as np

from bench.worker import run_worker
from tests.helpers import LINEAR  # the 0.2.0 default: linear, AdaGrad 1.0

N_CLASSES = {"rbf4": 4, "led": 10, "wave": 3}
LEARNERS = ["streamlearn", "linear-0.2.0", "river-softmax"]


def build(name: str, n: int = 50_000) -> list[tuple[list[float], int]]:
    from river.datasets import synth

    gen: Any
    if name == "rbf4":
        gen = synth.RandomRBFDrift(
            seed_model=7,
            seed_sample=7,
            n_classes=4,
            n_features=10,
            n_centroids=50,
            change_speed=0.001,
            n_drift_centroids=50,
        )
    elif name == "led":
        gen = synth.LEDDrift(
            seed=7, noise_percentage=0.1, irrelevant_features=True, n_drift_features=7
        )
    elif name == "wave":
        gen = synth.Waveform(seed=7, has_noise=False)
    else:
        raise ValueError(f"unknown stream {name!r}")
    return [([float(v) for v in x.values()], int(y)) for x, y in itertools.islice(gen, n)]


def run_streamlearn(
    stream: list[tuple[list[float], int]], n_classes: int, over: dict[str, Any]
) -> tuple[np.ndarray, float]:
    """Class probabilities of every example and the seconds of the predict+learn loop: the
    daemon in process, as in :mod:`bench.learners`."""
    from bench import learners

    model = {**over.get("model", {}), "task": "multiclass", "n_classes": n_classes}
    probs = learners.run_streamlearn(
        [("k", x, y) for x, y in stream],
        over.get("learner"),
        model,
        # The events come from memory; a file source only because the synthetic families
        # are binary and the config checks the model against its source.
        {"source": {"kind": "file", "file": {"path": "(in memory)"}}},
    )
    return np.asarray(probs, dtype=np.float64), learners.TIMER.seconds


def run_river(stream: list[tuple[list[float], int]], n_classes: int) -> tuple[np.ndarray, float]:
    from river import linear_model, preprocessing

    model = preprocessing.StandardScaler() | linear_model.SoftmaxRegression()
    out = np.full((len(stream), n_classes), 1.0 / n_classes)
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(stream):
        xd = dict(enumerate(x))
        proba = model.predict_proba_one(xd)
        row = np.asarray([proba.get(c, 0.0) for c in range(n_classes)])
        if row.sum() > 0:
            out[i] = row / row.sum()
        model.learn_one(xd, y)
    return out, time.perf_counter() - t0


def worker(name: str, learner: str) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    stream = build(name)
    c = N_CLASSES[name]
    if learner == "river-softmax":
        probs, seconds = run_river(stream, c)
    else:
        probs, seconds = run_streamlearn(stream, c, LINEAR if learner == "linear-0.2.0" else {})
    y = np.asarray([e[1] for e in stream])
    p_true = np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0)
    return {
        "stream": name,
        "learner": learner,
        "accuracy": float((probs.argmax(1) == y).mean()),
        "logloss": float(-np.log(p_true).mean()),
        "per_second": len(y) / seconds,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--streams", default="rbf4,led,wave")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    print("| stream | learner | accuracy | log loss | events/s | x river-softmax |")
    print("|---|---|---|---|---|---|")
    for s in args.streams.split(","):
        rows = []
        for learner in LEARNERS:
            rows.append(run_worker("bench.multiclass", s, learner))
        base = rows[-1]["per_second"]
        for r in rows:
            print(
                f"| {s} | {r['learner']} | {r['accuracy']:.4f} | {r['logloss']:.4f} | "
                f"{r['per_second']:,.0f} | {r['per_second'] / base:.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Runs one CapyMOA learner prequentially on a stream's arrays (in .venv-capymoa).

    .venv-capymoa/bin/python bench/capymoa_worker.py STREAM.npz arf|hat

Reads ``x``, ``y`` from the file, evaluates with CapyMOA's own ``prequential_evaluation``
(predict, then train, per instance; stored predictions are class labels), writes the labels
as ``p.npy`` beside the input and prints one JSON line: seconds of the evaluation, peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    data, name = Path(sys.argv[1]), sys.argv[2]
    from capymoa.classifier import AdaptiveRandomForestClassifier, HoeffdingAdaptiveTree
    from capymoa.evaluation import prequential_evaluation
    from capymoa.stream import NumpyStream

    arrays = np.load(data)
    x, y = arrays["x"], arrays["y"]
    stream = NumpyStream(x, y, dataset_name="bench", target_type="categorical")
    schema = stream.get_schema()
    learner = (
        AdaptiveRandomForestClassifier(schema=schema, ensemble_size=10, random_seed=1)
        if name == "arf"
        else HoeffdingAdaptiveTree(schema=schema, random_seed=1)
    )
    t0 = time.perf_counter()
    res = prequential_evaluation(stream, learner, store_predictions=True, optimise=True)
    seconds = time.perf_counter() - t0
    pred = np.asarray([np.nan if p is None else p for p in res.predictions()], dtype=np.float64)
    # Labels index the schema's class values (those NumpyStream saw, sorted): back to 0/1.
    values = [int(float(v)) for v in schema.get_label_values()]
    p = np.where(np.isnan(pred), 0.5, np.take(values, np.nan_to_num(pred).astype(int)))
    np.save(data.parent / "p.npy", p.astype(np.float64))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

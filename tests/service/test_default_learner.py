"""The default configuration learns what a linear model cannot, through the whole daemon."""

import numpy as np
from prometheus_client import CollectorRegistry

from streamlearn.config import load_config
from streamlearn.io.memory import MemorySink, MemorySource
from streamlearn.service.daemon import Daemon
from tests.helpers import LINEAR


def _prequential_accuracy(events: list[dict[str, object]], **over: object) -> float:
    cfg = load_config(
        overrides={
            "model": {"n_features": 2},
            "source": {"synthetic": {"n_features": 2}},
            "metrics": {"enabled": False},
            **over,
        },
        env={},
    )
    sink = MemorySink(capacity=len(events))
    daemon = Daemon(cfg, CollectorRegistry(), source=MemorySource(iter(events)), sink=sink)
    daemon.run()
    y = {e["id"]: e["y"] for e in events}
    preds = list(sink.recent_predictions)
    assert len(preds) == len(events)
    late = preds[len(preds) // 2 :]  # the second half: after learning
    probs = [p.p for p in late if isinstance(p.p, float)]  # binary: P(class 1)
    assert len(probs) == len(late)
    return float(
        np.mean([(q >= 0.5) == (y[p.event_id] == 1) for q, p in zip(probs, late, strict=True)])
    )


def _xor_stream(n: int, n_keys: int, seed: int = 0) -> list[dict[str, object]]:
    """``y = 1`` where the two features share a sign: no linear model beats a coin."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(int)
    keys = rng.integers(n_keys, size=n)
    return [
        {"id": str(i), "key": f"k{k}", "ts": float(i), "x": x[i].round(5).tolist(), "y": int(y[i])}
        for i, k in enumerate(keys)
    ]


def test_the_default_learns_a_nonlinear_concept_that_a_linear_model_cannot() -> None:
    events = _xor_stream(6_000, n_keys=1)
    default = _prequential_accuracy(events)
    # a linear model alone: the 0.2.0 default, without the mixture (whose spline expert is
    # a network)
    linear = _prequential_accuracy(
        events,
        model={**LINEAR["model"], "n_features": 2},
        learner=LINEAR["learner"],
    )
    print(f"second-half accuracy on XOR: default {default:.3f}, linear {linear:.3f}")
    assert linear < 0.6
    assert default > 0.9


def test_many_keys_share_the_default_network() -> None:
    """Twenty keys of one concept, ~400 events each: the shared network learns from all."""
    events = _xor_stream(8_000, n_keys=20, seed=1)
    acc = _prequential_accuracy(events)
    print(f"second-half accuracy on XOR over 20 keys: {acc:.3f}")
    assert acc > 0.85

"""The benchmark streams of the protocol (built before timing, as ``(key, x, y)`` examples).

One-key drift streams (river's generators with the protocol's seeds), the real ``elec`` file,
streamlearn's own many-key ``family`` and the many-entity cold-start stream ``coldstart_p``,
whose recipe the protocol gives and which no library ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ELEC = ROOT.parent / "shared" / "data" / "elec.csv"
Example = tuple[str, list[float], int]
RegressionExample = tuple[str, list[float], float]


@dataclass(frozen=True)
class StreamInfo:
    about: str
    drifts: list[int]  # abrupt drift points, for recovery


STREAMS: dict[str, StreamInfo] = {
    "family100": StreamInfo(
        "100 keys, shared recurring concepts, abrupt drift / 20k",
        [20_000, 40_000, 60_000, 80_000],
    ),
    "family1000": StreamInfo(
        "1,000 keys, shared recurring concepts, abrupt drift / 20k",
        [20_000, 40_000, 60_000, 80_000],
    ),
    "family10": StreamInfo(
        "10 keys, shared recurring concepts, abrupt drift / 20k",
        [20_000, 40_000, 60_000, 80_000],
    ),
    "sea_a": StreamInfo("river SEA variants 0..3, 25k each (one key)", [25_000, 50_000, 75_000]),
    "hyper_g": StreamInfo("river Hyperplane, 10 features, gradual drift, 100k (one key)", []),
    "agr_a": StreamInfo(
        "river Agrawal functions 0..3, 25k each (one key)", [25_000, 50_000, 75_000]
    ),
    "rbf_d": StreamInfo("river RandomRBFDrift, 50 moving centroids, 100k (one key)", []),
    "elec": StreamInfo("shared/data/elec.csv, 45,312 rows (one key)", []),
    "coldstart_p": StreamInfo("1,500 entities arriving and retiring, ~40 active, 120k", []),
}
# Streams of the protocol's kinds that no default was tuned on (other generators, seeds,
# functions and drift rates): the check that a default wins beyond the public streams.
HELD_OUT: dict[str, StreamInfo] = {
    "agr_b": StreamInfo(
        "river Agrawal functions 4..7, 12.5k each, perturbation 0.05", [12_500, 25_000, 37_500]
    ),
    "sea_n": StreamInfo(
        "river SEA variants 3,1,2,0, 12.5k each, 10% noise", [12_500, 25_000, 37_500]
    ),
    "hyper_f": StreamInfo("river Hyperplane, 5 of 10 features drifting at 0.01, 10% noise", []),
    "rbf_f": StreamInfo("river RandomRBFDrift, 25 of 50 centroids moving at 0.01", []),
    "stagger": StreamInfo("river STAGGER functions 0,1,2,0, 12.5k each", [12_500, 25_000, 37_500]),
    "sine": StreamInfo("river Sine functions 0..3, 12.5k each", [12_500, 25_000, 37_500]),
    "mixed": StreamInfo("river Mixed functions 0,1,0,1, 12.5k each", [12_500, 25_000, 37_500]),
    "rtree": StreamInfo("river RandomTree, 5 numeric + 5 categorical features, depth 6", []),
}
STREAMS.update(HELD_OUT)


def held_out_stream(name: str) -> list[Example]:
    """One of :data:`HELD_OUT`, 50,000 examples, one key."""
    from river.datasets import synth

    def segments(makers: list[Any], seg: int = 12_500) -> list[Example]:
        out: list[Example] = []
        for make in makers:
            out += [("k", [float(v) for v in x.values()], int(y)) for x, y in make.take(seg)]
        return out

    def one(gen: Any, n: int = 50_000) -> list[Example]:
        return [("k", [float(v) for v in x.values()], int(y)) for x, y in gen.take(n)]

    if name == "agr_b":
        return segments(
            [synth.Agrawal(classification_function=k, seed=7 + k, perturbation=0.05)
             for k in (4, 5, 6, 7)]
        )  # fmt: skip
    if name == "sea_n":
        return segments([synth.SEA(variant=k, noise=0.1, seed=7 + k) for k in (3, 1, 2, 0)])
    if name == "hyper_f":
        return one(
            synth.Hyperplane(
                seed=7, n_features=10, n_drift_features=5, mag_change=0.01,
                noise_percentage=0.1, sigma=0.1,
            )
        )  # fmt: skip
    if name == "rbf_f":
        return one(
            synth.RandomRBFDrift(
                seed_model=7, seed_sample=7, n_classes=2, n_features=10, n_centroids=50,
                change_speed=0.01, n_drift_centroids=25,
            )
        )  # fmt: skip
    if name == "stagger":
        return segments(
            [synth.STAGGER(classification_function=k, seed=7 + k) for k in (0, 1, 2, 0)]
        )
    if name == "sine":
        return segments([synth.Sine(classification_function=k, seed=7 + k) for k in range(4)])
    if name == "mixed":
        return segments([synth.Mixed(classification_function=k % 2, seed=7 + k) for k in range(4)])
    if name == "rtree":
        return one(
            synth.RandomTree(
                seed_tree=7, seed_sample=7, n_classes=2, n_num_features=5, n_cat_features=5,
                n_categories_per_feature=4, max_tree_depth=6, first_leaf_level=3,
            )
        )  # fmt: skip
    raise ValueError(f"unknown held-out stream {name!r}")


def build_stream(name: str) -> list[Example]:
    """The named stream, every example, in order."""
    from streamlearn.config import FileSourceConfig, SyntheticSourceConfig
    from streamlearn.io.files import replay
    from streamlearn.io.synthetic import build_family

    one_key = SyntheticSourceConfig(n_keys=1, max_events=100_000, seed=42)
    if name == "coldstart_p":
        return coldstart(seed=3).examples
    if name in HELD_OUT:
        return held_out_stream(name)
    if name.startswith("family"):
        cfg = SyntheticSourceConfig(n_keys=int(name[6:]), max_events=100_000)
    elif name == "sea_a":
        cfg = one_key.model_copy(
            update={"family": "sea", "n_features": 3, "segment_length": 25_000, "label_noise": 0.0}
        )
    elif name == "agr_a":
        cfg = one_key.model_copy(
            update={"family": "agrawal", "n_features": 9, "segment_length": 25_000}
        )
    elif name == "hyper_g":
        cfg = one_key.model_copy(
            update={"family": "hyperplane", "n_features": 10, "label_noise": 0.05}
        )
    elif name == "rbf_d":
        cfg = one_key.model_copy(update={"family": "rbf", "n_features": 10})
    elif name == "elec":
        items = replay(FileSourceConfig(path=str(ELEC), label_column="class"))
        return [(e.event["key"], e.event["x"], int(e.y_true)) for e in items]
    else:
        raise ValueError(f"unknown stream {name!r}")
    return [(e.event["key"], e.event["x"], int(e.y_true)) for e in build_family(cfg)]


@dataclass(frozen=True)
class ColdStart:
    examples: list[Example]
    position: np.ndarray  # 1-based index of each event within its entity
    true_p: np.ndarray  # P(y = 1) under the entity's true weights: the ceiling


def coldstart(
    seed: int = 3,
    n_entities: int = 1_500,
    n_events: int = 120_000,
    active: int = 40,
    n_features: int = 10,
    n_concepts: int = 2,
    concept_norm: float = 2.5,
    personal: float = 0.6,
    bias_std: float = 0.5,
) -> ColdStart:
    """``coldstart_p`` (shared/benchmarks.md): entities arrive and retire; each lives 40..120
    events, ``active`` at a time, their events interleaved at random. Entity ``e`` has weights
    ``W_c(e) + personal * u_e`` (``W_c`` of norm ``concept_norm``) and a bias ``N(0, bias_std)``.

    >>> s = coldstart(n_entities=20, n_events=500, active=4)
    >>> len(s.examples), int(s.position.min()), len(s.true_p)
    (500, 1, 500)
    """
    rng = np.random.default_rng(seed)
    concepts = rng.standard_normal((n_concepts, n_features))
    concepts *= concept_norm / np.linalg.norm(concepts, axis=1, keepdims=True)
    concept_of = rng.integers(n_concepts, size=n_entities)
    weights = concepts[concept_of] + personal * rng.standard_normal((n_entities, n_features))
    bias = bias_std * rng.standard_normal(n_entities)
    life = rng.integers(40, 121, size=n_entities)
    x_all = rng.standard_normal((n_events, n_features))
    ent, position = arrivals(rng, life, n_events, active)
    x_all = x_all[: len(ent)]
    logit = (x_all * weights[ent]).sum(1) + bias[ent]
    true_p = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(len(ent)) < true_p).astype(int)
    examples = [
        (f"e{e:05d}", [round(float(v), 6) for v in row], int(t))
        for e, row, t in zip(ent, x_all, y, strict=True)
    ]
    return ColdStart(examples, position, true_p)


def arrivals(
    rng: np.random.Generator, life: np.ndarray, n_events: int, active: int
) -> tuple[np.ndarray, np.ndarray]:
    """Which entity each event belongs to, and its 1-based position within that entity's
    events: ``active`` entities live at a time, entity ``e`` for ``life[e]`` events, their
    events interleaved at random; a retired entity's place goes to the next one."""
    n_entities = len(life)
    slots = list(range(min(active, n_entities)))  # entities now active
    left = [int(life[e]) for e in slots]
    arrived = len(slots)
    keys: list[int] = []
    for _ in range(n_events):
        j = int(rng.integers(len(slots)))
        keys.append(slots[j])
        left[j] -= 1
        if left[j] == 0:  # retires; the next entity arrives in its place
            if arrived < n_entities:
                slots[j], left[j] = arrived, int(life[arrived])
                arrived += 1
            else:
                del slots[j], left[j]
                if not slots:
                    break
    ent = np.asarray(keys)
    seen = np.zeros(n_entities, dtype=np.int64)
    position = np.empty(len(ent), dtype=np.int64)
    for i, e in enumerate(ent):
        seen[e] += 1
        position[i] = seen[e]
    return ent, position


@dataclass(frozen=True)
class SinusoidArrivals:
    examples: list[RegressionExample]
    position: np.ndarray  # 1-based index of each event within its entity
    true_y: np.ndarray  # the entity's noise-free curve at x: the ceiling (MSE = noise**2)


def sinusoid_arrivals(
    seed: int = 5,
    n_entities: int = 1_500,
    n_events: int = 120_000,
    active: int = 40,
    noise: float = 0.1,
) -> SinusoidArrivals:
    """``sinusoid_p``: the few-shot sinusoid family (``y = A sin(x - phi)``, ``A`` in
    [0.1, 5], ``phi`` in [0, pi], ``x`` in [-5, 5], Gaussian noise) with entities that arrive
    and retire as in :func:`coldstart` (each lives 40..120 events, ``active`` at a time).
    Every entity is a new curve: nothing but a start made for adapting helps its first
    labels.

    >>> s = sinusoid_arrivals(n_entities=20, n_events=500, active=4)
    >>> len(s.examples), int(s.position.min()), len(s.true_y)
    (500, 1, 500)
    """
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(0.1, 5.0, n_entities)
    phase = rng.uniform(0.0, np.pi, n_entities)
    life = rng.integers(40, 121, size=n_entities)
    ent, position = arrivals(rng, life, n_events, active)
    x = rng.uniform(-5.0, 5.0, len(ent))
    true_y = amplitude[ent] * np.sin(x - phase[ent])
    y = true_y + noise * rng.standard_normal(len(ent))
    examples = [
        (f"s{e:05d}", [round(float(v), 6)], float(t)) for e, v, t in zip(ent, x, y, strict=True)
    ]
    return SinusoidArrivals(examples, position, true_y)


FEW_SHOT_WINDOWS = ((1, 5), (6, 20), (21, 10**9))

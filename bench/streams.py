"""The benchmark streams of the protocol (built before timing, as ``(key, x, y)`` examples).

One-key drift streams (river's generators with the protocol's seeds), the real ``elec`` file,
streamlearn's own many-key ``family`` and the many-entity cold-start stream ``coldstart_p``,
whose recipe the protocol gives and which no library ships.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ELEC = ROOT.parent / "shared" / "data" / "elec.csv"
Example = tuple[str, list[float], int]


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


def build_stream(name: str) -> list[Example]:
    """The named stream, every example, in order."""
    from streamlearn.config import FileSourceConfig, SyntheticSourceConfig
    from streamlearn.io.files import replay
    from streamlearn.io.synthetic import build_family

    one_key = SyntheticSourceConfig(n_keys=1, max_events=100_000, seed=42)
    if name == "coldstart_p":
        return coldstart(seed=3).examples
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
    slots = list(range(min(active, n_entities)))  # entities now active
    left = [int(life[e]) for e in slots]
    arrived = len(slots)
    seen = np.zeros(n_entities, dtype=np.int64)
    x_all = rng.standard_normal((n_events, n_features))
    keys: list[int] = []
    for _ in range(n_events):
        j = int(rng.integers(len(slots)))
        e = slots[j]
        keys.append(e)
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
    x_all = x_all[: len(ent)]
    logit = (x_all * weights[ent]).sum(1) + bias[ent]
    true_p = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(len(ent)) < true_p).astype(int)
    position = np.empty(len(ent), dtype=np.int64)
    for i, e in enumerate(ent):
        seen[e] += 1
        position[i] = seen[e]
    examples = [
        (f"e{e:05d}", [round(float(v), 6) for v in row], int(t))
        for e, row, t in zip(ent, x_all, y, strict=True)
    ]
    return ColdStart(examples, position, true_p)


FEW_SHOT_WINDOWS = ((1, 5), (6, 20), (21, 10**9))

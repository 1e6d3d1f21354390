"""Seeded, reproducible drifting task families.

Every family yields :class:`LabelledEvent` items: the event mapping of the wire contract plus
the true label (kept even when the event's label is withheld, for an oracle labeller) and the
index of the concept that generated it (ground truth for drift evaluation).

- ``drifting_classification``: many entity keys whose concepts share structure. A small set of
  shared hyperplane concepts recurs (0, 1, ..., C-1, 0, ...) segment after segment; each key
  sees its own perturbation of the shared concept. Drifts are abrupt or gradual (linear mix
  over ``gradual_width`` events). Features have distinct offsets and scales, so online
  standardisation matters.
- ``sinusoid``: regression, ``y = A_k sin(x - phi_k)``, per-key amplitude in [0.1, 5] and
  phase in [0, pi], inputs in [-5, 5]; each segment draws the keys' (A, phi) from a recurring
  set of regimes.
- ``sea``, ``agrawal``, ``hyperplane``, ``rbf``: river's generators, with the segment recipes
  of ``shared/benchmarks.md`` (SEA variant / Agrawal function cycle per segment).
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.config import SyntheticSourceConfig

_CHUNK = 1024


@dataclass(frozen=True, slots=True)
class LabelledEvent:
    event: dict[str, Any]
    y_true: float
    concept: int


def _with_label(
    seed: int, i: int, key: str, x: list[float], y: float, concept: int, keep: bool
) -> LabelledEvent:
    # The seed is part of the id: two streams of one family are distinct events (the
    # daemon drops an id it has seen recently as a producer's duplicate).
    ev: dict[str, Any] = {"id": f"{seed}-{i}", "key": key, "ts": float(i), "x": x}
    if keep:
        ev["y"] = y
    return LabelledEvent(ev, y, concept)


def _concept_schedule(
    rng: np.random.Generator, start: int, n: int, cfg: SyntheticSourceConfig
) -> np.ndarray:
    """Concept index for stream positions ``start .. start+n`` (recurring 0..C-1)."""
    pos = np.arange(start, start + n)
    seg = pos // cfg.segment_length
    concept = seg % cfg.n_concepts
    if cfg.drift == "gradual" and cfg.n_concepts > 1:
        # Mix towards the *next* concept over the last gradual_width events of a segment.
        into = pos - (seg + 1) * cfg.segment_length + cfg.gradual_width
        p_next = np.clip(into / cfg.gradual_width, 0.0, 1.0)
        switch = rng.random(n) < p_next
        concept = np.where(switch, (seg + 1) % cfg.n_concepts, concept)
    return concept


class _KeyedFamily(ABC):
    """Draws events chunk by chunk: uniform keys, the concept schedule, labels kept with
    probability ``label_fraction``; a family supplies ``_draw`` (features and labels)."""

    cfg: SyntheticSourceConfig
    key_names: list[str]

    @abstractmethod
    def _draw(
        self, rng: np.random.Generator, keys: np.ndarray, concept: np.ndarray
    ) -> tuple[list[list[float]], list[float]]:
        """Features (as lists) and labels of one chunk of events."""

    def __iter__(self) -> Iterator[LabelledEvent]:
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed + 1)
        names = self.key_names
        for start in itertools.count(0, _CHUNK):
            keys = rng.integers(0, cfg.n_keys, _CHUNK)
            concept = _concept_schedule(rng, start, _CHUNK, cfg)
            x, y = self._draw(rng, keys, concept)
            keep = (rng.random(_CHUNK) < cfg.label_fraction).tolist()
            ks, cs = keys.tolist(), concept.tolist()
            for j in range(_CHUNK):
                yield _with_label(cfg.seed, start + j, names[ks[j]], x[j], y[j], cs[j], keep[j])


class DriftingClassification(_KeyedFamily):
    """Many related keys, recurring shared hyperplane concepts, per-key perturbations.

    >>> cfg = SyntheticSourceConfig(n_keys=3, n_features=2, segment_length=4)
    >>> events = list(itertools.islice(iter(DriftingClassification(cfg)), 6))
    >>> [e.concept for e in events]
    [0, 0, 0, 0, 1, 1]
    """

    def __init__(self, cfg: SyntheticSourceConfig) -> None:
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        d, c, k = cfg.n_features, cfg.n_concepts, cfg.n_keys
        shared = rng.standard_normal((c, d))
        shared /= np.linalg.norm(shared, axis=1, keepdims=True)
        perturb = rng.standard_normal((k, c, d)) * cfg.key_perturbation / np.sqrt(d)
        w = shared[None, :, :] + perturb
        self.weights = w / np.linalg.norm(w, axis=2, keepdims=True)  # (keys, concepts, d)
        self.offset = rng.uniform(-2.0, 2.0, d)
        self.scale = np.exp(rng.uniform(np.log(0.1), np.log(10.0), d))
        self.key_names = [f"k{j:05d}" for j in range(k)]

    def _draw(
        self, rng: np.random.Generator, keys: np.ndarray, concept: np.ndarray
    ) -> tuple[list[list[float]], list[float]]:
        cfg = self.cfg
        z = rng.standard_normal((len(keys), cfg.n_features))
        score = np.einsum("nd,nd->n", self.weights[keys, concept], z)
        y = (score > 0).astype(np.int64)
        y = np.where(rng.random(len(keys)) < cfg.label_noise, 1 - y, y)
        x = (self.offset + self.scale * z).round(6).tolist()
        return x, y.tolist()


class Sinusoid(_KeyedFamily):
    """Few-shot regression family: per key and regime, ``y = A sin(x - phi)`` + noise.

    >>> cfg = SyntheticSourceConfig(family="sinusoid", n_features=1, n_keys=2, label_noise=0.0)
    >>> e = next(iter(Sinusoid(cfg)))
    >>> len(e.event["x"]), -5.0 <= e.event["x"][0] <= 5.0
    (1, True)
    """

    def __init__(self, cfg: SyntheticSourceConfig) -> None:
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        shape = (cfg.n_keys, cfg.n_concepts)
        self.amplitude = rng.uniform(0.1, 5.0, shape)
        self.phase = rng.uniform(0.0, np.pi, shape)
        self.key_names = [f"k{j:05d}" for j in range(cfg.n_keys)]

    def _draw(
        self, rng: np.random.Generator, keys: np.ndarray, concept: np.ndarray
    ) -> tuple[list[list[float]], list[float]]:
        x = rng.uniform(-5.0, 5.0, len(keys))
        amp, ph = self.amplitude[keys, concept], self.phase[keys, concept]
        # label_noise is the standard deviation of additive Gaussian noise here.
        y = amp * np.sin(x - ph) + self.cfg.label_noise * rng.standard_normal(len(keys))
        return x.round(6)[:, None].tolist(), y.tolist()


class RiverStream:
    """River's synthetic drift generators as a keyed stream (keys drawn uniformly).

    ``sea`` and ``agrawal`` switch variant / classification function every
    ``segment_length`` events (abrupt drift, recipe of ``shared/benchmarks.md``);
    ``hyperplane`` and ``rbf`` drift gradually by themselves.

    >>> cfg = SyntheticSourceConfig(family="sea", n_keys=1, n_features=3, segment_length=5)
    >>> [e.concept for e in itertools.islice(iter(RiverStream(cfg)), 7)]
    [0, 0, 0, 0, 0, 1, 1]
    """

    def __init__(self, cfg: SyntheticSourceConfig) -> None:
        self.cfg = cfg
        self.key_names = [f"k{j:05d}" for j in range(cfg.n_keys)]

    def _segments(self) -> Iterator[tuple[int, Iterator[tuple[dict[Any, Any], Any]]]]:
        from river.datasets import synth  # imported lazily: only these families need it

        cfg = self.cfg
        if cfg.family in ("hyperplane", "rbf"):
            drifting: Any = (
                synth.Hyperplane(
                    seed=cfg.seed,
                    n_features=cfg.n_features,
                    n_drift_features=2,
                    mag_change=0.001,
                    noise_percentage=cfg.label_noise,
                    sigma=0.1,
                )
                if cfg.family == "hyperplane"
                else synth.RandomRBFDrift(
                    seed_model=cfg.seed,
                    seed_sample=cfg.seed,
                    n_classes=2,
                    n_features=cfg.n_features,
                    n_centroids=50,
                    change_speed=0.001,
                    n_drift_centroids=50,
                )
            )
            yield 0, iter(drifting)
            return
        for seg in itertools.count():
            k = seg % 4
            gen: Any
            if cfg.family == "sea":
                gen = synth.SEA(variant=k, noise=cfg.label_noise, seed=cfg.seed + seg)
            else:
                gen = synth.Agrawal(
                    classification_function=k,
                    seed=cfg.seed + seg,
                    balance_classes=False,
                    perturbation=0.0,
                )
            yield k, itertools.islice(iter(gen), cfg.segment_length)

    def __iter__(self) -> Iterator[LabelledEvent]:
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed + 1)
        i = 0
        for concept, gen in self._segments():
            for x, y in gen:
                key = (
                    self.key_names[int(rng.integers(cfg.n_keys))]
                    if cfg.n_keys > 1
                    else (self.key_names[0])
                )
                keep = cfg.label_fraction >= 1.0 or rng.random() < cfg.label_fraction
                yield _with_label(
                    cfg.seed, i, key, [float(v) for v in x.values()], float(int(y)), concept, keep
                )
                i += 1


def build_family(cfg: SyntheticSourceConfig) -> Iterator[LabelledEvent]:
    """The configured family as an (infinite unless ``max_events``) iterator."""
    gen: Iterator[LabelledEvent]
    if cfg.family == "drifting_classification":
        gen = iter(DriftingClassification(cfg))
    elif cfg.family == "sinusoid":
        gen = iter(Sinusoid(cfg))
    else:
        gen = iter(RiverStream(cfg))
    return itertools.islice(gen, cfg.max_events) if cfg.max_events else gen

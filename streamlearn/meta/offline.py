"""``streamlearn meta-train``: meta-train a starting point offline from a stream.

Tasks are the stream's (entity, segment) pieces: for a synthetic family a segment ends where
the generating concept changes (its ground truth); for a file, every ``segment_events``
labelled events of a key. Features are standardised with statistics of the whole training
stream, which the file carries so the daemon starts in the same space. 10% of the tasks are
held out to report the meta-loss before and after. With ``--pool-size K`` it also trains a
pool of K starts for recurring concepts (:mod:`streamlearn.meta.pool`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from streamlearn.io.synthetic import LabelledEvent
from streamlearn.meta.distributed import DistributedMAML, World, join
from streamlearn.meta.initfile import MetaInit
from streamlearn.meta.maml import InnerRule, MetaParams, TaskBatch, meta_loss
from streamlearn.meta.outer import OuterLoop
from streamlearn.meta.pool import cluster_tasks, pool_meta_loss, task_fits
from streamlearn.meta.tasks import TaskBuffer, TaskSnapshot
from streamlearn.model.scaling import RunningStandardizer
from streamlearn.model.spec import ModelSpec


@dataclass(frozen=True)
class OfflineSettings:
    method: str = "maml"  # maml | imaml
    steps: int = 2000
    tasks_per_step: int = 16
    support: int = 10
    query: int = 10
    inner_steps: int = 1
    inner_order: str = "online"  # online | batch (streamlearn.meta.maml)
    inner_rate: float = 0.5
    lam: float = 0.01
    outer_lr: float = 3e-3
    first_order: bool = False
    segment_events: int = 500
    initial_accumulator: float = 0.1
    pool_size: int = 1
    pool_steps: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("maml", "imaml"):
            raise ValueError(f"--method must be 'maml' or 'imaml', got {self.method!r}")
        if self.inner_order not in ("online", "batch"):
            raise ValueError(f"--inner-order must be 'online' or 'batch', got {self.inner_order!r}")
        names = ("steps", "tasks_per_step", "support", "query", "inner_steps", "pool_size")
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")


def build_buffers(
    events: Iterable[LabelledEvent], n_features: int, settings: OfflineSettings
) -> tuple[TaskBuffer, TaskBuffer, RunningStandardizer]:
    """Training and held-out task buffers (by key: 10% of keys held out) and the scaler."""
    keys, xs, ys, concepts = [], [], [], []
    for e in events:
        if "y" not in e.event:
            continue
        keys.append(e.event["key"])
        xs.append(e.event["x"])
        ys.append(e.y_true)
        concepts.append(e.concept)
    if not keys:
        raise ValueError("the training stream holds no labelled events")
    x = np.asarray(xs, dtype=np.float64)
    if x.shape[1] != n_features:
        raise ValueError(f"the stream has {x.shape[1]} features, model.n_features={n_features}")
    scaler = RunningStandardizer(n_features)
    scaler.update(x)
    x_std = scaler.transform(x)
    rng = np.random.default_rng(settings.seed)
    names = sorted(set(keys))
    held = set(rng.choice(names, size=max(1, len(names) // 10), replace=False).tolist())
    train = TaskBuffer(max_per_task=200, max_tasks=100_000, seed=settings.seed)
    test = TaskBuffer(max_per_task=200, max_tasks=100_000, seed=settings.seed + 1)
    last: dict[str, tuple[int, int]] = {}
    for i, key in enumerate(keys):
        seen, concept = last.get(key, (0, concepts[i]))
        boundary = concept != concepts[i] if concepts[i] >= 0 else seen >= settings.segment_events
        buf = test if key in held else train
        if boundary:
            buf.close_segments([key])
            seen = 0
        buf.add([key], x_std[i : i + 1], np.asarray([ys[i]], dtype=np.float32))
        last[key] = (seen + 1, concepts[i])
    return train, test, scaler


@dataclass(frozen=True)
class MetaResult:
    params: MetaParams
    pool: list[MetaParams]  # empty unless settings.pool_size > 1
    summary: dict[str, float]


def _train(
    spec: ModelSpec,
    rule: InnerRule,
    start: MetaParams,
    tasks: TaskSnapshot,
    steps: int,
    settings: OfflineSettings,
    rng: np.random.Generator,
    desc: str,
    progress: bool,
    learn_rates: bool = True,
    world: World | None = None,
) -> MetaParams:
    loop: OuterLoop | DistributedMAML
    if world is not None:
        if settings.method != "maml":
            raise ValueError(f"--method must be 'maml' under torchrun, got {settings.method!r}")
        device = join(world)
        desc = f"{desc} [rank {world.rank}/{world.size}]"
        progress = progress and world.is_main
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    outer: dict[str, Any] = {
        "outer_lr": settings.outer_lr,
        "device": device,
        "first_order": settings.first_order,
        "learn_rates": learn_rates,
    }
    if world is not None:
        loop = DistributedMAML(world, spec, rule, start, **outer)
    else:
        loop = OuterLoop(settings.method, spec, rule, start, **outer)
    bar = tqdm(range(steps), desc=f"{desc} ({settings.method}, {device})", disable=not progress)
    for i in bar:
        loss = loop.step(
            tasks.sample(settings.tasks_per_step, settings.support, settings.query, rng)
        )
        if i % 50 == 0:
            bar.set_postfix(meta_loss=f"{loss:.4f}")
    bar.close()
    return loop.params


def meta_train(
    spec: ModelSpec,
    theta0: torch.Tensor,
    train: TaskBuffer,
    test: TaskBuffer,
    settings: OfflineSettings,
    *,
    progress: bool = True,
    world: World | None = None,
) -> MetaResult:
    """Meta-train from ``theta0`` (then, with ``pool_size`` K > 1, one start per cluster of
    tasks, each warm-started from the shared result); held-out meta-losses in the summary.
    Under torchrun (``world``), every rank runs this on the same data and seed
    (:mod:`streamlearn.meta.distributed`)."""
    rng = np.random.default_rng(settings.seed)
    rule = InnerRule(
        steps=settings.inner_steps,
        lam=settings.lam,
        initial_accumulator=settings.initial_accumulator,
        order="online" if settings.inner_order == "online" else "batch",
    )
    held: TaskBatch = test.sample(200, settings.support, settings.query, rng)

    def held_loss(p: MetaParams) -> float:
        return float(meta_loss(spec, rule, MetaParams(p.theta0.cpu(), p.log_rate.cpu()), held))

    start = MetaParams(theta0, torch.full_like(theta0, float(np.log(settings.inner_rate))))
    before = held_loss(start)
    tasks = train.snapshot(settings.support + settings.query)
    if len(tasks) == 0:
        raise ValueError(f"no training task holds {settings.support + settings.query} examples")
    result = _train(
        spec, rule, start, tasks, settings.steps, settings, rng, "meta-train", progress, True, world
    )
    summary = {"held_out_before": before, "held_out_after": held_loss(result)}
    pool: list[MetaParams] = []
    if settings.pool_size > 1:
        labels = cluster_tasks(
            task_fits(spec, rule, result, tasks), settings.pool_size, settings.seed
        )
        for c in range(settings.pool_size):
            sub = tasks.subset(labels == c)
            desc = f"pool {c + 1}/{settings.pool_size}, {len(sub)} tasks"
            # The rates stay the shared ones: online, every start steps at those rates, and a
            # cluster's tasks alone would push its rates as far as its easiest tasks allow.
            member = _train(
                spec,
                rule,
                result,
                sub,
                settings.pool_steps,
                settings,
                rng,
                desc,
                progress,
                False,
                world,
            )
            pool.append(member)
        summary["held_out_after_pool"] = float(pool_meta_loss(spec, rule, [result, *pool], held))
    return MetaResult(result, pool, summary)


def to_meta_init(result: MetaResult, scaler: RunningStandardizer, version: int) -> MetaInit:
    p = result.params
    pool = torch.stack([m.theta0 for m in result.pool]) if result.pool else None
    return MetaInit(p.theta0, p.log_rate.exp(), version, scaler.state_dict(), result.summary, pool)

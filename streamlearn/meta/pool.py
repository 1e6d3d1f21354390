"""A pool of meta-inits for recurring concepts.

One starting point has to serve every concept a key may drift into. When concepts recur, a
small pool serves better: tasks are clustered by the weights they adapt to, and each cluster
gets its own meta-trained start (warm-started from the shared one). After a drift the daemon
resets a key to the member with the lowest loss on the most recent labels (the labels that
set the detector off are mostly from the new concept), so a concept seen before is recognised
from a few hundred labels across keys instead of relearned key by key.

Member 0 is always the shared meta-init; members ``1..K`` are the clusters' starts.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from scipy.cluster.vq import kmeans2
from torch.func import vmap

from streamlearn.config import MAX_POOL
from streamlearn.meta.maml import InnerRule, MetaParams, TaskBatch, adapt, mean_loss
from streamlearn.meta.tasks import TaskSnapshot
from streamlearn.model import lanes
from streamlearn.model.spec import ModelSpec

FIT_STEPS = 20  # inner steps that take each task close enough to its own fit to cluster on


def task_fits(
    spec: ModelSpec, rule: InnerRule, start: MetaParams, tasks: TaskSnapshot
) -> np.ndarray:
    """How far each task moves from ``start`` in ``FIT_STEPS`` inner steps on the rows every
    task holds (``[T, P]``): what the tasks are clustered on."""
    rows = int(tasks.n.min())
    x = torch.from_numpy(tasks.x[:, :rows])
    y = torch.from_numpy(tasks.y[:, :rows])
    rule = replace(rule, steps=FIT_STEPS)

    def one(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return adapt(spec, rule, start, xs, ys, first_order=True)

    with torch.no_grad():
        return (vmap(one)(x, y) - start.theta0).numpy()


def cluster_tasks(fits: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster labels (``0..k-1``) of the tasks' fits, by direction: how far a task's fit
    moves depends on its label noise and size, the concept on the direction.

    >>> a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    >>> fits = np.stack([a, 2 * a, 3 * a, b, 2 * b, 5 * b]) + 0.01
    >>> labels = cluster_tasks(fits, 2, seed=0)
    >>> len(set(labels[:3])), len(set(labels[3:])), bool(labels[0] != labels[3])
    (1, 1, True)
    """
    if not 1 <= k <= MAX_POOL:
        raise ValueError(f"meta pool size must be >= 1 and <= {MAX_POOL}, got {k}")
    if k > len(fits):
        raise ValueError(f"meta pool size {k} exceeds the {len(fits)} tasks to cluster")
    z = fits / np.maximum(np.linalg.norm(fits, axis=1, keepdims=True), 1e-12)
    _, labels = kmeans2(z.astype(np.float64), k, minit="++", seed=seed)
    return np.asarray(labels, dtype=np.int64)


def pool_meta_loss(
    spec: ModelSpec, rule: InnerRule, members: list[MetaParams], batch: TaskBatch
) -> torch.Tensor:
    """Mean query loss when each task starts from the member that fits its support set best
    (before adapting), then adapts: the held-out score of a pool."""
    with torch.no_grad():
        support = torch.stack(
            [vmap(lambda xs, ys, m=m: mean_loss(spec, m.theta0, xs, ys))(batch.xs, batch.ys)
             for m in members]
        )  # fmt: skip
        pick = support.argmin(0)
        losses = []
        for t in range(len(batch)):
            m = members[int(pick[t])]
            w = adapt(spec, rule, m, batch.xs[t], batch.ys[t])
            losses.append(mean_loss(spec, w, batch.xq[t], batch.yq[t]))
        return torch.stack(losses).mean()


def choose_member(spec: ModelSpec, members: np.ndarray, x: np.ndarray, y: np.ndarray) -> int:
    """Index of the member (row of ``members``) with the lowest mean loss on ``(x, y)``.

    >>> spec = ModelSpec(1)
    >>> members = np.array([[0.0, 0.0], [4.0, 0.0], [-4.0, 0.0]], dtype=np.float32)
    >>> x = np.array([[1.0], [-1.0], [2.0]], dtype=np.float32)
    >>> choose_member(spec, members, x, np.array([0.0, 1.0, 0.0], dtype=np.float32))
    2
    """
    if len(members) == 1 or len(y) == 0:
        return 0
    n = len(y)
    lanes_w = np.repeat(members, n, axis=0)
    loss = lanes.loss(spec, lanes_w, np.tile(x, (len(members), 1)), np.tile(y, len(members)))
    return int(loss.reshape(len(members), n).mean(1).argmin())

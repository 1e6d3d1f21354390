"""The task buffer: labelled data cut into tasks by entity key and by drift boundaries.

A task is one key's labelled events within one segment; a key's segment closes when drift is
detected for it (or globally), and its next event opens a new task. Each task keeps a
seeded reservoir of at most ``max_per_task`` examples (standardised features and labels) in
a preallocated array; beyond ``max_tasks`` the oldest tasks are dropped. A
:class:`TaskSnapshot` (one copy of the eligible tasks, padded) is what meta-training
samples support/query splits from: cheap to take in the stream's thread, cheap to ship to a
worker process.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamlearn.meta.maml import TaskBatch


class _Task:
    __slots__ = ("n", "seen", "x", "y")

    def __init__(self, cap: int, d: int) -> None:
        self.x = np.empty((cap, d), dtype=np.float32)
        self.y = np.empty(cap, dtype=np.float32)
        self.n = 0
        self.seen = 0


@dataclass(frozen=True)
class TaskSnapshot:
    """Tasks with at least ``min_examples`` examples: ``x[T, cap, d]``, ``y[T, cap]`` and
    the number ``n[T]`` of valid rows in each."""

    x: np.ndarray
    y: np.ndarray
    n: np.ndarray
    # the entity of each task (an index): its segments are tasks of one group
    group: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.n)

    def subset(self, mask: np.ndarray) -> TaskSnapshot:
        """The tasks where ``mask`` is true."""
        group = None if self.group is None else self.group[mask]
        return TaskSnapshot(self.x[mask], self.y[mask], self.n[mask], group)

    def split(self, fraction: float, rng: np.random.Generator) -> tuple[TaskSnapshot, TaskSnapshot]:
        """``(train, held_out)``: about ``fraction`` of the entities held out, every task of
        an entity on one side, so a held-out score is on entities never trained on. With a
        single entity its tasks (segments) are split instead.

        >>> snap = TaskSnapshot(np.zeros((6, 2, 1)), np.zeros((6, 2)), np.full(6, 2),
        ...                     np.array([0, 0, 1, 1, 2, 3]))
        >>> train, held = snap.split(0.5, np.random.default_rng(0))
        >>> sorted(set(train.group) & set(held.group)), len(train) + len(held)
        ([], 6)
        """
        group = self.group if self.group is not None else np.arange(len(self.n))
        entities = np.unique(group)
        if len(entities) < 2:
            group, entities = np.arange(len(self.n)), np.arange(len(self.n))
        n_held = min(len(entities) - 1, max(1, round(fraction * len(entities))))
        held = np.isin(group, rng.choice(entities, size=n_held, replace=False))
        return self.subset(~held), self.subset(held)

    def sample(
        self, n_tasks: int, k_support: int, k_query: int, rng: np.random.Generator
    ) -> TaskBatch:
        """``n_tasks`` tasks (with replacement when fewer), split at random."""
        need = k_support + k_query
        if len(self.n) == 0 or int(self.n.max()) < need:
            raise ValueError(f"no task holds {need} examples yet")
        eligible = np.flatnonzero(self.n >= need)
        picks = rng.choice(eligible, size=n_tasks, replace=len(eligible) < n_tasks)
        # A random permutation of each task's valid rows: sort random keys, invalid rows last.
        keys = rng.random((n_tasks, self.x.shape[1]))
        keys[np.arange(self.x.shape[1])[None, :] >= self.n[picks][:, None]] = 2.0
        rows = np.argsort(keys, axis=1)[:, :need]
        x = torch.from_numpy(self.x[picks[:, None], rows])
        y = torch.from_numpy(self.y[picks[:, None], rows])
        return TaskBatch(x[:, :k_support], y[:, :k_support], x[:, k_support:], y[:, k_support:])


class TaskBuffer:
    """Tasks by (key, segment), each a bounded reservoir.

    >>> buf = TaskBuffer(max_per_task=4, max_tasks=10, seed=0)
    >>> buf.add(["a"] * 6 + ["b"] * 6, np.arange(12.0)[:, None], np.ones(12))
    >>> buf.close_segments(["a"])
    >>> buf.add(["a"] * 5, np.zeros((5, 1)), np.zeros(5))
    >>> buf.n_tasks, buf.n_examples
    (3, 12)
    >>> batch = buf.sample(2, k_support=2, k_query=2, rng=np.random.default_rng(0))
    >>> tuple(batch.xs.shape), tuple(batch.yq.shape)
    ((2, 2, 1), (2, 2))
    """

    def __init__(self, max_per_task: int = 200, max_tasks: int = 2000, seed: int = 0) -> None:
        if max_per_task < 2:
            raise ValueError(f"meta.buffer_per_task must be >= 2, got {max_per_task}")
        if max_tasks < 1:
            raise ValueError(f"meta.buffer_tasks must be >= 1, got {max_tasks}")
        self.max_per_task = max_per_task
        self.max_tasks = max_tasks
        self._rng = np.random.default_rng(seed)
        self._tasks: OrderedDict[tuple[str, int], _Task] = OrderedDict()
        self._segment: dict[str, int] = {}
        self._n_examples = 0

    @property
    def n_tasks(self) -> int:
        return len(self._tasks)

    @property
    def n_examples(self) -> int:
        return self._n_examples

    def add(self, keys: Sequence[str], x: np.ndarray, y: np.ndarray) -> None:
        """Labelled events in arrival order (``x`` standardised as the learner saw it)."""
        if len(keys) == 0:
            return
        cap, d = self.max_per_task, x.shape[1]
        tasks, segment = self._tasks, self._segment
        draws = self._rng.random(len(keys)).tolist()
        for i, key in enumerate(keys):
            tid = (key, segment.get(key, 0))
            task = tasks.get(tid)
            if task is None:
                task = tasks[tid] = _Task(cap, d)
                if len(tasks) > self.max_tasks:
                    _, old = tasks.popitem(last=False)
                    self._n_examples -= old.n
            task.seen += 1
            if task.n < cap:
                slot = task.n
                task.n += 1
                self._n_examples += 1
            else:  # reservoir: keep the new one with probability cap / seen
                slot = int(draws[i] * task.seen)
                if slot >= cap:
                    continue
            task.x[slot] = x[i]
            task.y[slot] = y[i]

    def close_segments(self, keys: Iterable[str]) -> None:
        """Drift for these keys: their next events open new tasks."""
        for k in keys:
            self._segment[k] = self._segment.get(k, 0) + 1

    def close_all(self) -> None:
        self.close_segments(list({k for k, _ in self._tasks}))

    def snapshot(self, min_examples: int = 2) -> TaskSnapshot:
        """A copy of the tasks holding at least ``min_examples`` examples."""
        chosen = [t for t in self._tasks.values() if t.n >= min_examples]
        if not chosen:
            d = next(iter(self._tasks.values())).x.shape[1] if self._tasks else 1
            empty = np.zeros((0, self.max_per_task, d), dtype=np.float32)
            return TaskSnapshot(
                empty, np.zeros((0, self.max_per_task), np.float32), np.zeros(0, np.int64)
            )
        keys = [k for (k, _), t in self._tasks.items() if t.n >= min_examples]
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        return TaskSnapshot(
            np.stack([t.x for t in chosen]),
            np.stack([t.y for t in chosen]),
            np.asarray([t.n for t in chosen], dtype=np.int64),
            np.asarray([index[k] for k in keys], dtype=np.int64),
        )

    def sample(
        self, n_tasks: int, k_support: int, k_query: int, rng: np.random.Generator
    ) -> TaskBatch:
        """``n_tasks`` tasks (with replacement when fewer qualify) holding at least
        ``k_support + k_query`` examples, split at random into support and query."""
        need = k_support + k_query
        snap = self.snapshot(need)
        if len(snap) == 0:
            raise ValueError(f"no task holds {need} examples yet ({self.n_tasks} tasks)")
        return snap.sample(n_tasks, k_support, k_query, rng)

    # A key's segment number follows it to the spill store (streamlearn.state.residency); its
    # tasks stay in the buffer, which is bounded on its own.
    name = "tasks"

    def export_keys(self, keys: Sequence[str]) -> dict[str, Any]:
        seg = self._segment
        return {k: seg[k] for k in keys if k in seg}

    def drop_keys(self, keys: Sequence[str]) -> None:
        for k in keys:
            self._segment.pop(k, None)

    def import_keys(self, states: Mapping[str, Any]) -> None:
        self._segment.update({k: int(v) for k, v in states.items()})

    def state_dict(self) -> dict[str, Any]:
        return {
            "segments": dict(self._segment),
            "tasks": [
                {
                    "key": key,
                    "segment": seg,
                    "seen": t.seen,
                    "x": torch.from_numpy(t.x[: t.n].copy()),
                    "y": torch.from_numpy(t.y[: t.n].copy()),
                }
                for (key, seg), t in self._tasks.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._segment = {str(k): int(v) for k, v in state["segments"].items()}
        self._tasks = OrderedDict()
        self._n_examples = 0
        for t in state["tasks"]:
            x, y = t["x"].numpy(), t["y"].numpy()
            task = _Task(self.max_per_task, x.shape[1] if x.ndim == 2 else 1)
            n = min(len(y), self.max_per_task)
            task.x[:n], task.y[:n], task.n, task.seen = x[:n], y[:n], n, int(t["seen"])
            self._tasks[(str(t["key"]), int(t["segment"]))] = task
            self._n_examples += n

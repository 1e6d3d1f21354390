"""The task buffer: labelled data cut into tasks by entity key and by drift boundaries.

A task is one key's labelled events within one segment; a key's segment closes when drift is
detected for it (or globally), and its next event opens a new task. Each task keeps a
seeded reservoir of at most ``max_per_task`` examples (standardised features and labels);
beyond ``max_tasks`` the oldest tasks are dropped. Support/query splits are drawn on demand.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from streamlearn.meta.maml import TaskBatch


@dataclass
class _Task:
    x: list[np.ndarray] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    seen: int = 0


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

    @property
    def n_tasks(self) -> int:
        return len(self._tasks)

    @property
    def n_examples(self) -> int:
        return sum(len(t.y) for t in self._tasks.values())

    def add(self, keys: Sequence[str], x: np.ndarray, y: np.ndarray) -> None:
        """Labelled events in arrival order (``x`` standardised as the learner saw it)."""
        cap = self.max_per_task
        for key, xi, yi in zip(keys, x, y.tolist(), strict=True):
            tid = (key, self._segment.get(key, 0))
            task = self._tasks.get(tid)
            if task is None:
                task = self._tasks[tid] = _Task()
                if len(self._tasks) > self.max_tasks:
                    self._tasks.popitem(last=False)
            task.seen += 1
            if len(task.y) < cap:
                task.x.append(np.array(xi, dtype=np.float32))
                task.y.append(yi)
            else:
                j = int(self._rng.integers(task.seen))
                if j < cap:
                    task.x[j] = np.array(xi, dtype=np.float32)
                    task.y[j] = yi

    def close_segments(self, keys: Iterable[str]) -> None:
        """Drift for these keys: their next events open new tasks."""
        for k in keys:
            self._segment[k] = self._segment.get(k, 0) + 1

    def close_all(self) -> None:
        self.close_segments(list({k for k, _ in self._tasks}))

    def sample(
        self, n_tasks: int, k_support: int, k_query: int, rng: np.random.Generator
    ) -> TaskBatch:
        """``n_tasks`` tasks (with replacement when fewer qualify) holding at least
        ``k_support + k_query`` examples, split at random into support and query."""
        need = k_support + k_query
        eligible = [t for t in self._tasks.values() if len(t.y) >= need]
        if not eligible:
            raise ValueError(f"no task holds {need} examples yet ({self.n_tasks} tasks)")
        picks = rng.choice(len(eligible), size=n_tasks, replace=len(eligible) < n_tasks)
        xs, ys = [], []
        for i in picks:
            task = eligible[int(i)]
            idx = rng.choice(len(task.y), size=need, replace=False)
            xs.append(np.stack([task.x[j] for j in idx]))
            ys.append(np.asarray([task.y[j] for j in idx], dtype=np.float32))
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys))
        return TaskBatch(x[:, :k_support], y[:, :k_support], x[:, k_support:], y[:, k_support:])

    def state_dict(self) -> dict[str, Any]:
        return {
            "segments": dict(self._segment),
            "tasks": [
                {
                    "key": key,
                    "segment": seg,
                    "seen": t.seen,
                    "x": torch.from_numpy(np.stack(t.x)) if t.x else torch.zeros(0),
                    "y": torch.tensor(t.y, dtype=torch.float32),
                }
                for (key, seg), t in self._tasks.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._segment = {str(k): int(v) for k, v in state["segments"].items()}
        self._tasks = OrderedDict()
        for t in state["tasks"]:
            xs = [row.numpy() for row in t["x"]] if t["x"].numel() else []
            self._tasks[(str(t["key"]), int(t["segment"]))] = _Task(
                xs, t["y"].tolist(), int(t["seen"])
            )

"""Online feature standardisation shared by all keys (features share their scale across
entities, and one key alone rarely has enough events to estimate it)."""

from __future__ import annotations

import numpy as np


class RunningStandardizer:
    """Running mean and variance (Chan's parallel update), applied as ``(x - mean) / std``.

    Statistics are updated once per poll with every event of the poll (labelled or not)
    before the poll's predictions are made.

    >>> s = RunningStandardizer(1)
    >>> s.update(np.array([[1.0], [3.0]]))
    >>> s.transform(np.array([[3.0]])).round(3).tolist()
    [[1.0]]
    """

    def __init__(self, n_features: int, eps: float = 1e-8) -> None:
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        self.count = 0
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)
        self.eps = eps

    def update(self, x: np.ndarray) -> None:
        n = x.shape[0]
        if n == 0:
            return
        b_mean = x.mean(axis=0, dtype=np.float64)
        b_m2 = ((x - b_mean) ** 2).sum(axis=0, dtype=np.float64)
        total = self.count + n
        delta = b_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + b_m2 + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        if self.count < 2:
            return np.ones_like(self.mean)
        return np.sqrt(self.m2 / self.count + self.eps)

    def transform(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = ((x - self.mean) / self.std).astype(np.float32)
        return out

    def state_dict(self) -> dict[str, object]:
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.count = int(state["count"])  # type: ignore[call-overload]
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.m2 = np.asarray(state["m2"], dtype=np.float64)

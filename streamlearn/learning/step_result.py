"""What one poll of the online learner hands back, in event order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamlearn.model.spec import ModelSpec


@dataclass(slots=True)
class StepResult:
    """Prequential outputs of one poll, aligned with the batch's events.

    ``p``: P(class 1) for binary, class probabilities ``[n, C]`` for multiclass, the value
    for regression. ``loss`` and ``correct`` are NaN for unlabelled events; ``correct`` is
    NaN for regression too. ``error`` is the drift signal (0/1 error, or the loss).
    """

    p: np.ndarray
    loss: np.ndarray
    correct: np.ndarray
    rollbacks: int
    mean_step: float
    x_std: np.ndarray
    eta: float = 0.0  # the base rate after this poll (hypergradient)
    hypergradient: float = 0.0  # its last signal, mean -cos(g_t, u_{t-1})
    curriculum: float = 1.0  # mean curriculum multiplier of the poll's steps
    recalled: bool = False  # the shared weights moved to a remembered concept after it

    @property
    def error(self) -> np.ndarray:
        return np.where(np.isnan(self.correct), self.loss, 1.0 - self.correct)


def event_outputs(
    spec: ModelSpec, p_sorted: np.ndarray, inv: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (round order -> event order) and 1/0 correctness (NaN: unlabelled, or
    regression)."""
    if spec.task == "multiclass":
        p = p_sorted[inv].astype(np.float64)
        return p, np.where(np.isnan(y), np.nan, (p.argmax(1) == y) * 1.0)
    p = p_sorted[inv, 0].astype(np.float64)
    if spec.task == "binary":
        return p, np.where(np.isnan(y), np.nan, ((p >= 0.5) == (y == 1.0)) * 1.0)
    return p, np.full(len(y), np.nan)

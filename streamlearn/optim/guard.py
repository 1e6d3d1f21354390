"""The update guard: a per-key step that would poison the model is rolled back, never kept."""

from __future__ import annotations

import numpy as np

from streamlearn.config import LearnerConfig
from streamlearn.model import lanes
from streamlearn.model.spec import ModelSpec


class UpdateGuard:
    """Rolls back, per lane, an update with a non-finite loss, parameters or AdaGrad state,
    a step longer than ``learner.max_step_norm``, or (``learner.guard_loss_factor`` > 0) one
    that raises its own example's loss above factor x before + ``guard_loss_floor``. (A huge
    label can overflow ``g*g`` to inf: the step is then 0 but the accumulator is poisoned.)

    >>> from streamlearn.config import LearnerConfig
    >>> g = UpdateGuard(ModelSpec(1), LearnerConfig(max_step_norm=1.0))
    >>> w, a = np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)
    >>> step = np.array([[0.1, 0.1], [3.0, 0.0]], np.float32)
    >>> g.check(w, a, w - step, a, step, np.zeros(2), np.zeros((2, 1)), np.zeros(2),
    ...         np.ones(2, bool))[3].tolist()
    [True, False]
    """

    def __init__(self, spec: ModelSpec, cfg: LearnerConfig) -> None:
        self.spec = spec
        self.max_sq = cfg.max_step_norm**2
        self.factor = cfg.guard_loss_factor
        self.floor = cfg.guard_loss_floor

    def check(
        self,
        w: np.ndarray,
        accum: np.ndarray,
        w_new: np.ndarray,
        accum_new: np.ndarray,
        step: np.ndarray,
        loss: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        labelled: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(weights, accumulators, squared step norms, ok)`` with the rejected lanes rolled
        back (their step counted as 0)."""
        sq = (step * step).sum(1)
        # Any non-finite term turns the check into NaN or inf, which fails the comparison.
        ok = sq + 0.0 * accum_new.sum(1) + 0.0 * loss <= self.max_sq
        if self.factor > 0:
            after = lanes.loss(self.spec, w_new, x, y)
            ok &= ~labelled | (after <= self.factor * loss + self.floor)
        if ok.all():
            return w_new, accum_new, sq, ok
        keep = ok[:, None]
        return (
            np.where(keep, w_new, w),
            np.where(keep, accum_new, accum),
            np.where(ok, sq, 0.0),
            ok,
        )

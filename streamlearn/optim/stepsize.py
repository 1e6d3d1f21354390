"""The step-size pieces the learner's config switches on, combined per round of lanes.

``lr`` for a round = the base rate (``learner.learning_rate``, or the learned per-parameter
rates) x the hypergradient's factor ``eta_t / learning_rate`` (when on) x the PI
controller's gain (when on), the product capped by the curvature's step cap (when on), x
each lane's curriculum multiplier (when on). Everything it measures is kept for the metrics.
"""

from __future__ import annotations

import math

import numpy as np

from streamlearn.config import LearnerConfig
from streamlearn.model.spec import ModelSpec
from streamlearn.optim.curriculum import curriculum_weight, margins
from streamlearn.optim.hypergradient import HypergradientRate
from streamlearn.optim.sharpness import CurvatureWatch


class StepSizer:
    """Per-round learning rates.

    >>> from streamlearn.config import LearnerConfig
    >>> cfg = LearnerConfig(learning_rate=0.5, curriculum={"enabled": True, "floor": 0.0})
    >>> sizer = StepSizer(ModelSpec(1), cfg)
    >>> p = np.array([[0.5], [0.999]])
    >>> lr = sizer.rates(0.5, np.ones((2, 2)), np.zeros((2, 2)), p, np.array([1.0, 0.0]))
    >>> [round(v, 3) for v in lr[:, 0].tolist()]  # the confidently wrong lane barely moves
    [0.491, 0.0]
    """

    def __init__(self, spec: ModelSpec, cfg: LearnerConfig) -> None:
        self.spec = spec
        self.cfg = cfg
        h = cfg.hypergradient
        self.hyper = (
            HypergradientRate(cfg.learning_rate, beta=h.beta, low=h.low, high=h.high)
            if h.enabled
            else None
        )
        timed = cfg.curvature.enabled or cfg.controller.enabled
        self.watch = CurvatureWatch(spec, cfg) if timed else None
        # The curvature cap and the PI gain change only between polls (the watch refreshes
        # after a poll's rounds); the hypergradient and the curriculum change every round.
        self.per_round = self.hyper is not None or cfg.curriculum.enabled
        self.residual_scale = 1.0  # regression curriculum: running mean |residual|
        self._weight_sum = 0.0
        self._weight_n = 0

    @property
    def eta(self) -> float:
        """The base rate in force."""
        eta = self.cfg.learning_rate if self.hyper is None else self.hyper.eta
        if self.watch is not None:
            eta *= math.exp(self.watch.log_gain)
            if self.watch.cap is not None:
                eta = min(eta, self.watch.cap)
        return eta

    @property
    def hypergradient(self) -> float:
        return 0.0 if self.hyper is None else self.hyper.last

    def take_mean_weight(self) -> float:
        """Mean curriculum multiplier since the last call (1 when off or idle)."""
        n, s = self._weight_n, self._weight_sum
        self._weight_n, self._weight_sum = 0, 0.0
        return s / n if n else 1.0

    def poll_rate(self, base: float | np.ndarray) -> float | np.ndarray:
        """The base rate for a poll whose rounds need no :meth:`rates` (no per-round piece)."""
        if self.watch is None or self.hyper is not None:
            return base
        return base * (self.eta / self.cfg.learning_rate)

    def rates(
        self,
        base: float | np.ndarray,
        g: np.ndarray,
        u_prev: np.ndarray,
        p: np.ndarray,
        y: np.ndarray,
        labelled: np.ndarray | None = None,
    ) -> float | np.ndarray:
        """The round's rate(s): a scalar, ``[P]``, or ``[L, 1|P]`` with the curriculum.
        ``base`` as :meth:`poll_rate` returned it; ``g``: the lanes' gradients now;
        ``u_prev``: their last AdaGrad directions."""
        lab = np.ones(len(g), dtype=bool) if labelled is None else labelled
        lr: float | np.ndarray = base
        if self.hyper is not None:  # eta_t, times the watch's gain and cap
            self.hyper.update(g[lab], u_prev[lab])
            lr = lr * (self.eta / self.cfg.learning_rate)
        c = self.cfg.curriculum
        if c.enabled:
            m = margins(self.spec, p, y, self.residual_scale)
            w = curriculum_weight(m, c.midpoint, c.steepness, c.floor)
            self._weight_sum += float(w[lab].sum())
            self._weight_n += int(lab.sum())
            lr = lr * w[:, None]
            if self.spec.task == "regression" and lab.any():
                resid = float(np.abs(y[lab] - p[lab, 0]).mean())
                self.residual_scale = 0.99 * self.residual_scale + 0.01 * resid
        return lr

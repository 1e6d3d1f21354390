"""Online hypergradient of the loss with respect to the base rate (hypergradient descent).

One AdaGrad step is ``w_t = w_{t-1} - eta * u_{t-1}`` with the preconditioned direction
``u_{t-1} = g_{t-1} / (sqrt(G) + eps)``. The next loss therefore depends on ``eta`` through
``w_t``, and ``d loss_t / d eta = -g_t . u_{t-1}``: the gradient at the new point against the
last direction. Positive: the last step overshot (the new gradient points back), so eta
should fall; negative: the steps agree, so eta may grow. The adaptation acts on ``log eta``
with the normalised signal ``-cos(g_t, u_{t-1})``, so it is scale-free and bounded.
"""

from __future__ import annotations

import math

import numpy as np


def rate_hypergradient(g_now: np.ndarray, u_prev: np.ndarray) -> np.ndarray:
    """``d loss_t / d eta`` per lane: ``-g_t . u_{t-1}`` (rows are lanes).

    >>> rate_hypergradient(np.array([[1.0, 0.0]]), np.array([[2.0, 5.0]])).tolist()
    [-2.0]
    """
    return np.asarray(-(g_now * u_prev).sum(-1))


class HypergradientRate:
    """``log eta`` moved by ``-beta * mean cos(g_t, u_{t-1})`` per update, within bounds.

    >>> rate = HypergradientRate(0.5, beta=0.1, low=0.01, high=1.0)
    >>> rate.update(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]]))  # steps agree: grow
    >>> round(rate.eta, 4)
    0.5526
    >>> rate.update(np.array([[-1.0, 0.0]]), np.array([[1.0, 0.0]]))  # g points back: fall
    >>> round(rate.eta, 4)
    0.5
    """

    def __init__(self, eta: float, *, beta: float, low: float, high: float) -> None:
        if not 0 < low <= eta <= high:
            raise ValueError(
                f"learner.hypergradient needs 0 < low <= learning_rate <= high, "
                f"got low={low}, learning_rate={eta}, high={high}"
            )
        if beta <= 0:
            raise ValueError(f"learner.hypergradient.beta must be > 0, got {beta}")
        self.beta = beta
        self._log_low, self._log_high = math.log(low), math.log(high)
        self._log_eta = math.log(eta)
        self.last = 0.0  # the last mean hypergradient signal (for metrics)

    @property
    def eta(self) -> float:
        return math.exp(self._log_eta)

    def set_eta(self, eta: float) -> None:
        """Restore a rate (from a checkpoint), within the bounds."""
        self._log_eta = min(self._log_high, max(self._log_low, math.log(eta)))

    def update(self, g_now: np.ndarray, u_prev: np.ndarray) -> None:
        """One adaptation from the lanes' new gradients and their previous directions; lanes
        with no previous direction (zero rows) are left out."""
        norms = np.linalg.norm(g_now, axis=-1) * np.linalg.norm(u_prev, axis=-1)
        ok = norms > 0
        if not ok.any():
            return
        cos = -rate_hypergradient(g_now[ok], u_prev[ok]) / norms[ok]
        self.last = float(-cos.mean())
        self._log_eta = min(
            self._log_high, max(self._log_low, self._log_eta - self.beta * self.last)
        )

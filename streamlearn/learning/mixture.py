"""Two predictions for every event, mixed online: the key's own weights and the shared ones.

With ``learner.shared`` on, every event has two predictions at hand: by its key's weights
(the shared weights plus the key's offset) and by the shared weights alone, one model
learned from every label. Which is better depends on the stream: the key's weights on a
population whose entities differ or on a concept that moves faster than the shared
model's averaged steps follow; the shared weights where a key's offset only adds noise.
Neither wins everywhere (docs/benchmarks.md), and a stream can change which one it favours.

So the prediction served is their mixture, weighted by exponential weights on each
expert's prequential log loss with a fixed share (Herbster and Warmuth, "Tracking the best
expert", 1998): after each label, weight ``w_i`` becomes ``v_i = w_i exp(-loss_i) / Z``,
then ``(1 - share) v_i + share / (E - 1) * sum_{j != i} v_j``. With the learning rate 1 on
log loss the mixture's total log loss is at most the best expert's plus ``log E`` (Bayes
mixture), and the share lets the weights follow a switch of the best expert at a cost of
about ``log(1 / share)`` per switch instead of the whole evidence gathered against it.

The weights are one pair for the whole stream (per key they cost accuracy on the
cold-start stream: a new key's offset is zero, so both experts agree until the evidence
could have told them apart). The experts learn as before; only the prediction served,
and its loss (what regret, drift detection and metrics see), is the mixture's. Not for
regression: a mixture needs a likelihood, and squared error has no scale to make one of.
Each expert's loss is taken on its probability clipped to ``[1e-7, 1]`` (a saturated
prediction would otherwise wipe out its weight on one label).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import torch

_CLIP = 1e-7


class ExpertMixture:
    """Fixed-share exponential weights over experts' probabilities.

    >>> m = ExpertMixture(share=0.0)
    >>> p, loss = m.mix(
    ...     [np.array([[0.9]], np.float32), np.array([[0.6]], np.float32)],
    ...     np.array([1.0], np.float32), np.array([True]))
    >>> round(float(p[0, 0]), 3), [round(float(w), 3) for w in m.weights]  # 0.9 earned more
    (0.75, [0.6, 0.4])
    """

    def __init__(self, share: float, n_experts: int = 2) -> None:
        if not 0.0 <= share < 1.0:
            raise ValueError(f"learner.shared.mixture.share must be in [0, 1), got {share}")
        if n_experts < 2:
            raise ValueError(f"a mixture needs at least 2 experts, got {n_experts}")
        self.share = share
        self.weights = np.full(n_experts, 1.0 / n_experts)

    def mix(
        self, experts: list[np.ndarray], y: np.ndarray, labelled: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The mixture's prediction of each event (``[n, o]``: P(class 1), or the class
        probabilities) and its log loss (0 where unlabelled), event after event in the given
        order, each predicted before its label updates the weights."""
        stack = np.ascontiguousarray(np.stack(experts), dtype=np.float64)
        n = stack.shape[1]
        p = np.empty((n, stack.shape[2]), dtype=np.float32)
        loss = np.zeros(n, dtype=np.float32)
        _compiled()(
            stack,
            np.ascontiguousarray(y, dtype=np.float64),
            np.ascontiguousarray(labelled),
            self.weights,
            self.share,
            p,
            loss,
        )
        return p, loss

    def predict(self, experts: list[np.ndarray]) -> np.ndarray:
        """The mixture of these predictions with the weights in force (changes nothing)."""
        out: np.ndarray = np.tensordot(self.weights, np.stack(experts), axes=1)
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weights": torch.from_numpy(self.weights.copy())}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        weights = state["weights"].numpy().astype(np.float64)
        if weights.shape != self.weights.shape:
            raise ValueError(
                f"checkpointed mixture has {len(weights)} experts, this one {len(self.weights)}"
            )
        self.weights = weights


def _fixed_share(
    experts: np.ndarray,
    y: np.ndarray,
    labelled: np.ndarray,
    weights: np.ndarray,
    share: float,
    p_out: np.ndarray,
    loss_out: np.ndarray,
) -> None:
    n_experts, n, n_out = experts.shape
    log_v = np.empty(n_experts)
    for i in range(n):
        for o in range(n_out):
            s = 0.0
            for e in range(n_experts):
                s += weights[e] * experts[e, i, o]
            p_out[i, o] = s
        if not labelled[i]:
            continue
        # the label's probability under each expert, and under the mixture
        if n_out == 1:
            yes = y[i] == 1.0
            mixed = p_out[i, 0] if yes else 1.0 - p_out[i, 0]
            for e in range(n_experts):
                q = experts[e, i, 0] if yes else 1.0 - experts[e, i, 0]
                log_v[e] = math.log(weights[e]) + math.log(max(q, _CLIP))
        else:
            c = int(y[i])
            mixed = p_out[i, c]
            for e in range(n_experts):
                log_v[e] = math.log(weights[e]) + math.log(max(experts[e, i, c], _CLIP))
        loss_out[i] = -math.log(max(mixed, _CLIP))
        top = log_v.max()
        total = 0.0
        for e in range(n_experts):
            log_v[e] = math.exp(log_v[e] - top)
            total += log_v[e]
        for e in range(n_experts):
            v = log_v[e] / total
            weights[e] = (1.0 - share) * v + share / (n_experts - 1) * (1.0 - v)


@functools.cache
def _compiled() -> Callable[..., Any]:
    return numba.njit(cache=True, nogil=True, error_model="numpy")(_fixed_share)

"""One linear model for the whole stream, learned from every label at a steady rate: an
expert of the mixture (:mod:`streamlearn.learning.mixture`).

Why: a network's steps settle, which is what a noisy concept needs, and what a concept
that moves all the time does not; and per-key weights add noise where the concept is one
linear rule for everyone. A logistic (or softmax) regression on the standardised features,
whose AdaGrad accumulator decays by ``forgetting`` per label (so its rate never decays to
nothing: RMSprop's running average), is the expert for those streams: it tracks a moving
linear boundary within tens of labels. It costs ``(d + 1) * o`` weights and one pass over
them per label.

Predict, then learn, event by event in the order given (the learner's round order), so each
prediction sees every earlier label.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import torch

from streamlearn.learning.heads import head


class LinearExpert:
    """A linear model of ``n_features`` inputs and ``n_outputs`` logits (1: binary).

    >>> e = LinearExpert(1, 1, learning_rate=0.5, forgetting=1.0, initial_accumulator=0.0)
    >>> x, y = np.ones((2, 1), np.float32), np.ones(2, np.float32)
    >>> [round(float(v), 3) for v in e.process(x, y, np.ones(2, bool))[0][:, 0]]
    [0.5, 0.731]
    """

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        *,
        learning_rate: float,
        forgetting: float,
        initial_accumulator: float,
        average: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        if not 0.0 <= average < 1.0:
            raise ValueError(f"learner.mixture.linear.average must be in [0, 1), got {average}")
        self.learning_rate = learning_rate
        self.forgetting = forgetting
        self.eps = eps
        self.weights = np.zeros((n_outputs, n_features + 1))  # the bias last
        self.accum = np.full_like(self.weights, initial_accumulator)
        # The weights' exponential running average (Polyak-Ruppert; decay ``average`` per
        # label), a second expert; 0: none.
        self.average = average
        self.average_weights = np.zeros_like(self.weights)

    @property
    def n_experts(self) -> int:
        """Experts it serves: its weights, and their average when ``average`` > 0."""
        return 2 if self.average > 0 else 1

    def process(self, x: np.ndarray, y: np.ndarray, labelled: np.ndarray) -> list[np.ndarray]:
        """P(class 1) ``[n, 1]`` or class probabilities ``[n, C]`` of each event, each
        predicted before its label (where ``labelled``) takes one step: by the weights, then
        (``average`` > 0) by their average."""
        n, o = len(x), self.weights.shape[0]
        p = np.empty((n, o), dtype=np.float32)
        p_avg = np.empty((n, o) if self.average > 0 else (0, o), dtype=np.float32)
        _compiled()(
            np.ascontiguousarray(x, dtype=np.float32),
            np.ascontiguousarray(y, dtype=np.float32),
            np.ascontiguousarray(labelled),
            self.weights,
            self.accum,
            self.learning_rate,
            self.forgetting,
            self.eps,
            p,
            self.average_weights,
            self.average,
            p_avg,
        )
        return [p, p_avg] if self.average > 0 else [p]

    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        """Predictions with the weights in force, as :meth:`process` (changes nothing)."""
        n = len(x)
        accum, weights, average = self.accum.copy(), self.weights.copy(), self.average_weights
        p = np.empty((n, weights.shape[0]), dtype=np.float32)
        p_avg = np.empty((n if self.average > 0 else 0, weights.shape[0]), dtype=np.float32)
        _compiled()(
            np.ascontiguousarray(x, dtype=np.float32),
            np.zeros(n, dtype=np.float32),
            np.zeros(n, dtype=np.bool_),
            weights,
            accum,
            self.learning_rate,
            self.forgetting,
            self.eps,
            p,
            average.copy(),
            self.average,
            p_avg,
        )
        return [p, p_avg] if self.average > 0 else [p]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "weights": torch.from_numpy(self.weights.copy()),
            "accum": torch.from_numpy(self.accum.copy()),
            "average": torch.from_numpy(self.average_weights.copy()),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        weights = state["weights"].numpy().astype(np.float64)
        if weights.shape != self.weights.shape:
            raise ValueError("checkpointed linear expert does not match the model layout")
        self.weights = weights
        self.accum = state["accum"].numpy().astype(np.float64)
        # absent before the average: it starts from the weights
        average = state.get("average")
        self.average_weights = (
            weights.copy() if average is None else average.numpy().astype(np.float64)
        )


def _probabilities(w: np.ndarray, x_row: np.ndarray, z: np.ndarray, out: np.ndarray) -> None:
    """P(class 1) (one logit) or the softmax of ``w``'s logits of one event into ``out``."""
    d = len(x_row)
    n_out = w.shape[0]
    for o in range(n_out):
        s = w[o, d]
        for j in range(d):
            s += w[o, j] * x_row[j]
        z[o] = s
    head(z, n_out, out)


def _learn(
    x: np.ndarray,
    y: np.ndarray,
    labelled: np.ndarray,
    w: np.ndarray,
    accum: np.ndarray,
    lr: float,
    forgetting: float,
    eps: float,
    p_out: np.ndarray,
    average: np.ndarray,
    decay: float,
    p_average: np.ndarray,
) -> None:
    n, d = x.shape
    n_out = w.shape[0]
    z = np.empty(n_out)
    err = np.empty(n_out)
    for i in range(n):
        _probs(w, x[i], z, err)
        for o in range(n_out):
            p_out[i, o] = err[o]
        if decay > 0.0:
            _probs(average, x[i], z, p_average[i])
        if n_out == 1:
            err[0] -= y[i]
        else:
            err[int(y[i])] -= 1.0
        if not labelled[i]:
            continue
        for o in range(n_out):
            for j in range(d + 1):
                g = err[o] * (x[i, j] if j < d else 1.0)
                a = forgetting * accum[o, j] + g * g
                step = lr * g / (math.sqrt(a) + eps)
                if math.isfinite(step):  # a poisoned label never poisons the weights
                    accum[o, j] = a
                    w[o, j] -= step
        if decay > 0.0:
            for o in range(n_out):
                for j in range(d + 1):
                    average[o, j] = decay * average[o, j] + (1.0 - decay) * w[o, j]


_FLAGS: dict[str, Any] = {"nogil": True, "error_model": "numpy"}
_probs = numba.njit(inline="always", **_FLAGS)(_probabilities)


@functools.cache
def _compiled() -> Callable[..., Any]:
    compiled: Callable[..., Any] = numba.njit(cache=True, **_FLAGS)(_learn)
    return compiled

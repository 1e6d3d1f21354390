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


class LinearExpert:
    """A linear model of ``n_features`` inputs and ``n_outputs`` logits (1: binary).

    >>> e = LinearExpert(1, 1, learning_rate=0.5, forgetting=1.0, initial_accumulator=0.0)
    >>> x, y = np.ones((2, 1), np.float32), np.ones(2, np.float32)
    >>> [round(float(v), 3) for v in e.process(x, y, np.ones(2, bool))[:, 0]]
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
        eps: float = 1e-10,
    ) -> None:
        self.learning_rate = learning_rate
        self.forgetting = forgetting
        self.eps = eps
        self.weights = np.zeros((n_outputs, n_features + 1))  # the bias last
        self.accum = np.full_like(self.weights, initial_accumulator)

    def process(self, x: np.ndarray, y: np.ndarray, labelled: np.ndarray) -> np.ndarray:
        """P(class 1) ``[n, 1]`` or class probabilities ``[n, C]`` of each event, each
        predicted before its label (where ``labelled``) takes one step."""
        p = np.empty((len(x), self.weights.shape[0]), dtype=np.float32)
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
        )
        return p

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions with the weights in force (changes nothing)."""
        z = x @ self.weights[:, :-1].T + self.weights[:, -1]
        if z.shape[1] == 1:
            out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))
            return out
        e = np.exp(z - z.max(1, keepdims=True))
        probs: np.ndarray = e / e.sum(1, keepdims=True)
        return probs

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "weights": torch.from_numpy(self.weights.copy()),
            "accum": torch.from_numpy(self.accum.copy()),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        weights = state["weights"].numpy().astype(np.float64)
        if weights.shape != self.weights.shape:
            raise ValueError("checkpointed linear expert does not match the model layout")
        self.weights = weights
        self.accum = state["accum"].numpy().astype(np.float64)


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
) -> None:
    n, d = x.shape
    n_out = w.shape[0]
    z = np.empty(n_out)
    err = np.empty(n_out)
    for i in range(n):
        for o in range(n_out):
            s = w[o, d]
            for j in range(d):
                s += w[o, j] * x[i, j]
            z[o] = s
        if n_out == 1:
            p = 0.5 * (1.0 + math.tanh(0.5 * z[0]))
            p_out[i, 0] = p
            err[0] = p - y[i]
        else:
            top = z.max()
            total = 0.0
            for o in range(n_out):
                err[o] = math.exp(z[o] - top)
                total += err[o]
            for o in range(n_out):
                err[o] /= total
                p_out[i, o] = err[o]
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


@functools.cache
def _compiled() -> Callable[..., Any]:
    return numba.njit(cache=True, nogil=True, error_model="numpy")(_learn)

"""AdaGrad and the proximal term, as pure functions (design §6).

``adagrad_step`` follows ``torch.optim.Adagrad`` exactly (no learning-rate decay):
``G <- G + g*g``, ``w <- w - lr * g / (sqrt(G) + eps)``; the test suite holds it to the
reference optimiser step for step. The functions use arithmetic only, so they take numpy
arrays (the online hot path) and torch tensors (meta-learning, differentiable) alike. Arrays
may carry leading "lane" dimensions (one row per key); ``lr`` may be a scalar or broadcast.
"""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


class AdagradState(NamedTuple, Generic[Array]):
    """Sum of squared gradients, same shape as the parameters."""

    accum: Array


def proximal_grad(grad: Array, params: Array, theta0: Array, lam: float) -> Array:
    """Gradient of ``L + (lam/2)||w - theta0||^2`` given the gradient of ``L``."""
    if lam == 0.0:
        return grad
    out: Array = grad + lam * (params - theta0)
    return out


def adagrad_step(
    params: Array,
    state: AdagradState[Array],
    grad: Array,
    lr: float | Array,
    eps: float = 1e-10,
) -> tuple[Array, AdagradState[Array], Array]:
    """One AdaGrad update. Returns ``(new_params, new_state, step)`` with
    ``new_params = params - step``.

    >>> w, s, step = adagrad_step(np.ones(2), AdagradState(np.zeros(2)),
    ...                           np.array([2.0, -1.0]), lr=0.1)
    >>> w.round(6).tolist()
    [0.9, 1.1]
    """
    accum = state.accum + grad * grad
    step = lr * grad / (accum**0.5 + eps)
    return params - step, AdagradState(accum), step

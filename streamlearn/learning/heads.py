"""The output of the float64 experts (linear, spline, the mixture's calibration): P(class 1)
from one logit, or the softmax of several. The compiled round loop has its own float32 one
(:mod:`streamlearn.learning.kernel`)."""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np


def probabilities(z: np.ndarray, n_out: int, out: np.ndarray) -> None:
    """``out[:n_out]`` from the logits ``z[:n_out]``: the sigmoid of one, the softmax of
    several (shifted by their maximum); ``out`` may be ``z`` itself.

    >>> out = np.zeros(2); probabilities(np.array([0.0, 0.0]), 2, out); out.tolist()
    [0.5, 0.5]
    >>> probabilities(np.array([0.0]), 1, out); float(out[0])
    0.5
    """
    if n_out == 1:
        out[0] = 0.5 * (1.0 + math.tanh(0.5 * z[0]))
        return
    top = z[0]
    for o in range(1, n_out):
        top = max(top, z[o])
    total = 0.0
    for o in range(n_out):
        out[o] = math.exp(z[o] - top)
        total += out[o]
    for o in range(n_out):
        out[o] /= total


_FLAGS: dict[str, Any] = {"nogil": True, "error_model": "numpy"}
head = numba.njit(inline="always", **_FLAGS)(probabilities)

"""The adapted model: its layout and the torch reference, as pure functions of a flat vector.

A model is an MLP (``hidden=[]`` is linear) whose parameters live in one flat vector per
key, so that per-key state is a row of a table and AdaGrad, the proximal term, resets and
checkpoints are single array operations.

:meth:`ModelSpec.loss_one` -- one sample, ``(flat[P], x[d], y) -> loss`` -- is the torch
reference, written for ``torch.func`` (``grad``, ``vmap``, HVPs): the oracle for the online
kernels of :mod:`streamlearn.model.lanes` and the model meta-learning differentiates through.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

Task = Literal["binary", "multiclass", "regression"]
Activation = Literal["tanh", "relu"]


@dataclass(frozen=True)
class ModelSpec:
    """Shape and head of the model.

    >>> spec = ModelSpec(n_features=3, task="binary")
    >>> theta0 = spec.init(seed=0, kind="zeros")
    >>> spec.n_params, spec.predict_from_logits(spec.forward_one(theta0, torch.ones(1, 3)))
    (4, tensor([[0.5000]]))
    """

    n_features: int
    task: Task = "binary"
    n_classes: int = 2
    hidden: Sequence[int] = ()
    activation: Activation = "tanh"
    layers: tuple[tuple[int, int, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.n_features < 1:
            raise ValueError(f"model.n_features must be >= 1, got {self.n_features}")
        if self.task == "multiclass" and self.n_classes < 2:
            raise ValueError(f"model.n_classes must be >= 2, got {self.n_classes}")
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"model.activation must be 'tanh' or 'relu', got {self.activation!r}")
        dims = [self.n_features, *self.hidden, self.n_outputs]
        layers, start = [], 0
        for n_in, n_out in itertools.pairwise(dims):
            layers.append((start, n_in, n_out))
            start += n_out * n_in + n_out
        object.__setattr__(self, "layers", tuple(layers))

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.task == "multiclass" else 1

    @property
    def coin_loss(self) -> float | None:
        """The log loss of a uniform guess over the classes (log 2, or log C); None for
        regression, which has no such guess."""
        if self.task == "regression":
            return None
        return math.log(2 if self.task == "binary" else self.n_classes)

    @property
    def n_params(self) -> int:
        start, n_in, n_out = self.layers[-1]
        return start + n_out * n_in + n_out

    def head_mask(self) -> list[bool]:
        """True for the output layer's parameters (weights and biases), False for the hidden
        layers' (all True for a linear model).

        >>> ModelSpec(n_features=2, hidden=(1,)).head_mask()
        [False, False, False, True, True]
        """
        start = self.layers[-1][0]
        return [i >= start for i in range(self.n_params)]

    def init(self, seed: int = 0, kind: str = "normal", scale: float = 1.0) -> torch.Tensor:
        """A starting point ``theta0``: zeros, or Glorot-normal weights times ``scale``, zero
        biases."""
        if kind == "zeros":
            return torch.zeros(self.n_params)
        gen = torch.Generator().manual_seed(seed)
        flat = torch.zeros(self.n_params)
        for start, n_in, n_out in self.layers:
            std = scale * (2.0 / (n_in + n_out)) ** 0.5
            w = torch.randn(n_out * n_in, generator=gen) * std
            flat[start : start + n_out * n_in] = w
        return flat

    # -- forward ---------------------------------------------------------------------------

    def _act(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z) if self.activation == "tanh" else torch.relu(z)

    def forward_one(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Outputs (logits, or the regression value) for one parameter vector and ``x[..., d]``."""
        h = x
        last = len(self.layers) - 1
        for i, (start, n_in, n_out) in enumerate(self.layers):
            w = flat[start : start + n_out * n_in].reshape(n_out, n_in)
            b = flat[start + n_out * n_in : start + n_out * n_in + n_out]
            h = h @ w.T + b
            if i < last:
                h = self._act(h)
        return h

    def predict_from_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Probability of class 1 (binary), class probabilities (multiclass) or the value."""
        if self.task == "binary":
            return torch.sigmoid(z)
        if self.task == "multiclass":
            return torch.softmax(z, dim=-1)
        return z

    # -- loss ------------------------------------------------------------------------------

    def loss_from_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample loss: log loss (binary / multiclass) or half squared error."""
        if self.task == "binary":
            return F.binary_cross_entropy_with_logits(z[..., 0], y, reduction="none")
        if self.task == "multiclass":
            return F.cross_entropy(
                z.reshape(-1, z.shape[-1]), y.reshape(-1).long(), reduction="none"
            ).reshape(y.shape)
        return 0.5 * (z[..., 0] - y) ** 2

    def loss_one(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar loss of one sample (``x[d]``, scalar ``y``): written for ``torch.func``."""
        z = self.forward_one(flat, x.unsqueeze(0))
        return self.loss_from_logits(z, y.reshape(1)).sum()

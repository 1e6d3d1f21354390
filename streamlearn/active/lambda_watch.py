"""Per-key ``dw*/dlambda`` on a cadence: the lambda-sensitivity of predictions, and the
validation hypergradient that tunes lambda online.

Every ``active.sensitivity_every_labels`` labels, the last ``active.sensitivity_window``
labelled events are grouped by key (at most ``sensitivity_per_key`` newest per key). Each
key's newest quarter is its validation slice, the rest its training slice. For all keys at
once (``torch.func.vmap``): ``w*_k`` = argmin of the mean training loss +
``(lambda/2)||w - a_k||^2`` (``a_k`` the start the key was last reset to), by
``newton_steps`` Newton steps from the key's fast weights (each a fixed-iteration CG on
Hessian-vector products, so that it runs under vmap); then ``dw*_k/dlambda = -(H_k +
lambda I)^-1 (w*_k - a_k)`` by CG, and ``dL_val/dlambda``, the mean over validation events
of ``grad L_val,k(w*_k) . dw*_k/dlambda``. With tuning on, ``log lambda`` steps against it
(normalised by its running RMS, so that ``lambda_tuning.rate`` is the step in log space).

The per-key directions are kept in a table by the learner's key rows; an event's sensitivity
is then ``|grad_w f(x; w_k) . dw*_k/dlambda|`` at the key's current weights: one forward-mode
pass (:func:`streamlearn.model.lanes.directional`) per poll. A key with no recent labels has no
direction (sensitivity 0): with ``w* = a_k`` nothing in its prediction depends on lambda.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.func import grad, hessian, vmap

from streamlearn.config import ActiveConfig
from streamlearn.model import lanes
from streamlearn.model.spec import ModelSpec
from streamlearn.optim.linalg import conjugate_gradient_fixed, hvp
from streamlearn.state.recent import RecentLabels

DENSE_PARAMS = 64


@dataclass(frozen=True)
class KeyDerivatives:
    """Per key (rows): ``w*``, ``dw*/dlambda``, ``grad L_val . dw*/dlambda`` and the number
    of validation events it is a mean over."""

    w_star: torch.Tensor
    dw: torch.Tensor
    hyper: torch.Tensor
    n_val: torch.Tensor


def key_derivatives(
    spec: ModelSpec,
    lam: float,
    w_init: torch.Tensor,
    anchor: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    train: torch.Tensor,
    val: torch.Tensor,
    *,
    newton_steps: int,
    cg_iterations: int,
) -> KeyDerivatives:
    """All keys at once: ``w_init``/``anchor`` ``[K, P]``, ``x`` ``[K, M, d]``, ``y`` and the
    0/1 masks ``train``/``val`` ``[K, M]`` (padding rows are in neither). Models of at most
    ``DENSE_PARAMS`` parameters use dense Hessians, larger ones CG on HVPs."""
    dense = spec.n_params <= DENSE_PARAMS

    def one(
        w: torch.Tensor,
        a: torch.Tensor,
        xk: torch.Tensor,
        yk: torch.Tensor,
        tr: torch.Tensor,
        va: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def data(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            per = vmap(spec.loss_one, in_dims=(None, 0, 0))(v, xk, yk)
            return (per * m).sum() / m.sum().clamp(min=1.0)

        def objective(v: torch.Tensor) -> torch.Tensor:
            return data(v, tr) + 0.5 * lam * ((v - a) ** 2).sum()

        if dense:
            # Small models: the exact Hessian and a direct solve, cheaper than CG's many
            # Hessian-vector products (each a dispatch-bound call on tiny tensors).
            for _ in range(newton_steps):
                w = w - torch.linalg.solve(hessian(objective)(w), grad(objective)(w))
            dw = torch.linalg.solve(hessian(objective)(w), -(w - a))
        else:
            for _ in range(newton_steps):
                h = hvp(objective, w)
                w = w - conjugate_gradient_fixed(h, grad(objective)(w), cg_iterations)
            dw = conjugate_gradient_fixed(hvp(objective, w), -(w - a), cg_iterations)
        g_val = grad(lambda v: data(v, va))(w)
        return w, dw, g_val @ dw

    w_star, dw, hyper = vmap(one)(w_init, anchor, x, y, train, val)
    return KeyDerivatives(w_star, dw, hyper, val.sum(1))


@dataclass(frozen=True)
class LambdaRefresh:
    """What one refresh found."""

    keys: int
    hypergradient: float  # dL_val / dlambda
    lam: float  # lambda after the refresh (moved only with tuning on)
    seconds: float


class LambdaWatch:
    """Cadenced per-key ``dw*/dlambda``, per-event sensitivity, lambda tuning.

    Not run as a doctest (it needs a learner's tables): see ``tests/active/test_active_loop.py``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        cfg: ActiveConfig,
        lam: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lam <= 0:
            raise ValueError(f"learner.proximal_lambda must be > 0 to differentiate in it: {lam}")
        self.spec = spec
        self.cfg = cfg
        self.lam = lam
        self.recent = RecentLabels(cfg.sensitivity_window, spec.n_features)
        self.hypergradient = 0.0
        self.refreshes = 0
        self.seconds = 0.0
        self._dir = np.zeros((0, spec.n_params), dtype=np.float32)
        self._labels = 0
        self._last = 0
        self._rms = 0.0
        self._clock = clock
        self._last_at = -math.inf
        self._warm_up()

    def add_labels(self, slots: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        """Labelled events (the learner's key rows, standardised features, labels)."""
        if len(y):
            self.recent.add(slots.tolist(), x, y)
            self._labels += len(y)

    def forget_rows(self, rows: np.ndarray) -> None:
        """Rows of evicted keys: their labels and directions go before new keys take them."""
        self.recent.forget(rows)
        inside = rows[rows < len(self._dir)]
        self._dir[inside] = 0.0

    def due(self) -> bool:
        """After ``sensitivity_every_labels`` labels, and not sooner than
        ``sensitivity_min_interval_s`` after the last refresh (a fast labelled stream would
        otherwise spend its time refreshing)."""
        c = self.cfg
        return (
            self._labels - self._last >= c.sensitivity_every_labels
            and self._clock() - self._last_at >= c.sensitivity_min_interval_s
        )

    def directions(self, slots: np.ndarray) -> np.ndarray:
        """``dw*/dlambda`` rows of these key rows (zeros where none was solved)."""
        out = np.zeros((len(slots), self.spec.n_params), dtype=np.float32)
        known = (slots >= 0) & (slots < len(self._dir))
        out[known] = self._dir[slots[known]]
        return out

    def sensitivity(self, w: np.ndarray, slots: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``|grad_w f(x; w) . dw*/dlambda|`` per event (``w`` the keys' current weights;
        the L2 norm over class probabilities for multiclass)."""
        d = lanes.directional(self.spec, w, self.directions(slots), x)
        return np.asarray(np.linalg.norm(d, axis=1), dtype=np.float64)

    def refresh(self, params: np.ndarray, anchors: np.ndarray) -> LambdaRefresh:
        """Solve every recently labelled key's problem at the learner's tables (``params``
        and ``anchors``: rows by key row) and, with tuning on, move lambda."""
        started = time.perf_counter()
        self._last = self._labels
        self._last_at = self._clock()
        batch = self._group()
        if batch is None:
            return LambdaRefresh(0, 0.0, self.lam, 0.0)
        slots, x, y, train, val = batch
        c = self.cfg
        d = key_derivatives(
            self.spec,
            self.lam,
            torch.from_numpy(params[slots]).double(),
            torch.from_numpy(anchors[slots]).double(),
            x,
            y,
            train,
            val,
            newton_steps=c.newton_steps,
            cg_iterations=c.cg_iterations,
        )
        dw = d.dw.float().numpy()
        ok = np.isfinite(dw).all(1)
        if len(self._dir) <= int(slots.max()):
            grown = np.zeros((max(2 * len(self._dir), int(slots.max()) + 1), dw.shape[1]))
            grown[: len(self._dir)] = self._dir
            self._dir = grown.astype(np.float32)
        self._dir[slots[ok]] = dw[ok]
        n_val = d.n_val.numpy()
        weight = np.where(ok & np.isfinite(d.hyper.numpy()), n_val, 0.0)
        total = float(weight.sum())
        if total > 0:
            self.hypergradient = float((np.nan_to_num(d.hyper.numpy()) * weight).sum() / total)
            self._tune()
        self.refreshes += 1
        seconds = time.perf_counter() - started
        self.seconds += seconds
        return LambdaRefresh(len(slots), self.hypergradient, self.lam, seconds)

    def _tune(self) -> None:
        t = self.cfg.lambda_tuning
        if not t.enabled:
            return
        u = self.lam * self.hypergradient  # d L_val / d log lambda
        self._rms = math.sqrt(0.9 * self._rms**2 + 0.1 * u * u) if self._rms else abs(u)
        if self._rms > 0:
            log_lam = math.log(self.lam) - t.rate * u / self._rms
            self.lam = min(max(math.exp(log_lam), t.low), t.high)

    def _group(
        self,
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        tags = np.asarray(self.recent.tags(), dtype=np.int64)
        if not len(tags):
            return None
        x_all, y_all = self.recent.rows()
        # At most sensitivity_max_keys keys per refresh, the most recently labelled: the
        # cost grows with the keys, and a refresh must stay a small share of the loop.
        newest_first = np.unique(tags[::-1], return_index=True)
        recent_keys = newest_first[0][np.argsort(newest_first[1])][: self.cfg.sensitivity_max_keys]
        keep = np.isin(tags, recent_keys)
        tags, x_all, y_all = tags[keep], x_all[keep], y_all[keep]
        slots, inverse = np.unique(tags, return_inverse=True)
        m = self.cfg.sensitivity_per_key
        k = len(slots)
        x = np.zeros((k, m, x_all.shape[1]), dtype=np.float64)
        y = np.zeros((k, m), dtype=np.float64)
        train = np.zeros((k, m))
        val = np.zeros((k, m))
        order = np.argsort(inverse, kind="stable")  # by key, oldest first within a key
        ends = np.cumsum(np.bincount(inverse, minlength=k))
        for i in range(k):
            rows = order[(ends[i - 1] if i else 0) : ends[i]][-m:]  # the key's newest
            n = len(rows)
            x[i, :n], y[i, :n] = x_all[rows], y_all[rows]
            n_val = n // 4
            train[i, : n - n_val] = 1.0
            val[i, n - n_val : n] = 1.0
        as_t = torch.from_numpy
        return slots, as_t(x), as_t(y), as_t(train), as_t(val)

    def _warm_up(self) -> None:
        """torch.func traces on first use: pay it when the service starts."""
        p, dim = self.spec.n_params, self.spec.n_features
        z = torch.zeros(1, p, dtype=torch.float64)
        ones = torch.ones(1, 2, dtype=torch.float64)
        key_derivatives(
            self.spec,
            self.lam,
            z,
            z,
            torch.zeros(1, 2, dim, dtype=torch.float64),
            torch.zeros(1, 2, dtype=torch.float64),
            ones,
            ones,
            newton_steps=self.cfg.newton_steps,
            cg_iterations=self.cfg.cg_iterations,
        )

    def state_dict(self) -> dict[str, object]:
        return {
            "lam": self.lam,
            "rms": self._rms,
            "hypergradient": self.hypergradient,
            "recent": self.recent.state_dict(),
            "directions": torch.from_numpy(self._dir.copy()),
            "labels": [self._labels, self._last],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = float(state["lam"])
        self._rms = float(state["rms"])
        self.hypergradient = float(state["hypergradient"])
        if "recent" in state:  # absent in checkpoints of the first version
            self.recent.load_state_dict(state["recent"])
            self._dir = state["directions"].numpy().astype(np.float32)
            self._labels, self._last = (int(v) for v in state["labels"])

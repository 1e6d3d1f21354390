"""Curvature on a cadence: the step cap it implies and PI control of the rate on sharpness.

Every ``curvature.every_labels`` labels, the loss of the last ``curvature.window`` labelled
events (plus the proximal term) is taken at the mean of those events' keys' weights, and
Lanczos on Hessian-vector products (or, for models with no more parameters than
``curvature.iterations``, the dense Hessian) gives the extreme eigenvalues of the
*preconditioned* Hessian ``D^1/2 H D^1/2``, ``D`` the mean AdaGrad scaling
``1 / (sqrt(G) + eps)`` of those keys: an AdaGrad step is ``eta D g``, so this is the
Hessian the rate ``eta`` meets. The rate is capped at
:func:`~streamlearn.optim.curvature.step_cap` of it (an approximation: keys' own scalings
differ from the mean). With the controller on, a PI controller drives the
sharpness ``eta * lambda_max`` (``controller.signal: sharpness``) or the loss trend (fast
over slow moving mean of the prequential loss, ``loss_trend``: a rising loss lowers the rate)
to its setpoint by acting on ``log eta``, sampled at the same cadence.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch.func import hessian, vmap

from streamlearn.config import LearnerConfig
from streamlearn.model import lanes
from streamlearn.model.spec import ModelSpec
from streamlearn.optim.curvature import Spectrum, lanczos, step_cap
from streamlearn.optim.pi import PIController
from streamlearn.state.recent import RecentLabels


class CurvatureWatch:
    """Cadenced curvature and the rate factors it implies (cap, PI gain).

    Not run as a doctest (it needs a learner's tables): see ``tests/optim/test_step_rules.py``.
    """

    def __init__(self, spec: ModelSpec, cfg: LearnerConfig) -> None:
        c, k = cfg.curvature, cfg.controller
        self.spec = spec
        self.cfg = cfg
        self.recent = RecentLabels(c.window, spec.n_features)
        self.lam = cfg.proximal_lambda  # the proximal strength in force (tuned: the learner's)
        self.spectrum: Spectrum | None = None
        self.cap: float | None = None
        self.refreshes = 0
        self.seconds = 0.0  # spent refreshing, in all
        self._labels = 0
        self._last_refresh_labels = 0
        self.pi = (
            PIController(
                setpoint=k.setpoint,
                kp=k.kp,
                ki=k.ki,
                out_min=math.log(k.low),
                out_max=math.log(k.high),
            )
            if k.enabled
            else None
        )
        self._fast: float | None = None
        self._slow: float | None = None
        if cfg.curvature.enabled and spec.n_params <= cfg.curvature.iterations:
            self._warm_up()  # the dense path's torch.func

    @property
    def labels_since_refresh(self) -> int:
        return self._labels - self._last_refresh_labels

    @property
    def log_gain(self) -> float:
        return 0.0 if self.pi is None else self.pi.output

    def add_labels(self, slots: np.ndarray, x: np.ndarray, y: np.ndarray, loss: np.ndarray) -> None:
        """Labelled events in arrival order, with their prequential losses."""
        self.recent.add(slots.tolist(), x, y)
        self._labels += len(y)
        if len(loss):
            # Loss trend: a fast (one window) against a slow (ten windows) moving mean.
            n, w = len(loss), self.cfg.curvature.window
            m = float(loss.mean())
            fast, slow = 1.0 - (1.0 - 1.0 / w) ** n, 1.0 - (1.0 - 0.1 / w) ** n
            self._fast = m if self._fast is None else self._fast + fast * (m - self._fast)
            self._slow = m if self._slow is None else self._slow + slow * (m - self._slow)

    @property
    def loss_trend(self) -> float:
        """Fast over slow moving mean of the loss: above 1 while the loss rises."""
        if self._fast is None or self._slow is None or self._slow <= 0:
            return 1.0
        return self._fast / self._slow

    def due(self) -> bool:
        return self.labels_since_refresh >= self.cfg.curvature.every_labels or (
            self.refreshes == 0 and self._labels >= self.cfg.curvature.window
        )

    def refresh(
        self, params: np.ndarray, accum: np.ndarray, theta0: np.ndarray, eta: float
    ) -> None:
        """Measure at the current tables; ``eta`` is the rate in force (for the sharpness)."""
        started = time.perf_counter()
        if self.cfg.curvature.enabled:
            self._measure_curvature(params, accum, theta0)
        if self.pi is not None:
            if self.cfg.controller.signal == "loss_trend":
                self.pi.update(self.loss_trend)
            elif self.spectrum is not None:
                self.pi.update(eta * self.spectrum.lambda_max)
        self._last_refresh_labels = self._labels
        self.refreshes += 1
        self.seconds += time.perf_counter() - started

    def _measure_curvature(self, params: np.ndarray, accum: np.ndarray, theta0: np.ndarray) -> None:
        x_np, y_np = self.recent.rows()
        slots = np.asarray(self.recent.tags(), dtype=np.int64)
        cfg = self.cfg
        w = torch.from_numpy(params[slots].mean(0)).double()
        scale = 1.0 / (np.sqrt(accum[slots]) + cfg.adagrad_eps)
        root_d = torch.from_numpy(np.sqrt(scale.mean(0))).double()
        x = torch.from_numpy(x_np).double()
        y = torch.from_numpy(y_np).double()
        self.spectrum = self._measure(w, root_d, x, y, torch.from_numpy(theta0).double())
        self.cap = step_cap(self.spectrum)

    def _measure(
        self, w: torch.Tensor, root_d: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
        anchor: torch.Tensor,
    ) -> Spectrum:  # fmt: skip
        spec, lam, k = self.spec, self.lam, self.cfg.curvature.iterations

        def loss(v: torch.Tensor) -> torch.Tensor:
            data = vmap(spec.loss_one, in_dims=(None, 0, 0))(v, x, y).mean()
            return data + 0.5 * lam * ((v - anchor) ** 2).sum()

        if spec.n_params <= k:
            # Lanczos would need n_params iterations anyway: the dense Hessian is exact and
            # cheaper (a linear model of 8 features: 3 ms against 22 ms).
            dense = hessian(loss)(w)
            eig = torch.linalg.eigvalsh(root_d[:, None] * dense * root_d[None, :])
            return Spectrum(float(eig[0]), float(eig[-1]), spec.n_params)
        # Hessian-vector products in numpy (lanes.mean_hvp, exact, held to torch.func's in
        # the tests): a product over the window costs a fraction of torch.func's dispatch.
        w_np, x_np, y_np = w.numpy(), x.numpy(), y.numpy()

        def product(v: torch.Tensor) -> torch.Tensor:
            u = root_d * v
            hu = torch.from_numpy(lanes.mean_hvp(spec, w_np, x_np, y_np, u.numpy()))
            out: torch.Tensor = root_d * (hu + lam * u)
            return out

        return lanczos(product, spec.n_params, k=k)

    def _warm_up(self) -> None:
        """torch.func traces on first use (1.7 s here): pay it when the service starts, not
        in the middle of the stream."""
        p, d = self.spec.n_params, self.spec.n_features
        z = torch.zeros(p, dtype=torch.float64)
        x = torch.zeros(2, d, dtype=torch.float64)
        y = torch.zeros(2, dtype=torch.float64)
        self._measure(z, torch.ones(p, dtype=torch.float64), x, y, z)

    def state_dict(self) -> dict[str, object]:
        """Everything a resumed watch needs to cap and control exactly as before."""
        sp = self.spectrum
        return {
            "recent": self.recent.state_dict(),
            "spectrum": None if sp is None else [sp.lambda_min, sp.lambda_max, sp.iterations],
            "cap": self.cap,
            "labels": self._labels,
            "last_refresh_labels": self._last_refresh_labels,
            "refreshes": self.refreshes,
            "loss_trend": [self._fast, self._slow],
            "pi": self.pi.state_dict() if self.pi is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent.load_state_dict(state["recent"])
        sp = state["spectrum"]
        self.spectrum = None if sp is None else Spectrum(float(sp[0]), float(sp[1]), int(sp[2]))
        self.cap = None if state["cap"] is None else float(state["cap"])
        self._labels = int(state["labels"])
        self._last_refresh_labels = int(state["last_refresh_labels"])
        self.refreshes = int(state["refreshes"])
        self._fast, self._slow = state["loss_trend"]
        if self.pi is not None and state["pi"] is not None:
            self.pi.load_state_dict(state["pi"])

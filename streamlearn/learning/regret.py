"""The shadow baseline that regret is measured against.

``global_model``: the same torch model from the same theta0, one set of weights for all keys,
never reset, AdaGrad with the learner's rate, trained on exactly the labels the learner
sees. No proximal term: lambda ties the learner's per-key weights to their start, and a
baseline that shared it would get worse as lambda grows, making regret look better for no
reason.
To stay cheap it steps once per chunk of ``baseline_batch`` consecutive events on the
chunk's mean gradient, predicting each chunk before learning from it (prequential).
Regret = learner's cumulative prequential loss - the baseline's, on the same labels.
"""

from __future__ import annotations

import numpy as np
import torch

from streamlearn.config import LearnerConfig
from streamlearn.model import lanes
from streamlearn.model.spec import ModelSpec
from streamlearn.optim import AdagradState, adagrad_step


class GlobalBaseline:
    """One global model, mini-batch AdaGrad, no resets.

    >>> spec = ModelSpec(n_features=1)
    >>> b = GlobalBaseline(spec, LearnerConfig(), spec.init(kind="zeros"), chunk=2)
    >>> b.process(np.array([[1.0], [1.0]], dtype=np.float32), np.array([1.0, np.nan])).round(3)
    array([0.693,   nan])
    """

    def __init__(
        self, spec: ModelSpec, cfg: LearnerConfig, theta0: torch.Tensor, chunk: int = 32
    ) -> None:
        if chunk < 1:
            raise ValueError(f"metrics.baseline_batch must be >= 1, got {chunk}")
        self.spec = spec
        self.cfg = cfg
        self.chunk = chunk
        self.theta0 = theta0.detach().cpu().numpy().astype(np.float32)
        self.params = self.theta0.copy()
        self.state = AdagradState(np.full_like(self.params, cfg.initial_accumulator))

    def process(self, x_std: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Prequential loss per event (NaN where unlabelled); ``x_std`` already standardised."""
        n = len(y)
        out = np.full(n, np.nan)
        cfg = self.cfg
        with np.errstate(all="ignore"):
            for lo in range(0, n, self.chunk):
                yc = y[lo : lo + self.chunk]
                labelled = ~np.isnan(yc)
                m = int(labelled.sum())
                if m == 0:
                    continue
                xc = np.asarray(x_std[lo : lo + self.chunk][labelled], dtype=np.float32)
                g, _, loss = lanes.mean_grad(
                    self.spec, self.params, xc, yc[labelled].astype(np.float32)
                )
                out[lo + np.flatnonzero(labelled)] = loss
                new, state, _ = adagrad_step(
                    self.params, self.state, g, cfg.learning_rate, cfg.adagrad_eps
                )
                if np.isfinite(new).all() and np.isfinite(state.accum).all():
                    self.params, self.state = new, state
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "params": torch.from_numpy(self.params.copy()),
            "accum": torch.from_numpy(self.state.accum.copy()),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if tuple(state["params"].shape) != self.params.shape:
            raise ValueError("checkpointed baseline does not match the model layout")
        self.params = state["params"].numpy().astype(np.float32)
        self.state = AdagradState(state["accum"].numpy().astype(np.float32))

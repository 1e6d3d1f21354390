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

Before they are mixed, each expert's probabilities are calibrated online (Platt scaling,
learned prequentially: a scale on the expert's log-probabilities and a bias per output, one
AdaGrad step per label on the calibrated log loss). The weights follow log loss, so an
expert that is often right but overconfident (a linear model at a steady rate on a
noise-free boundary saturates) would otherwise be weighted below its accuracy; calibrated,
it earns its weight. A positive scale keeps the expert's ranking of events and classes;
the biases learn the class prior it misjudges, so they may move a near tie.

An expert that cannot predict yet (the spline expert before its knots are fitted) gives NaN
and *sleeps* (Freund, Schapire, Singer and Warmuth, "Using and combining predictors that
specialize", 1997): the prediction served mixes the awake experts, and the sleeper is taken
to have predicted that mixture, so its weight moves by the mixture's own loss and it wakes
with the weight it had, neither favoured nor penalised by the labels it could not see.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np
import torch

from streamlearn.learning.heads import head

_CLIP = 1e-7
# The experts of the checkpoints that carried no expert names (before the spline expert).
UNNAMED = ("key", "shared", "linear")
# A calibration's first AdaGrad steps: at most the rate over sqrt(this) on its first label.
_CALIBRATION_ACCUM = 1e-2


class ExpertMixture:
    """Fixed-share exponential weights over experts' probabilities, each expert calibrated
    online first (``calibration_rate`` > 0).

    >>> m = ExpertMixture(share=0.0)
    >>> p, loss = m.mix(
    ...     [np.array([[0.9]], np.float32), np.array([[0.6]], np.float32)],
    ...     np.array([1.0], np.float32), np.array([True]))
    >>> round(float(p[0, 0]), 3), [round(float(w), 3) for w in m.weights]  # 0.9 earned more
    (0.75, [0.6, 0.4])
    """

    def __init__(
        self,
        share: float,
        n_experts: int = 2,
        names: Sequence[str] | None = None,
        *,
        n_outputs: int = 1,
        calibration_rate: float = 0.0,
    ) -> None:
        if not 0.0 <= share < 1.0:
            raise ValueError(f"learner.mixture.share must be in [0, 1), got {share}")
        if not calibration_rate >= 0.0:
            raise ValueError(
                f"learner.mixture.calibration_rate must be >= 0, got {calibration_rate}"
            )
        if names is not None:
            n_experts = len(names)
        if n_experts < 2:
            raise ValueError(f"a mixture needs at least 2 experts, got {n_experts}")
        self.share = share
        self.calibration_rate = calibration_rate
        # What each weight is for, so that a checkpoint of other experts still maps.
        self.names = list(names) if names is not None else [str(e) for e in range(n_experts)]
        self.weights = np.full(n_experts, 1.0 / n_experts)
        # Each expert's calibration: a scale on its log-probabilities, then a bias per output
        # (identity: 1, 0), and their AdaGrad accumulators.
        self.calibration = np.zeros((n_experts, 1 + n_outputs))
        self.calibration[:, 0] = 1.0
        self.calibration_accum = np.full_like(self.calibration, _CALIBRATION_ACCUM)

    def mix(
        self, experts: list[np.ndarray], y: np.ndarray, labelled: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The mixture's prediction of each event (``[n, o]``: P(class 1), or the class
        probabilities) and its log loss (0 where unlabelled), event after event in the given
        order, each predicted before its label updates the weights and calibrations."""
        return self._run(
            experts, y, labelled, self.weights, self.calibration, self.calibration_accum
        )

    def predict(self, experts: list[np.ndarray]) -> np.ndarray:
        """The mixture of these predictions with the weights and calibrations in force
        (changes nothing); a NaN prediction sleeps, as in :meth:`mix`."""
        n = len(experts[0])
        p, _ = self._run(
            experts,
            np.zeros(n),
            np.zeros(n, dtype=np.bool_),
            self.weights.copy(),
            self.calibration.copy(),
            self.calibration_accum.copy(),
        )
        return p.astype(np.float64)

    def _run(
        self,
        experts: list[np.ndarray],
        y: np.ndarray,
        labelled: np.ndarray,
        weights: np.ndarray,
        calibration: np.ndarray,
        accum: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        stack = np.ascontiguousarray(np.stack(experts), dtype=np.float64)
        n, n_out = stack.shape[1], stack.shape[2]
        rate = self.calibration_rate
        if rate > 0 and calibration.shape[1] != 1 + n_out:
            raise ValueError(
                f"the mixture calibrates {calibration.shape[1] - 1} outputs, got {n_out}"
            )
        p = np.empty((n, n_out), dtype=np.float32)
        loss = np.zeros(n, dtype=np.float32)
        _compiled()(
            stack,
            np.ascontiguousarray(y, dtype=np.float64),
            np.ascontiguousarray(labelled),
            weights,
            self.share,
            calibration,
            accum,
            rate,
            p,
            loss,
        )
        return p, loss

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": torch.from_numpy(self.weights.copy()),
            "names": list(self.names),
            "calibration": torch.from_numpy(self.calibration.copy()),
            "calibration_accum": torch.from_numpy(self.calibration_accum.copy()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The checkpointed weights of the experts this mixture has; an expert the checkpoint
        lacks (added since) starts at ``1 / E``, the others sharing the rest in their
        checkpointed proportions. A checkpoint without names holds the weights of the
        experts of its day (:data:`UNNAMED`) that this mixture has, in order."""
        weights = state["weights"].numpy().astype(np.float64)
        names = list(state.get("names") or [n for n in self.names if n in UNNAMED])
        if len(names) != len(weights) or not set(names) <= set(self.names):
            raise ValueError(
                f"checkpointed mixture has experts {names}, this one {self.names}: was "
                "learner.mixture changed?"
            )
        given = dict(zip(names, weights, strict=True))
        added = [n for n in self.names if n not in given]
        new_share = len(added) / len(self.names)
        total = sum(given.values())
        self.weights = np.array(
            [
                1.0 / len(self.names) if n not in given else (1 - new_share) * given[n] / total
                for n in self.names
            ]
        )
        if "calibration" in state:  # absent before calibration: identity for every expert
            rows = {n: i for i, n in enumerate(names)}
            cal, acc = state["calibration"].numpy(), state["calibration_accum"].numpy()
            if cal.shape[1] != self.calibration.shape[1]:
                raise ValueError("checkpointed mixture calibrates another number of outputs")
            for i, n in enumerate(self.names):
                if n in rows:
                    self.calibration[i] = cal[rows[n]]
                    self.calibration_accum[i] = acc[rows[n]]


def _calibrated(p: np.ndarray, cal: np.ndarray, rate: float, z: np.ndarray, q: np.ndarray) -> None:
    """Expert probabilities ``p`` (``[o]``) through its calibration into ``q``: logits
    ``z = log p`` (binary: ``log(p / (1 - p))``) scaled by ``cal[0]``, plus ``cal[1:]``, then
    the sigmoid / softmax (online Platt scaling). ``rate`` 0: ``q = p``."""
    n_out = len(p)
    if rate == 0.0 or math.isnan(p[0]):
        for o in range(n_out):
            q[o] = p[o]
        return
    if n_out == 1:
        c = min(max(p[0], _CLIP), 1.0 - _CLIP)
        z[0] = math.log(c / (1.0 - c))
    else:
        for o in range(n_out):
            z[o] = math.log(max(p[o], _CLIP))
    for o in range(n_out):
        q[o] = cal[0] * z[o] + cal[1 + o]
    head(q, n_out, q)


def _calibrate_step(
    q: np.ndarray, z: np.ndarray, label: float, cal: np.ndarray, accum: np.ndarray, rate: float
) -> None:
    """One AdaGrad step of a calibration on the log loss of ``label`` under ``q``."""
    n_out = len(q)
    if n_out == 1:
        g = q[0] - label
        grads = (g * z[0], g)
        for k in range(2):
            accum[k] += grads[k] * grads[k]
            cal[k] -= rate * grads[k] / math.sqrt(accum[k])
        return
    c = int(label)
    g_scale = 0.0
    for o in range(n_out):
        g = q[o] - (1.0 if o == c else 0.0)
        g_scale += g * z[o]
        accum[1 + o] += g * g
        cal[1 + o] -= rate * g / math.sqrt(accum[1 + o])
    accum[0] += g_scale * g_scale
    cal[0] -= rate * g_scale / math.sqrt(accum[0])


def _fixed_share(
    experts: np.ndarray,
    y: np.ndarray,
    labelled: np.ndarray,
    weights: np.ndarray,
    share: float,
    calibration: np.ndarray,
    calibration_accum: np.ndarray,
    rate: float,
    p_out: np.ndarray,
    loss_out: np.ndarray,
) -> None:
    n_experts, n, n_out = experts.shape
    log_v = np.empty(n_experts)
    q = np.empty((n_experts, n_out))  # the experts' calibrated predictions of event i
    z = np.empty((n_experts, n_out))
    for i in range(n):
        awake = 0.0
        for e in range(n_experts):
            _calibrate(experts[e, i], calibration[e], rate, z[e], q[e])
            if not math.isnan(q[e, 0]):
                awake += weights[e]
        for o in range(n_out):
            s = 0.0
            for e in range(n_experts):
                if not math.isnan(q[e, 0]):
                    s += weights[e] * q[e, o]
            p_out[i, o] = s / awake
        if not labelled[i]:
            continue
        # the label's probability under each expert (a sleeping one: the mixture's), and
        # under the mixture
        if n_out == 1:
            yes = y[i] == 1.0
            mixed = p_out[i, 0] if yes else 1.0 - p_out[i, 0]
            for e in range(n_experts):
                r = q[e, 0] if yes else 1.0 - q[e, 0]
                r = mixed if math.isnan(r) else r
                log_v[e] = math.log(weights[e]) + math.log(max(r, _CLIP))
        else:
            c = int(y[i])
            mixed = p_out[i, c]
            for e in range(n_experts):
                r = q[e, c]
                r = mixed if math.isnan(r) else r
                log_v[e] = math.log(weights[e]) + math.log(max(r, _CLIP))
        loss_out[i] = -math.log(max(mixed, _CLIP))
        top = log_v.max()
        total = 0.0
        for e in range(n_experts):
            log_v[e] = math.exp(log_v[e] - top)
            total += log_v[e]
        for e in range(n_experts):
            v = log_v[e] / total
            weights[e] = (1.0 - share) * v + share / (n_experts - 1) * (1.0 - v)
        if rate > 0.0:
            for e in range(n_experts):
                if not math.isnan(q[e, 0]):
                    _step(q[e], z[e], y[i], calibration[e], calibration_accum[e], rate)


_FLAGS: dict[str, Any] = {"nogil": True, "error_model": "numpy"}
_calibrate = numba.njit(inline="always", **_FLAGS)(_calibrated)
_step = numba.njit(inline="always", **_FLAGS)(_calibrate_step)


@functools.cache
def _compiled() -> Callable[..., Any]:
    compiled: Callable[..., Any] = numba.njit(cache=True, **_FLAGS)(_fixed_share)
    return compiled

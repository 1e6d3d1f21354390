"""A poll's learning rounds as one compiled loop: the hot path of the default learner.

What it computes is exactly the numpy round of :meth:`OnlineLearner.process` (the rule's
reference, :mod:`streamlearn.model.lanes` with :func:`streamlearn.optim.adagrad_step`,
:func:`streamlearn.optim.proximal_grad` and :class:`streamlearn.optim.guard.UpdateGuard`),
lane by lane instead of array by array: predict, the data gradient (added to the shared
model's sum), the proximal pull towards the key's start, one AdaGrad step, and the guard's
roll-back of a non-finite or too-long step. The lanes of one round are distinct keys, so
taking them one after the other changes nothing.

Why compiled: on a one-key stream every round is one lane, and the numpy round's ~25 array
calls cost their dispatch each (bench/learners.py measures the difference). The loop stops
where the shared model is due a step (at a piece's start, as the numpy path checks it), so
that step, rare and over every key, stays in numpy. Options that need the whole round's
arrays at once (the rate hypergradient, the curriculum, the guard's loss re-check) keep the
numpy path: :func:`supports` says which.

numba compiles the loop on first use (a few seconds; cached on disk after that).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numba
import numpy as np

from streamlearn.config import LearnerConfig
from streamlearn.model.spec import ModelSpec

_TASKS = {"binary": 0, "multiclass": 1, "regression": 2}


def supports(cfg: LearnerConfig, per_round: bool) -> bool:
    """Whether the compiled loop computes this configuration's rounds."""
    return not per_round and cfg.guard_loss_factor <= 0


class Model(NamedTuple):
    """The model's layout as plain arrays (what the compiled loop reads)."""

    layers: np.ndarray  # [n_layers, 3]: start, n_in, n_out
    tanh: bool
    task: int
    width: int  # the widest layer (scratch size)

    @classmethod
    def of(cls, spec: ModelSpec) -> Model:
        layers = np.asarray(spec.layers, dtype=np.int64).reshape(-1, 3)
        width = int(max(spec.n_features, *(n_out for _, _, n_out in spec.layers)))
        return cls(layers, spec.activation == "tanh", _TASKS[spec.task], width)


class Rounds(NamedTuple):
    """A poll's events in round order and where the output goes (all C-contiguous)."""

    x: np.ndarray  # [n, d] float32
    y: np.ndarray  # [n] float32 (0 where unlabelled)
    labelled: np.ndarray  # [n] bool
    slots: np.ndarray  # [n] int64: each event's key row
    ends: np.ndarray  # [pieces] int64: where each piece of rounds ends
    p: np.ndarray  # [n, o] float32, written
    loss: np.ndarray  # [n] float32, written (0 for unlabelled events)


def run(
    model: Model,
    rounds: Rounds,
    first: int,
    params: np.ndarray,
    accum: np.ndarray,
    anchors: np.ndarray,
    start_of: np.ndarray | None,
    lr: np.ndarray,
    lam: float,
    eps: float,
    max_step_norm: float,
    shared_grad: np.ndarray,
    shared_count: int,
    step_labels: int,
    p_shared: np.ndarray | None = None,
) -> tuple[int, int, float, int, int]:
    """Learn the pieces from ``first`` on until the shared model is due a step.

    ``anchors`` are the starts a key can be pulled to (row 0 theta0; ``start_of`` picks a
    key's row, None: row 0 for every key); ``lr`` the per-parameter rate; ``shared_grad`` is
    added to in place; ``step_labels`` 0 means no shared model. ``params`` and ``accum`` are
    updated in place. Returns ``(next piece, shared count, sum of squared steps, rolled
    back, steps taken)``: the next piece is ``len(ends)`` when the poll is done.
    ``p_shared`` (``[n, o]``), when given, receives each event's prediction by the shared
    weights (``anchors[0]``) at the same moment, for :mod:`streamlearn.learning.mixture`.
    """
    stats = np.zeros(3, dtype=np.float64)
    counts = np.array([shared_count], dtype=np.int64)
    pooled = start_of is not None
    which = start_of if start_of is not None else np.zeros(1, dtype=np.int64)
    nxt = _compiled()(
        model.layers,
        model.tanh,
        model.task,
        model.width,
        rounds.x,
        rounds.y,
        rounds.labelled,
        rounds.slots,
        rounds.ends,
        first,
        params,
        accum,
        anchors,
        which,
        pooled,
        lr,
        np.float32(lam),
        np.float32(eps),
        float(max_step_norm) ** 2,
        shared_grad,
        counts,
        step_labels,
        rounds.p,
        rounds.loss,
        p_shared is not None,
        rounds.p if p_shared is None else p_shared,
        stats,
    )
    return int(nxt), int(counts[0]), float(stats[0]), int(stats[1]), int(stats[2])


def _tanh_rational(x: np.float32) -> np.float32:
    """tanh in float32 by Eigen's rational approximation (``generic_fast_tanh_float``):
    within 3e-7 of tanh, and a few multiplies where libm's tanhf is a call the loop cannot
    vectorise (64 of them per event for two layers of 32)."""
    if math.isnan(x):  # NaN stays NaN, for the guard to see
        return x
    c = np.float32(7.90531110763549805)  # beyond it tanh is 1 in float32
    x = min(max(x, -c), c)
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = x2 * p + np.float32(2.00018790482477e-13)
    p = x2 * p + np.float32(-8.60467152213735e-11)
    p = x2 * p + np.float32(5.12229709037114e-08)
    p = x2 * p + np.float32(1.48572235717979e-05)
    p = x2 * p + np.float32(6.37261928875436e-04)
    p = x2 * p + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = x2 * q + np.float32(1.18534705686654e-04)
    q = x2 * q + np.float32(2.26843463243900e-03)
    q = x2 * q + np.float32(4.89352518554385e-03)
    out: np.float32 = x * p / q
    return out


tanh_f32 = numba.njit(inline="always", error_model="numpy")(_tanh_rational)


def _forward(
    layers: np.ndarray, tanh: bool, w: np.ndarray, x: np.ndarray, acts: np.ndarray
) -> None:
    """One example through the model: ``acts[i]`` is layer i's input, ``acts[-1]`` the
    outputs (logits or values)."""
    n_layers = layers.shape[0]
    for j in range(x.shape[0]):
        acts[0, j] = x[j]
    for li in range(n_layers):
        start, n_in, n_o = layers[li, 0], layers[li, 1], layers[li, 2]
        mid = start + n_o * n_in
        h_in = acts[li]
        for o in range(n_o):
            s = w[mid + o]
            row = start + o * n_in
            for k in range(n_in):
                s += w[row + k] * h_in[k]
            if li < n_layers - 1:
                s = tanh_f32(s) if tanh else max(s, np.float32(0.0))
            acts[li + 1, o] = s


def _probabilities(task: int, z: np.ndarray, n_out: int, out: np.ndarray) -> float:
    """P(class 1), the class probabilities, or the value, from the outputs ``z``; returns
    the log of the softmax's normaliser (multiclass; 0 otherwise), for a stable log loss."""
    if task == 0:
        out[0] = np.float32(0.5) * (np.float32(1.0) + tanh_f32(np.float32(0.5) * z[0]))
    elif task == 1:
        m = z[0]
        for o in range(1, n_out):
            m = max(m, z[o])
        tot = np.float32(0.0)
        for o in range(n_out):
            out[o] = np.float32(math.exp(z[o] - m))
            tot += out[o]
        for o in range(n_out):
            out[o] = out[o] / tot
        return float(m) + math.log(tot)
    else:
        out[0] = z[0]
    return 0.0


_FLAGS: dict[str, Any] = {
    "error_model": "numpy",
    "fastmath": {"reassoc", "contract", "arcp", "nsz"},
}
forward = numba.njit(inline="always", **_FLAGS)(_forward)
probabilities = numba.njit(inline="always", **_FLAGS)(_probabilities)


@functools.cache
def _compiled() -> Callable[..., Any]:
    compiled: Callable[..., Any] = numba.njit(cache=True, nogil=True, **_FLAGS)(_rounds)
    return compiled


def _rounds(
    layers: np.ndarray,
    tanh: bool,
    task: int,
    width: int,
    xs: np.ndarray,
    ys: np.ndarray,
    labelled: np.ndarray,
    slots: np.ndarray,
    ends: np.ndarray,
    first: int,
    params: np.ndarray,
    accum: np.ndarray,
    anchors: np.ndarray,
    start_of: np.ndarray,
    pooled: bool,
    lr: np.ndarray,
    lam: np.float32,
    eps: np.float32,
    max_sq: float,
    shared_grad: np.ndarray,
    shared_count: np.ndarray,
    step_labels: int,
    p_out: np.ndarray,
    loss_out: np.ndarray,
    mix: bool,
    p_shared: np.ndarray,
    stats: np.ndarray,
) -> int:
    n_layers = layers.shape[0]
    n_params = params.shape[1]
    n_out = layers[n_layers - 1, 2]
    # Every layer's input, then the outputs: acts[i, :width_i].
    acts = np.zeros((n_layers + 1, width), dtype=np.float32)
    delta = np.zeros(width, dtype=np.float32)
    back = np.zeros(width, dtype=np.float32)
    g = np.zeros(n_params, dtype=np.float32)
    w_new = np.zeros(n_params, dtype=np.float32)
    a_new = np.zeros(n_params, dtype=np.float32)
    half = np.float32(0.5)
    one = np.float32(1.0)
    lo = 0 if first == 0 else ends[first - 1]
    for piece in range(first, ends.shape[0]):
        if step_labels > 0 and shared_count[0] >= step_labels:
            return piece
        hi = ends[piece]
        for i in range(lo, hi):
            slot = slots[i]
            w = params[slot]
            if mix:  # the shared weights' prediction, the mixture's other expert
                forward(layers, tanh, anchors[0], xs[i], acts)
                probabilities(task, acts[n_layers], n_out, p_shared[i])
            forward(layers, tanh, w, xs[i], acts)
            z = acts[n_layers]
            y = ys[i]
            # -- prediction, loss and the output's error
            log_norm = probabilities(task, z, n_out, p_out[i])
            if task == 0:
                zc = z[0]
                loss = np.float32(max(zc, 0.0) + math.log1p(math.exp(-abs(zc))) - y * zc)
                delta[0] = p_out[i, 0] - y
            elif task == 1:
                for o in range(n_out):
                    delta[o] = p_out[i, o]
                c = int(y)
                loss = np.float32(log_norm - z[c])
                delta[c] -= one
            else:
                loss = half * (z[0] - y) * (z[0] - y)
                delta[0] = z[0] - y
            if not labelled[i]:
                loss_out[i] = 0.0
                continue
            loss_out[i] = loss
            # -- backward: the data gradient
            for li in range(n_layers - 1, -1, -1):
                start, n_in, n_o = layers[li, 0], layers[li, 1], layers[li, 2]
                mid = start + n_o * n_in
                h_in = acts[li]
                for o in range(n_o):
                    row = start + o * n_in
                    do = delta[o]
                    for k in range(n_in):
                        g[row + k] = do * h_in[k]
                    g[mid + o] = do
                if li > 0:  # (row by row: the inner loops run along memory)
                    for k in range(n_in):
                        back[k] = 0.0
                    for o in range(n_o):
                        row = start + o * n_in
                        do = delta[o]
                        for k in range(n_in):
                            back[k] += do * w[row + k]
                    h_in = acts[li]
                    for k in range(n_in):
                        h = h_in[k]
                        if tanh:
                            delta[k] = back[k] * (one - h * h)
                        else:
                            delta[k] = back[k] if h > 0 else np.float32(0.0)
            if step_labels > 0:
                for j in range(n_params):
                    shared_grad[j] += g[j]
                shared_count[0] += 1
            # -- proximal pull, AdaGrad, guard
            # (Branch-free over the parameters, so that the loops vectorise; as in the guard,
            # a non-finite accumulator shows in their sum.)
            anchor = anchors[start_of[slot] if pooled else 0]
            acc = accum[slot]
            sq = np.float32(0.0)
            a_sum = np.float32(0.0)
            for j in range(n_params):
                gj = g[j] + lam * (w[j] - anchor[j])
                a = acc[j] + gj * gj
                step = lr[j] * gj / (np.sqrt(a) + eps)
                a_new[j] = a
                w_new[j] = w[j] - step
                sq += step * step
                a_sum += a
            if math.isfinite(loss) and math.isfinite(a_sum) and sq <= max_sq:
                for j in range(n_params):
                    params[slot, j] = w_new[j]
                    accum[slot, j] = a_new[j]
                stats[0] += sq
                stats[2] += 1
            else:
                stats[1] += 1
        lo = hi
    return int(ends.shape[0])

"""One network for the whole stream on a piecewise-linear encoding of each feature: an expert
of the mixture (:mod:`streamlearn.learning.mixture`).

Why: many concepts are rules on intervals of single features (an age band, a salary band,
a level in a set): what decision trees split on. A tanh network on standardised inputs
needs many labels to place a sharp step at the right value, because every unit sees the
feature through one weight. Encoding each feature by a linear B-spline ("hat") basis on
knots at its quantiles (Gorishniy, Rubachev and Babenko, "On Embeddings for Numerical
Features in Tabular Deep Learning", 2022, piecewise-linear encodings) gives every unit a
weight per knot: an interval becomes a few weights, learned from the labels that fall
there. Each value activates at most two basis functions (the knots around it, weighted by
its position between them), so the first layer costs ``3 d`` columns an event however
many knots there are; the standardised feature is an input too, for the linear trend and
for values beyond the outer knots.

The knots come from the first ``warmup`` events (the raw values, so the running
standardisation's early moves do not shift them): a feature with at most ``knots`` distinct
values gets a knot at each value (a one-hot encoding of a level), any other one a knot at
each of ``knots`` equal-mass quantiles. Until then the expert sleeps (its predictions are
NaN, which the mixture reads as "predicts what the others predict"); the warm-up events'
labels are learned, in order, the moment the knots are fitted.

The network is trained from every label by AdaGrad whose accumulators decay by
``forgetting`` at each step (as the linear expert's), so its rate stays up on a drifting
stream. A weight steps only when its input is active: the first layer's weights of a basis
function step (and their accumulators decay) on the labels whose values fall next to its
knot, so a rarely visited knot keeps the rate its own few labels earned.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np
import torch

from streamlearn.learning.heads import head


def fit_knots(raw: np.ndarray, knots: int) -> tuple[np.ndarray, np.ndarray]:
    """Knots of each feature (``[d, knots]``, padded with the last knot) and their count.

    >>> k, n = fit_knots(np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [0.0, 4.0]]), 3)
    >>> n.tolist(), k[0].tolist(), k[1].tolist()  # 3 levels; 4 values: 3 quantiles
    ([3, 3], [0.0, 1.0, 2.0], [1.5, 2.5, 3.5])
    """
    d = raw.shape[1]
    out = np.zeros((d, knots))
    count = np.zeros(d, dtype=np.int64)
    for j in range(d):
        values = np.unique(raw[:, j])
        if len(values) > knots:
            values = np.unique(np.quantile(raw[:, j], (np.arange(knots) + 0.5) / knots))
        out[j, : len(values)] = values
        out[j, len(values) :] = values[-1]
        count[j] = len(values)
    return out, count


class SplineExpert:
    """A tanh network of ``hidden`` units on the spline encoding of ``n_features`` inputs,
    ``n_outputs`` logits (1: binary, P(class 1); else class probabilities).

    >>> e = SplineExpert(2, 1, knots=4, hidden=(8,), learning_rate=0.1, forgetting=1.0,
    ...                  initial_accumulator=0.1, warmup=20, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(40, 2)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.float32)
    >>> p = e.process(x, x, y, np.ones(40, bool))
    >>> bool(np.isnan(p[:20]).all()), bool(np.isfinite(p[20:]).all()), e.awake
    (True, True, True)
    """

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        *,
        knots: int,
        hidden: Sequence[int],
        learning_rate: float,
        forgetting: float,
        initial_accumulator: float,
        warmup: int,
        seed: int = 0,
        eps: float = 1e-10,
    ) -> None:
        if knots < 2:
            raise ValueError(f"learner.mixture.spline.knots must be >= 2, got {knots}")
        if not hidden or min(hidden) < 1:
            raise ValueError(
                f"learner.mixture.spline.hidden needs at least one layer, got {list(hidden)}"
            )
        if warmup < 1:
            raise ValueError(f"learner.mixture.spline.warmup must be >= 1, got {warmup}")
        self.n_features, self.n_outputs, self.n_knots = n_features, n_outputs, knots
        self.learning_rate, self.forgetting, self.eps = learning_rate, forgetting, eps
        self.warmup = warmup
        self.sizes = np.array([n_features * (knots + 1), *hidden, n_outputs], dtype=np.int64)
        self.offsets = layer_offsets(self.sizes)
        self.params = init_params(self.sizes, n_features, seed)
        self.accum = np.full_like(self.params, initial_accumulator)
        self.knots = np.zeros((n_features, knots))
        self.knot_count = np.zeros(n_features, dtype=np.int64)  # 0: asleep (no knots yet)
        # The warm-up events: raw values (for the knots), standardised values, labels.
        self._seen: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._n_seen = 0

    @property
    def awake(self) -> bool:
        """Whether the knots are fitted (before: every prediction is NaN)."""
        return bool(self.knot_count[0] > 0)

    def process(
        self, raw: np.ndarray, x: np.ndarray, y: np.ndarray, labelled: np.ndarray
    ) -> np.ndarray:
        """Predictions ``[n, o]`` of each event (``raw`` and standardised ``x``), each made
        before its label (where ``labelled``) takes one step; NaN rows while asleep."""
        n = len(x)
        p = np.full((n, self.n_outputs), np.nan, dtype=np.float32)
        lo = 0
        if not self.awake:
            lo = min(n, self.warmup - self._n_seen)
            self._remember(raw[:lo], x[:lo], y[:lo], labelled[:lo])
            if not self.awake:
                return p
        if lo < n:
            self._run(raw[lo:], x[lo:], y[lo:], labelled[lo:], p[lo:])
        return p

    def predict(self, raw: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Predictions with the weights in force (changes nothing); NaN while asleep."""
        n = len(x)
        p = np.full((n, self.n_outputs), np.nan, dtype=np.float32)
        if self.awake:  # no label: no step
            self._run(raw, x, np.zeros(n, np.float32), np.zeros(n, bool), p)
        return p

    def _remember(
        self, raw: np.ndarray, x: np.ndarray, y: np.ndarray, labelled: np.ndarray
    ) -> None:
        self._seen.append((raw.astype(np.float64), x.astype(np.float32), y, labelled.copy()))
        self._n_seen += len(x)
        if self._n_seen < self.warmup:
            return
        raw_all, x_all, y_all, lab_all = (np.concatenate(c) for c in zip(*self._seen, strict=True))
        self.knots, self.knot_count = fit_knots(raw_all, self.n_knots)
        self._seen = []
        scratch = np.empty((len(x_all), self.n_outputs), dtype=np.float32)
        self._run(raw_all, x_all, y_all, lab_all, scratch)

    def _run(
        self,
        raw: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        labelled: np.ndarray,
        p_out: np.ndarray,
    ) -> None:
        _compiled()(
            np.ascontiguousarray(raw, dtype=np.float64),
            np.ascontiguousarray(x, dtype=np.float64),
            np.ascontiguousarray(y, dtype=np.float64),
            np.ascontiguousarray(labelled, dtype=np.bool_),
            self.knots,
            self.knot_count,
            self.sizes,
            self.offsets,
            self.params,
            self.accum,
            self.learning_rate,
            self.forgetting,
            self.eps,
            p_out,
        )

    def state_dict(self) -> dict[str, Any]:
        seen = [np.concatenate(c) for c in zip(*self._seen, strict=True)] if self._seen else []
        return {
            "params": torch.from_numpy(self.params.copy()),
            "accum": torch.from_numpy(self.accum.copy()),
            "knots": torch.from_numpy(self.knots.copy()),
            "knot_count": torch.from_numpy(self.knot_count.copy()),
            "seen": [torch.from_numpy(np.asarray(a).copy()) for a in seen],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        params = state["params"].numpy().astype(np.float64)
        knots = state["knots"].numpy().astype(np.float64)
        if params.shape != self.params.shape or knots.shape != self.knots.shape:
            raise ValueError(
                "checkpointed spline expert does not match learner.mixture.spline (knots, "
                "hidden) and the model's features"
            )
        self.params, self.knots = params, knots
        self.accum = state["accum"].numpy().astype(np.float64)
        self.knot_count = state["knot_count"].numpy().astype(np.int64)
        seen = [t.numpy() for t in state["seen"]]
        self._seen = [(seen[0], seen[1], seen[2], seen[3])] if seen else []
        self._n_seen = len(seen[0]) if seen else (self.warmup if self.awake else 0)


def layer_offsets(sizes: np.ndarray) -> np.ndarray:
    """Where each layer's weights start in the flat vector, one entry a layer and the total
    last. A layer holds its weights, then its ``out`` biases; the first layer's weights are
    ``[in, out]`` (a row per input: an event reads and steps the rows of its few active
    inputs, contiguous), the later layers' ``[out, in]``."""
    out = [0]
    for n_in, n_out in itertools.pairwise(sizes):
        out.append(out[-1] + int(n_out) * int(n_in) + int(n_out))
    return np.array(out, dtype=np.int64)


def init_params(sizes: np.ndarray, n_features: int, seed: int) -> np.ndarray:
    """Normal weights, zero biases. A first-layer unit sums about ``2 d`` active inputs (a
    feature's two basis weights add to one, plus its standardised value), hence its scale
    ``1 / sqrt(2 d)``; later layers ``1 / sqrt(fan_in)``."""
    rng = np.random.default_rng(seed)
    offsets = layer_offsets(sizes)
    params = np.zeros(int(offsets[-1]))
    for layer, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        scale = 1.0 / math.sqrt(2 * n_features if layer == 0 else int(n_in))
        start = int(offsets[layer])
        params[start : start + int(n_out) * int(n_in)] = rng.normal(0.0, scale, n_out * n_in)
    return params


def encode(
    raw_row: np.ndarray,
    x_row: np.ndarray,
    knots: np.ndarray,
    count: np.ndarray,
    index: np.ndarray,
    value: np.ndarray,
) -> int:
    """The nonzero inputs of one event's encoding into ``index`` / ``value``; returns how
    many. Feature ``j``'s basis functions are inputs ``j * K .. j * K + K - 1`` and its
    standardised value input ``d * K + j`` (``K`` knots)."""
    d, k = knots.shape
    m = 0
    for j in range(d):
        v = raw_row[j]
        c = count[j]
        base = j * k
        if not v > knots[j, 0]:  # below the first knot, or NaN: the first basis function
            index[m] = base
            value[m] = 1.0
            m += 1
        elif v >= knots[j, c - 1]:
            index[m] = base + c - 1
            value[m] = 1.0
            m += 1
        else:
            lo, hi = 0, c - 1  # knots[lo] < v < knots[hi]: bisect to neighbours
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if knots[j, mid] <= v:
                    lo = mid
                else:
                    hi = mid
            a = (v - knots[j, lo]) / (knots[j, hi] - knots[j, lo])
            index[m] = base + lo
            value[m] = 1.0 - a
            index[m + 1] = base + hi
            value[m + 1] = a
            m += 2
        index[m] = d * k + j
        value[m] = x_row[j]
        m += 1
    return m


def _learn(
    raw: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    labelled: np.ndarray,
    knots: np.ndarray,
    count: np.ndarray,
    sizes: np.ndarray,
    offsets: np.ndarray,
    theta: np.ndarray,
    accum: np.ndarray,
    lr: float,
    forgetting: float,
    eps: float,
    p_out: np.ndarray,
) -> None:
    n, d = x.shape
    n_layers = len(sizes) - 1
    widest = sizes[1:].max()
    acts = np.zeros((n_layers + 1, max(widest, 1)))  # layer outputs (tanh; logits last)
    delta = np.zeros(widest)
    back = np.zeros(widest)
    widest_in = sizes[:-1].max()
    new_w = np.zeros(widest_in)  # a row's stepped weights and accumulators, before they are
    new_a = np.zeros(widest_in)  # written back (so that the step loop vectorises)
    index = np.zeros(3 * d, dtype=np.int64)
    value = np.zeros(3 * d)
    n_out = sizes[-1]
    for i in range(n):
        m = _encode(raw[i], x[i], knots, count, index, value)
        # forward: the first layer reads the m nonzero inputs, each a contiguous row
        h1, f_in, start = sizes[1], sizes[0], offsets[0]
        for u in range(h1):
            acts[1, u] = theta[start + f_in * h1 + u]
        for q in range(m):
            row = start + index[q] * h1
            val = value[q]
            for u in range(h1):
                acts[1, u] += theta[row + u] * val
        for layer in range(1, n_layers):
            n_in, n_o, start = sizes[layer], sizes[layer + 1], offsets[layer]
            for u in range(n_in):
                acts[layer, u] = math.tanh(acts[layer, u])
            for u in range(n_o):
                s = theta[start + n_o * n_in + u]
                row = start + u * n_in
                for v in range(n_in):
                    s += theta[row + v] * acts[layer, v]
                acts[layer + 1, u] = s
        # the head: P(class 1), or the softmax; delta = dloss / dlogit
        head(acts[n_layers], n_out, delta)
        for o in range(n_out):
            p_out[i, o] = delta[o]
        if n_out == 1:
            delta[0] -= y[i]
        else:
            c = int(y[i]) if math.isfinite(y[i]) else -1
            if 0 <= c < n_out:
                delta[c] -= 1.0
            else:  # no such class: the guard below skips the step
                delta[0] = math.nan
        if not labelled[i]:
            continue
        # A poisoned label (NaN, or no such class) gives a non-finite output gradient: no
        # step at all. Otherwise every step below is finite.
        finite = True
        for o in range(n_out):
            finite = finite and math.isfinite(delta[o])
        if not finite:
            continue
        # backward and AdaGrad (decaying accumulators), layer by layer from the top
        for layer in range(n_layers - 1, 0, -1):
            n_in, n_o, start = sizes[layer], sizes[layer + 1], offsets[layer]
            for v in range(n_in):
                back[v] = 0.0
            h_in = acts[layer]
            for u in range(n_o):
                g_u = delta[u]
                row = start + u * n_in
                for v in range(n_in):
                    back[v] += theta[row + v] * g_u
                _adagrad_row(theta, accum, row, h_in, g_u, n_in, lr, forgetting, eps, new_w, new_a)
            bias = start + n_o * n_in
            _adagrad_row(theta, accum, bias, delta, 1.0, n_o, lr, forgetting, eps, new_w, new_a)
            for v in range(n_in):
                h = acts[layer, v]
                delta[v] = back[v] * (1.0 - h * h)
        start = offsets[0]
        for q in range(m):
            row = start + index[q] * h1
            _adagrad_row(theta, accum, row, delta, value[q], h1, lr, forgetting, eps, new_w, new_a)
        bias = start + f_in * h1
        _adagrad_row(theta, accum, bias, delta, 1.0, h1, lr, forgetting, eps, new_w, new_a)


def _adagrad_row_steps(
    theta: np.ndarray,
    accum: np.ndarray,
    at: int,
    grads: np.ndarray,
    scale: float,
    n: int,
    lr: float,
    forgetting: float,
    eps: float,
    new_w: np.ndarray,
    new_a: np.ndarray,
) -> None:
    """AdaGrad steps (decaying accumulators) on ``theta[at : at + n]`` by the gradients
    ``scale * grads[:n]`` (a layer's inputs times one unit's delta, or the reverse). The
    steps go to scratch rows first: a loop that stores only to them vectorises (it cannot
    alias the weights it reads), then they are copied back."""
    for k in range(n):
        g = scale * grads[k]
        a = forgetting * accum[at + k] + g * g
        new_a[k] = a
        new_w[k] = theta[at + k] - lr * g / (np.sqrt(a) + eps)
    for k in range(n):
        accum[at + k] = new_a[k]
        theta[at + k] = new_w[k]


# As the round loop's (streamlearn.learning.kernel): reassociation lets the dot products and
# the AdaGrad steps vectorise; NaN and infinity keep their meaning (the label guard needs it).
_FLAGS: dict[str, Any] = {
    "nogil": True,
    "error_model": "numpy",
    "fastmath": {"reassoc", "contract", "arcp", "nsz"},
}
_encode = numba.njit(inline="always", **_FLAGS)(encode)
_adagrad_row = numba.njit(inline="always", **_FLAGS)(_adagrad_row_steps)


@functools.cache
def _compiled() -> Callable[..., Any]:
    compiled: Callable[..., Any] = numba.njit(cache=True, **_FLAGS)(_learn)
    return compiled

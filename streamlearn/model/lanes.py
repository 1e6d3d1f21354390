"""The online hot path: forward and closed-form gradients over *lanes*, in numpy.

A lane is one sample for one key, with that key's own parameter row: ``flat[L, P]`` and
``x[L, d]``. One call handles every lane of a round at once (see
:mod:`streamlearn.learning.learner`).

Why numpy and not torch here: the arrays are tiny, so the cost is per-call dispatch, and
on CPU numpy's is about a third of torch's. Measured per learning round of a linear model
(1 thread): ``vmap(grad(loss_one))`` 750 us, ``func.grad`` of a lane-batched loss 600 us,
``autograd.grad`` 240 us, the same closed form in torch 91-99 us, in numpy 27-56 us (1 to
100 lanes); a 32-unit layer over 1,000 lanes: ``np.matmul`` 46 us, ``torch.bmm`` 154 us.
The torch model of :mod:`streamlearn.model.spec` stays the reference: tests hold these kernels
equal to ``torch.func.grad`` of :meth:`ModelSpec.loss_one` and to finite differences.
"""

from __future__ import annotations

import numpy as np

from streamlearn.model.spec import ModelSpec


def _act(spec: ModelSpec, z: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.tanh(z) if spec.activation == "tanh" else np.maximum(z, 0.0)
    return out


def forward(spec: ModelSpec, flat: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
    """Inputs of every layer and, last, the outputs ``z[L, o]`` (logits or values)."""
    lanes = flat.shape[0]
    acts = [x]
    h = x
    last = len(spec.layers) - 1
    for i, (start, n_in, n_out) in enumerate(spec.layers):
        mid = start + n_out * n_in
        w, b = flat[:, start:mid], flat[:, mid : mid + n_out]
        if n_out == 1:
            h = (w * h).sum(1, keepdims=True) + b
        else:
            h = np.matmul(w.reshape(lanes, n_out, n_in), h[:, :, None])[:, :, 0] + b
        if i < last:
            h = _act(spec, h)
        acts.append(h)
    return acts


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    out: np.ndarray = e / e.sum(1, keepdims=True)
    return out


def predict_from_logits(spec: ModelSpec, z: np.ndarray) -> np.ndarray:
    """P(class 1) ``[L, 1]``, class probabilities ``[L, C]``, or the value ``[L, 1]``."""
    if spec.task == "binary":
        return _sigmoid(z)
    if spec.task == "multiclass":
        return _softmax(z)
    return z


def predict(spec: ModelSpec, flat: np.ndarray, x: np.ndarray) -> np.ndarray:
    return predict_from_logits(spec, forward(spec, flat, x)[-1])


def _data_loss(spec: ModelSpec, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    if spec.task == "binary":
        zc = z[:, 0]
        return np.asarray(np.logaddexp(0.0, zc) - y * zc)
    if spec.task == "multiclass":
        m = z.max(1, keepdims=True)
        lse = (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]
        return np.asarray(lse - z[np.arange(len(z)), y.astype(np.int64)])
    return np.asarray(0.5 * (z[:, 0] - y) ** 2)


def loss(spec: ModelSpec, flat: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-lane data loss (no gradient): what the guard re-checks after a step."""
    return _data_loss(spec, forward(spec, flat, x)[-1], y)


def _output_error(spec: ModelSpec, z: np.ndarray, p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The data loss's gradient in the outputs ``z`` (``[L, o]``): ``p - y`` for log loss
    (``y`` one-hot for multiclass), ``z - y`` for half squared error."""
    if spec.task == "binary":
        return np.asarray(p - y[:, None])
    if spec.task == "multiclass":
        delta = p.copy()
        delta[np.arange(len(z)), y.astype(np.int64)] -= 1.0
        return delta
    return np.asarray(z - y[:, None])


def _act_backward(spec: ModelSpec, dh: np.ndarray, h: np.ndarray) -> np.ndarray:
    """A gradient through the activation, given its output ``h``."""
    out: np.ndarray = dh * (1.0 - h * h) if spec.activation == "tanh" else dh * (h > 0)
    return out


def grad(
    spec: ModelSpec, flat: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-lane gradient of the data loss, the predictions and the loss.

    Returns ``(grad[L, P], p, loss[L])``; ``y`` must be finite (mask unlabelled lanes with
    any value and zero their gradient). Loss: log loss, or half squared error.
    """
    acts = forward(spec, flat, x)
    z = acts[-1]
    p = predict_from_logits(spec, z)
    lanes = flat.shape[0]
    data_loss = _data_loss(spec, z, y)
    delta = _output_error(spec, z, p, y)
    g = np.empty_like(flat)
    for i in range(len(spec.layers) - 1, -1, -1):
        start, n_in, n_out = spec.layers[i]
        mid = start + n_out * n_in
        h_in = acts[i]
        g[:, start:mid] = (delta[:, :, None] * h_in[:, None, :]).reshape(lanes, n_out * n_in)
        g[:, mid : mid + n_out] = delta
        if i > 0:
            w = flat[:, start:mid].reshape(lanes, n_out, n_in)
            dh = np.matmul(delta[:, None, :], w)[:, 0, :]
            delta = _act_backward(spec, dh, h_in)
    return g, p, data_loss


def mean_grad(
    spec: ModelSpec, flat: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One weight vector ``flat[P]`` over a batch: the gradient of the mean data loss, the
    predictions and the per-example loss, ``(grad[P], p, loss[m])``. What :func:`grad` of
    the broadcast weights gives, averaged, without a ``[m, P]`` table (one matmul a layer)."""
    m = x.shape[0]
    acts = [x]
    h = x
    last = len(spec.layers) - 1
    for i, (start, n_in, n_out) in enumerate(spec.layers):
        mid = start + n_out * n_in
        h = h @ flat[start:mid].reshape(n_out, n_in).T + flat[mid : mid + n_out]
        if i < last:
            h = _act(spec, h)
        acts.append(h)
    z = acts[-1]
    p = predict_from_logits(spec, z)
    data_loss = _data_loss(spec, z, y)
    delta = _output_error(spec, z, p, y) / np.float32(m)
    g = np.empty_like(flat)
    for i in range(last, -1, -1):
        start, n_in, n_out = spec.layers[i]
        mid = start + n_out * n_in
        h_in = acts[i]
        g[start:mid] = (delta.T @ h_in).reshape(-1)
        g[mid : mid + n_out] = delta.sum(0)
        if i > 0:
            dh = delta @ flat[start:mid].reshape(n_out, n_in)
            delta = _act_backward(spec, dh, h_in)
    return g, p, data_loss


def mean_hvp(
    spec: ModelSpec, flat: np.ndarray, x: np.ndarray, y: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """The Hessian of the mean data loss at ``flat[P]`` times ``v[P]``, exactly: Pearlmutter's
    R-operator, the directional derivative of :func:`mean_grad` along ``v`` propagated through
    the forward and the backward pass (curvature caps run Lanczos on it, a few ms a product
    fewer than ``torch.func``'s forward-over-reverse)."""
    m = x.shape[0]
    tanh = spec.activation == "tanh"
    acts, tans = [x], [np.zeros_like(x)]
    h, dh = x, tans[0]
    last = len(spec.layers) - 1
    for i, (start, n_in, n_out) in enumerate(spec.layers):
        mid = start + n_out * n_in
        w = flat[start:mid].reshape(n_out, n_in)
        vw = v[start:mid].reshape(n_out, n_in)
        z = h @ w.T + flat[mid : mid + n_out]
        dz = h @ vw.T + dh @ w.T + v[mid : mid + n_out]
        if i < last:
            h = _act(spec, z)
            dh = dz * (1.0 - h * h) if tanh else dz * (z > 0)
        else:
            h, dh = z, dz
        acts.append(h)
        tans.append(dh)
    z, dz = acts[-1], tans[-1]
    p = predict_from_logits(spec, z)
    delta = _output_error(spec, z, p, y)
    if spec.task == "binary":
        ddelta = p * (1.0 - p) * dz
    elif spec.task == "multiclass":
        ddelta = p * dz - p * (p * dz).sum(1, keepdims=True)
    else:
        ddelta = dz
    delta, ddelta = delta / m, ddelta / m
    out = np.empty_like(v)
    for i in range(last, -1, -1):
        start, n_in, n_out = spec.layers[i]
        mid = start + n_out * n_in
        h_in, dh_in = acts[i], tans[i]
        out[start:mid] = (ddelta.T @ h_in + delta.T @ dh_in).reshape(-1)
        out[mid : mid + n_out] = ddelta.sum(0)
        if i > 0:
            w = flat[start:mid].reshape(n_out, n_in)
            vw = v[start:mid].reshape(n_out, n_in)
            back, dback = delta @ w, ddelta @ w + delta @ vw
            if tanh:
                slope = 1.0 - h_in * h_in  # and tanh'' dz = -2 h dh
                delta, ddelta = back * slope, dback * slope - 2.0 * back * h_in * dh_in
            else:
                on = h_in > 0
                delta, ddelta = back * on, dback * on
    return out


def directional(
    spec: ModelSpec, flat: np.ndarray, tangent: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """Forward-mode derivative of :func:`predict` along ``tangent`` (one direction per lane):
    ``d predict(flat + t tangent, x) / dt`` at ``t = 0``, ``[L, o]``. What the query policy's
    lambda-sensitivity needs per event, without torch's dispatch per poll."""
    lanes = flat.shape[0]
    h, dh = x, np.zeros_like(x)
    last = len(spec.layers) - 1
    for i, (start, n_in, n_out) in enumerate(spec.layers):
        mid = start + n_out * n_in
        w = flat[:, start:mid].reshape(lanes, n_out, n_in)
        dw = tangent[:, start:mid].reshape(lanes, n_out, n_in)
        z = np.matmul(w, h[:, :, None])[:, :, 0] + flat[:, mid : mid + n_out]
        dz = (
            np.matmul(dw, h[:, :, None])[:, :, 0]
            + np.matmul(w, dh[:, :, None])[:, :, 0]
            + tangent[:, mid : mid + n_out]
        )
        if i < last:
            h = _act(spec, z)
            dh = dz * (1.0 - h * h) if spec.activation == "tanh" else dz * (z > 0)
        else:
            h, dh = z, dz
    if spec.task == "binary":
        p = _sigmoid(h)
        return np.asarray(p * (1.0 - p) * dh)
    if spec.task == "multiclass":
        p = _softmax(h)
        return np.asarray(p * (dh - (p * dh).sum(1, keepdims=True)))
    return np.asarray(dh)

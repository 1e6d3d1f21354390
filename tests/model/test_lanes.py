"""The numpy lane kernels against the torch reference: torch.func and finite differences."""

import numpy as np
import pytest
import torch
from torch.func import grad, jvp, vmap

from streamlearn.model import lanes
from streamlearn.model.spec import ModelSpec

SPECS = [
    ModelSpec(4, "binary"),
    ModelSpec(4, "binary", hidden=(5,), activation="tanh"),
    ModelSpec(4, "binary", hidden=(5, 3), activation="relu"),
    ModelSpec(4, "multiclass", n_classes=3),
    ModelSpec(4, "multiclass", n_classes=3, hidden=(6,)),
    ModelSpec(4, "regression"),
    ModelSpec(4, "regression", hidden=(7,), activation="tanh"),
]


def _data(spec: ModelSpec, lanes: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    flat = torch.randn(lanes, spec.n_params, generator=gen, dtype=torch.float64) * 0.5
    x = torch.randn(lanes, spec.n_features, generator=gen, dtype=torch.float64)
    if spec.task == "binary":
        y = (torch.rand(lanes, generator=gen) > 0.5).double()
    elif spec.task == "multiclass":
        y = torch.randint(0, spec.n_classes, (lanes,), generator=gen).double()
    else:
        y = torch.randn(lanes, generator=gen, dtype=torch.float64)
    return flat, x, y


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_lane_grad_equals_torch_func_grad(spec):
    flat, x, y = _data(spec, lanes=6)
    g, p, loss = lanes.grad(spec, flat.numpy(), x.numpy(), y.numpy())
    ref = vmap(grad(spec.loss_one))(flat, x, y)
    ref_loss = vmap(spec.loss_one)(flat, x, y)
    np.testing.assert_allclose(g, ref.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(loss, ref_loss.numpy(), rtol=1e-9, atol=1e-10)
    ref_p = vmap(lambda w, xi: spec.predict_from_logits(spec.forward_one(w, xi[None]))[0])(flat, x)
    np.testing.assert_allclose(p, ref_p.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_lane_grad_equals_finite_differences(spec):
    flat, x, y = _data(spec, lanes=2, seed=1)
    g, _, _ = lanes.grad(spec, flat.numpy(), x.numpy(), y.numpy())
    eps = 1e-6
    for lane in range(2):
        for j in range(spec.n_params):
            plus, minus = flat[lane].clone(), flat[lane].clone()
            plus[j] += eps
            minus[j] -= eps
            fd = spec.loss_one(plus, x[lane], y[lane]) - spec.loss_one(minus, x[lane], y[lane])
            assert float(g[lane, j]) == pytest.approx(float(fd / (2 * eps)), abs=1e-6)


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_lane_forward_matches_torch_forward(spec):
    flat, x, _ = _data(spec, lanes=5, seed=2)
    z = lanes.forward(spec, flat.numpy(), x.numpy())[-1]
    for i in range(5):
        ref = spec.forward_one(flat[i], x[i : i + 1])[0]
        np.testing.assert_allclose(z[i], ref.numpy(), rtol=1e-12)


def test_extreme_logits_stay_finite():
    spec = ModelSpec(1)
    g, p, loss = lanes.grad(spec, np.array([[1e4, 0.0]]), np.array([[1.0]]), np.array([0.0]))
    assert np.isfinite(g).all()
    assert p[0, 0] == 1.0
    assert loss[0] == pytest.approx(1e4)


def test_layout_and_init():
    spec = ModelSpec(3, "multiclass", n_classes=4, hidden=(5,))
    assert spec.n_params == 3 * 5 + 5 + 5 * 4 + 4
    assert torch.equal(spec.init(kind="zeros"), torch.zeros(spec.n_params))
    a, b = spec.init(seed=1), spec.init(seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, spec.init(seed=2))


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="n_features"):
        ModelSpec(0)
    with pytest.raises(ValueError, match="activation"):
        ModelSpec(2, activation="gelu")  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_mean_grad_equals_torch_func_grad_of_the_mean_loss(spec):
    flat, x, y = _data(spec, lanes=7, seed=3)
    w = flat[0]
    g, p, loss = lanes.mean_grad(spec, w.numpy(), x.numpy(), y.numpy())
    ref = grad(lambda v: vmap(spec.loss_one, in_dims=(None, 0, 0))(v, x, y).mean())(w)
    np.testing.assert_allclose(g, ref.numpy(), rtol=1e-9, atol=1e-12)
    g_lanes, p_lanes, loss_lanes = lanes.grad(
        spec, np.tile(w.numpy(), (7, 1)), x.numpy(), y.numpy()
    )
    np.testing.assert_allclose(g, g_lanes.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(p, p_lanes, rtol=1e-12)
    np.testing.assert_allclose(loss, loss_lanes, rtol=1e-12)


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_mean_hvp_equals_torch_func_forward_over_reverse(spec):
    flat, x, y = _data(spec, lanes=9, seed=4)
    w = flat[0]
    v = torch.randn(spec.n_params, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def mean_loss(u):
        return vmap(spec.loss_one, in_dims=(None, 0, 0))(u, x, y).mean()

    ref = jvp(grad(mean_loss), (w,), (v,))[1]
    out = lanes.mean_hvp(spec, w.numpy(), x.numpy(), y.numpy(), v.numpy())
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-9, atol=1e-12)

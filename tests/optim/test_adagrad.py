"""AdaGrad against torch.optim.Adagrad; the proximal term against finite differences."""

import numpy as np
import pytest
import torch
from torch.func import grad

from streamlearn.model import lanes
from streamlearn.model.spec import ModelSpec
from streamlearn.optim import AdagradState, adagrad_step, proximal_grad


@pytest.mark.parametrize(("lr", "eps", "init_acc"), [(0.1, 1e-10, 0.0), (0.5, 1e-3, 0.2)])
def test_adagrad_matches_torch_optim_adagrad(lr, eps, init_acc):
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(7, generator=gen, dtype=torch.float64)
    ref = torch.nn.Parameter(w0.clone())
    opt = torch.optim.Adagrad([ref], lr=lr, eps=eps, initial_accumulator_value=init_acc)
    w, state = w0.clone(), AdagradState(torch.full_like(w0, init_acc))
    for _ in range(25):
        g = torch.randn(7, generator=gen, dtype=torch.float64)
        ref.grad = g.clone()
        opt.step()
        w, state, _ = adagrad_step(w, state, g, lr, eps)
        torch.testing.assert_close(w, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.accum, opt.state[ref]["sum"])


def test_proximal_with_zero_theta0_is_torch_weight_decay():
    gen = torch.Generator().manual_seed(1)
    lam, lr = 0.3, 0.2
    w0 = torch.randn(5, generator=gen, dtype=torch.float64)
    ref = torch.nn.Parameter(w0.clone())
    opt = torch.optim.Adagrad([ref], lr=lr, weight_decay=lam)
    w, state = w0.clone(), AdagradState(torch.zeros(5, dtype=torch.float64))
    for _ in range(10):
        g = torch.randn(5, generator=gen, dtype=torch.float64)
        ref.grad = g.clone()
        opt.step()
        full = proximal_grad(g, w, torch.zeros_like(w), lam)
        w, state, _ = adagrad_step(w, state, full, lr)
        torch.testing.assert_close(w, ref.detach(), rtol=1e-12, atol=1e-12)


def test_lane_rows_update_independently_in_numpy_as_in_torch():
    w = np.array([[1.0, 1.0], [2.0, 2.0]])
    g = np.array([[1.0, 0.0], [0.0, 2.0]])
    new, state, step = adagrad_step(w, AdagradState(np.zeros((2, 2))), g, 0.5)
    np.testing.assert_allclose(new, [[0.5, 1.0], [2.0, 1.5]])
    np.testing.assert_allclose(step, w - new)
    np.testing.assert_allclose(state.accum, g * g)
    t_new, _, _ = adagrad_step(
        torch.from_numpy(w),
        AdagradState(torch.zeros(2, 2, dtype=torch.float64)),
        torch.from_numpy(g),
        0.5,
    )
    np.testing.assert_allclose(t_new.numpy(), new)


@pytest.mark.parametrize("lam", [0.0, 0.01, 1.0])
def test_proximal_objective_gradient_against_finite_differences(lam):
    spec = ModelSpec(3, "binary", hidden=(4,))
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(spec.n_params, generator=gen, dtype=torch.float64)
    theta0 = torch.randn(spec.n_params, generator=gen, dtype=torch.float64)
    x = torch.randn(3, generator=gen, dtype=torch.float64)
    y = torch.tensor(1.0, dtype=torch.float64)

    def objective(v):
        return spec.loss_one(v, x, y) + 0.5 * lam * ((v - theta0) ** 2).sum()

    data_grad, _, _ = lanes.grad(spec, w[None].numpy(), x[None].numpy(), y[None].numpy())
    analytic = proximal_grad(torch.from_numpy(data_grad[0]), w, theta0, lam)
    torch.testing.assert_close(analytic, grad(objective)(w))
    eps = 1e-6
    for j in range(spec.n_params):
        e = torch.zeros_like(w)
        e[j] = eps
        fd = (objective(w + e) - objective(w - e)) / (2 * eps)
        assert float(analytic[j]) == pytest.approx(float(fd), abs=1e-6)

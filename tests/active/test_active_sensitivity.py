"""Implicit lambda-derivatives against finite differences of re-solved problems."""

import pytest
import torch

from streamlearn.meta.implicit import solve_inner
from streamlearn.meta.maml import mean_loss
from streamlearn.model.spec import ModelSpec
from tests.active.lambda_oracle import (
    prediction_sensitivity,
    validation_hypergradient,
    weights_derivative,
)

CASES = [
    ModelSpec(3, "regression"),
    ModelSpec(3, "binary"),
    ModelSpec(3, "binary", hidden=(4,)),
    ModelSpec(3, "multiclass", n_classes=3),
]


def _data(spec: ModelSpec, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    score = x @ torch.tensor([1.5, -1.0, 0.5], dtype=torch.float64)
    if spec.task == "regression":
        return x, score + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    if spec.task == "multiclass":
        return x, torch.bucketize(score, torch.tensor([-0.7, 0.7], dtype=torch.float64)).double()
    noise = torch.rand(n, generator=g, dtype=torch.float64) < 0.1
    return x, ((score > 0) ^ noise).double()


def _solve(spec, theta0, lam, x, y):
    return solve_inner(spec, lam, theta0, x, y, max_iter=1000, tol=1e-14)


@pytest.mark.parametrize("spec", CASES, ids=repr)
def test_weights_validation_and_prediction_derivatives_match_finite_differences(spec):
    x, y = _data(spec, 40, seed=1)
    xv, yv = _data(spec, 30, seed=2)
    xe, _ = _data(spec, 5, seed=3)
    theta0 = 0.3 * torch.randn(spec.n_params, generator=torch.Generator().manual_seed(4),
                               dtype=torch.float64)  # fmt: skip
    # h: the solves stop at a gradient norm near 1e-8, so a smaller step measures the solver
    lam, h = 0.7, 1e-3
    d = weights_derivative(spec, theta0, lam, x, y, w_star=_solve(spec, theta0, lam, x, y))
    w_plus, w_minus = _solve(spec, theta0, lam + h, x, y), _solve(spec, theta0, lam - h, x, y)
    fd_w = (w_plus - w_minus) / (2 * h)
    torch.testing.assert_close(d.dw, fd_w, rtol=1e-3, atol=1e-6)
    fd_val = (mean_loss(spec, w_plus, xv, yv) - mean_loss(spec, w_minus, xv, yv)) / (2 * h)
    assert validation_hypergradient(spec, d, xv, yv) == pytest.approx(float(fd_val), rel=1e-3,
                                                                      abs=1e-8)  # fmt: skip

    def predict(w):
        return spec.predict_from_logits(spec.forward_one(w, xe))

    fd_p = (predict(w_plus) - predict(w_minus)) / (2 * h)
    fd_sens = fd_p.abs().squeeze(-1) if fd_p.shape[-1] == 1 else fd_p.norm(dim=-1)
    torch.testing.assert_close(prediction_sensitivity(spec, d, xe), fd_sens, rtol=1e-3, atol=1e-7)


def test_no_derivative_without_a_proximal_term():
    spec = ModelSpec(1)
    with pytest.raises(ValueError, match="proximal_lambda must be > 0"):
        weights_derivative(spec, torch.zeros(2), 0.0, torch.ones(2, 1), torch.ones(2))


def test_at_theta0_nothing_moves():
    """Data that theta0 already fits exactly: w* = theta0 and dw*/dlambda = 0."""
    spec = ModelSpec(1, "regression")
    theta0 = torch.tensor([2.0, 1.0], dtype=torch.float64)
    x = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    d = weights_derivative(spec, theta0, 0.5, x, 2.0 * x[:, 0] + 1.0)
    torch.testing.assert_close(d.w_star, theta0)
    assert float(d.dw.abs().max()) < 1e-8

"""The lambda watch's rules (:mod:`streamlearn.active.lambda_watch`) one key at a time in
torch, checked against finite differences: how the proximal strength ``lambda`` moves the
fitted weights, the validation loss and each prediction (implicit differentiation, no
unrolling).

At ``w* = argmin_w L_train(w) + (lambda/2)||w - theta0||^2`` stationarity gives
``grad L_train(w*) + lambda (w* - theta0) = 0``; differentiating in ``lambda``:
``(H + lambda I) dw*/dlambda = -(w* - theta0)``, ``H`` the Hessian of ``L_train`` at ``w*``.
One conjugate-gradient solve on Hessian-vector products (the same
:mod:`streamlearn.optim.linalg` the implicit meta-gradient uses) gives ``dw*/dlambda``; then
``dL_val/dlambda = grad L_val(w*) . dw*/dlambda`` and, for any event, the sensitivity of its
prediction ``|grad_w f(x; w*) . dw*/dlambda|``: one forward-mode product per batch of events.
An event whose prediction swings with ``lambda`` is one where the data and the meta-init
disagree: a label there settles something.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import grad, jvp

from streamlearn.meta.implicit import solve_inner
from streamlearn.meta.maml import mean_loss
from streamlearn.model.spec import ModelSpec
from streamlearn.optim.linalg import conjugate_gradient, hvp


@dataclass(frozen=True)
class LambdaDerivative:
    """``w*`` and ``dw*/dlambda`` at one ``lambda``; ``cg_residual`` says how exact."""

    w_star: torch.Tensor
    dw: torch.Tensor
    cg_iterations: int
    cg_residual: float


def weights_derivative(
    spec: ModelSpec,
    theta0: torch.Tensor,
    lam: float,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    w_star: torch.Tensor | None = None,
    cg_iter: int = 100,
    tol: float = 1e-10,
) -> LambdaDerivative:
    """``dw*/dlambda`` on the training slice ``(x, y)``; ``w_star`` is solved when not given.

    >>> spec = ModelSpec(1, "regression")
    >>> x, y = torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 2.0])
    >>> d = weights_derivative(spec, torch.zeros(2), 0.5, x, y)
    >>> d.dw.shape, d.cg_residual < 1e-6
    (torch.Size([2]), True)
    """
    if lam <= 0:
        raise ValueError(f"learner.proximal_lambda must be > 0 to differentiate in it, got {lam}")
    if w_star is None:
        w_star = solve_inner(spec, lam, theta0, x, y, max_iter=500, tol=1e-12)
    h = hvp(lambda w: mean_loss(spec, w, x, y), w_star)
    res = conjugate_gradient(
        lambda v: h(v) + lam * v, -(w_star - theta0), max_iter=cg_iter, tol=tol
    )
    return LambdaDerivative(w_star, res.x, res.iterations, res.residual)


def validation_hypergradient(
    spec: ModelSpec, d: LambdaDerivative, x_val: torch.Tensor, y_val: torch.Tensor
) -> float:
    """``dL_val/dlambda = grad L_val(w*) . dw*/dlambda``."""
    g = grad(lambda w: mean_loss(spec, w, x_val, y_val))(d.w_star)
    return float(g @ d.dw)


def prediction_sensitivity(spec: ModelSpec, d: LambdaDerivative, x: torch.Tensor) -> torch.Tensor:
    """``|d f(x; w*(lambda)) / d lambda|`` per event: P(class 1) for binary, the L2 norm over
    class probabilities for multiclass, the value for regression."""

    def predict(w: torch.Tensor) -> torch.Tensor:
        return spec.predict_from_logits(spec.forward_one(w, x))

    tangent: torch.Tensor = jvp(predict, (d.w_star,), (d.dw,))[1]
    out: torch.Tensor = (
        tangent.abs().squeeze(-1)
        if tangent.shape[-1] == 1
        else torch.linalg.vector_norm(tangent, dim=-1)
    )
    return out

"""Curvature without forming the Hessian: Hessian-vector products with ``torch.func`` and
conjugate gradient on them. Shared by the implicit meta-gradient (iMAML), the implicit
hyperparameter gradient ``dw*/dlambda`` and, later, Lanczos step-size caps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import grad, jvp

Loss = Callable[[torch.Tensor], torch.Tensor]
MatVec = Callable[[torch.Tensor], torch.Tensor]


def hvp(loss: Loss, w: torch.Tensor) -> MatVec:
    """``v -> H(w) v`` for the scalar ``loss`` at ``w`` (forward-over-reverse, exact).

    >>> f = lambda w: 0.5 * (w * torch.tensor([1.0, 3.0]) * w).sum()
    >>> hvp(f, torch.zeros(2))(torch.ones(2)).tolist()
    [1.0, 3.0]
    """
    g = grad(loss)

    def product(v: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = jvp(g, (w,), (v,))[1]
        return out

    return product


@dataclass(frozen=True)
class CGResult:
    x: torch.Tensor
    iterations: int
    residual: float


def conjugate_gradient(
    matvec: MatVec,
    b: torch.Tensor,
    *,
    max_iter: int = 50,
    tol: float = 1e-8,
    x0: torch.Tensor | None = None,
) -> CGResult:
    """Solve ``A x = b`` for symmetric positive definite ``A`` given as ``matvec``.

    Stops when ``||r|| <= tol * ||b||`` or after ``max_iter`` iterations.

    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
    >>> res = conjugate_gradient(lambda v: A @ v, torch.tensor([1.0, 2.0]))
    >>> [round(v, 4) for v in res.x.tolist()], res.iterations
    ([0.0909, 0.6364], 2)
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = r @ r
    target = (tol * torch.linalg.vector_norm(b)) ** 2
    it = 0
    while it < max_iter and rs > target:
        ap = matvec(p)
        curv = p @ ap
        if curv <= 0:  # not positive definite along p: stop with what we have
            break
        alpha = rs / curv
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = r @ r
        p = r + (rs_new / rs) * p
        rs = rs_new
        it += 1
    return CGResult(x, it, float(rs.sqrt()))


def conjugate_gradient_fixed(matvec: MatVec, b: torch.Tensor, iterations: int) -> torch.Tensor:
    """CG with a fixed number of iterations and no data-dependent branches, so it runs under
    ``torch.func.vmap`` (one solve per task). A direction of non-positive curvature, or a
    converged residual, contributes a zero step instead of stopping.

    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
    >>> x = conjugate_gradient_fixed(lambda v: A @ v, torch.tensor([1.0, 2.0]), 2)
    >>> [round(v, 4) for v in x.tolist()]
    [0.0909, 0.6364]
    """
    x = torch.zeros_like(b)
    r = b
    p = b
    rs = r @ r
    for _ in range(iterations):
        ap = matvec(p)
        curv = p @ ap
        ok = (curv > 0) & (rs > 0)
        alpha = torch.where(ok, rs / torch.where(ok, curv, torch.ones_like(curv)), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = r @ r
        beta = torch.where(ok, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), 0.0)
        p = r + beta * p
        rs = rs_new
    return x

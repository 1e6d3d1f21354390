"""The implicit path (iMAML): no unrolling.

Each task's inner problem ``w* = argmin L_support(w) + (lam/2)||w - theta0||^2`` is solved
to near convergence (L-BFGS). At ``w*`` the stationarity condition gives
``dw*/dtheta0 = lam (H + lam I)^-1`` with ``H`` the support loss's Hessian, so the
meta-gradient of the query loss is ``lam (H + lam I)^-1 grad L_query(w*)``: one conjugate
gradient solve on Hessian-vector products (:mod:`streamlearn.optim.linalg`), whatever the
number of inner steps. Where ``H + lam I`` is not positive definite (non-convex regions) CG
stops at the first direction of non-positive curvature.
"""

from __future__ import annotations

import torch
from torch.func import grad, vmap

from streamlearn.meta.maml import InnerRule, MetaParams, TaskBatch, adapt, mean_loss
from streamlearn.model.spec import ModelSpec
from streamlearn.optim.linalg import conjugate_gradient, conjugate_gradient_fixed, hvp


def solve_inner(
    spec: ModelSpec,
    lam: float,
    theta0: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-9,
) -> torch.Tensor:
    """``argmin_w L_support(w) + (lam/2)||w - theta0||^2`` by L-BFGS from ``theta0``."""
    theta0 = theta0.detach()
    w = theta0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=tol * 1e-3,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = mean_loss(spec, w, xs, ys) + 0.5 * lam * ((w - theta0) ** 2).sum()
        (w.grad,) = torch.autograd.grad(loss, [w])
        return loss.detach()

    opt.step(closure)  # type: ignore[no-untyped-call]
    return w.detach()


def task_meta_grad(
    spec: ModelSpec,
    lam: float,
    theta0: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    xq: torch.Tensor,
    yq: torch.Tensor,
    *,
    cg_iter: int = 20,
    inner_iter: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d L_query(w*(theta0)) / d theta0, L_query(w*))`` for one task."""
    if lam <= 0:
        raise ValueError(f"the implicit path needs proximal lambda > 0, got {lam}")
    w_star = solve_inner(spec, lam, theta0, xs, ys, max_iter=inner_iter)
    query_grad = grad(lambda w: mean_loss(spec, w, xq, yq))(w_star)
    h = hvp(lambda w: mean_loss(spec, w, xs, ys), w_star)
    sol = conjugate_gradient(lambda v: h(v) + lam * v, query_grad, max_iter=cg_iter)
    return lam * sol.x, mean_loss(spec, w_star, xq, yq).detach()


def batched_meta_grad(
    spec: ModelSpec,
    lam: float,
    theta0: torch.Tensor,
    batch: TaskBatch,
    *,
    inner_steps: int,
    inner_rate: float,
    cg_iter: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same meta-gradient for all tasks at once under ``vmap``: the inner problem is
    solved by ``inner_steps`` AdaGrad steps of the online rule (no graph kept), the linear
    system by ``cg_iter`` fixed CG iterations. About 50x faster than per-task L-BFGS on
    the sinusoid MLP; :func:`task_meta_grad` is the precise reference the tests use."""
    if lam <= 0:
        raise ValueError(f"the implicit path needs proximal lambda > 0, got {lam}")
    theta0 = theta0.detach()
    rule = InnerRule(steps=inner_steps, lam=lam)
    params = MetaParams(theta0, torch.full_like(theta0, float(torch.tensor(inner_rate).log())))

    def one(
        xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w_star = adapt(spec, rule, params, xs, ys, first_order=True).detach()
        query_grad = grad(lambda w: mean_loss(spec, w, xq, yq))(w_star)
        h = hvp(lambda w: mean_loss(spec, w, xs, ys), w_star)
        v = conjugate_gradient_fixed(lambda u: h(u) + lam * u, query_grad, cg_iter)
        return lam * v, mean_loss(spec, w_star, xq, yq)

    g, losses = vmap(one)(batch.xs, batch.ys, batch.xq, batch.yq)
    return g.mean(0), losses.mean().detach()


def meta_grad(
    spec: ModelSpec, lam: float, theta0: torch.Tensor, batch: TaskBatch, **kw: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean implicit meta-gradient and query loss over the batch's tasks."""
    grads, losses = [], []
    for t in range(len(batch)):
        g, loss = task_meta_grad(
            spec, lam, theta0, batch.xs[t], batch.ys[t], batch.xq[t], batch.yq[t], **kw
        )
        grads.append(g)
        losses.append(loss)
    return torch.stack(grads).mean(0), torch.stack(losses).mean()


class IMAML:
    """Outer loop of the implicit path: Adam on ``theta0``.

    >>> spec = ModelSpec(1, "regression")
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(4, 10, 1, generator=gen)
    >>> batch = TaskBatch(x[:, :5], 3 * x[:, :5, 0] + 2, x[:, 5:], 3 * x[:, 5:, 0] + 2)
    >>> m = IMAML(spec, lam=1.0, theta0=spec.init(kind="zeros"), outer_lr=0.1)
    >>> first = m.step(batch)
    >>> [m.step(batch) for _ in range(60)][-1] < first / 4
    True
    """

    def __init__(
        self,
        spec: ModelSpec,
        lam: float,
        theta0: torch.Tensor,
        *,
        outer_lr: float = 1e-3,
        cg_iter: int = 20,
        inner_iter: int = 100,
        inner_rate: float | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        """``inner_rate`` set: batched solve (AdaGrad steps at that rate); else L-BFGS."""
        if lam <= 0:
            raise ValueError(f"meta.implicit_lambda must be > 0, got {lam}")
        self.spec = spec
        self.lam = lam
        self.cg_iter = cg_iter
        self.inner_iter = inner_iter
        self.inner_rate = inner_rate
        self.device = torch.device(device)
        self.theta0 = theta0.detach().clone().float().to(self.device).requires_grad_(True)
        self.opt = torch.optim.Adam([self.theta0], lr=outer_lr)

    def step(self, batch: TaskBatch) -> float:
        batch = TaskBatch(*(t.to(self.device) for t in (batch.xs, batch.ys, batch.xq, batch.yq)))
        if self.inner_rate is not None:
            g, loss = batched_meta_grad(
                self.spec,
                self.lam,
                self.theta0,
                batch,
                inner_steps=self.inner_iter,
                inner_rate=self.inner_rate,
                cg_iter=self.cg_iter,
            )
        else:
            g, loss = meta_grad(
                self.spec,
                self.lam,
                self.theta0.detach(),
                batch,
                cg_iter=self.cg_iter,
                inner_iter=self.inner_iter,
            )
        self.theta0.grad = g
        self.opt.step()
        return float(loss)

"""Unrolled MAML with learned per-parameter inner rates (Meta-SGD), batched over tasks.

The inner loop is the online learner's rule, AdaGrad on the loss plus the proximal term
``(lam/2)||w - theta0||^2``, each parameter with its own learned rate ``exp(log_rate)``
(``rule="sgd"`` gives classic MAML steps instead), in one of two orders:

- ``order="online"`` (the daemon's): a task's examples (support, then query) arrive one at a
  time; each is predicted with the weights so far, then takes one step, exactly as the
  online learner treats a new key's labels. The meta-loss is the prequential loss: the mean
  loss of those predictions, each made before its own label was learned. So what is
  meta-learned is how far one label, two labels, ... should move a new key, which is what
  its first events are scored on.
- ``order="batch"`` (classic few-shot MAML): K steps on the whole support set's mean loss;
  the meta-loss is the query loss after them.

The meta-gradient with respect to ``theta0`` and ``log_rate`` is taken through the inner
steps (second order), or treating the inner gradients as constants (``first_order=True``).
Tasks are batched with ``torch.func.vmap``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch.func import grad, vmap

from streamlearn.model.spec import ModelSpec

# sqrt(G) has an infinite derivative at G = 0; a coordinate whose gradient is exactly 0
# would turn the second-order meta-gradient into NaN. This floor changes no value.
_SQRT_FLOOR = 1e-30


class MetaParams(NamedTuple):
    """What meta-learning learns: the starting point and the log of per-parameter rates."""

    theta0: torch.Tensor
    log_rate: torch.Tensor


@dataclass(frozen=True)
class InnerRule:
    """How a task adapts: one step per example in arrival order (``order="online"``), or
    ``steps`` updates on the whole support set (``order="batch"``)."""

    steps: int = 1
    lam: float = 0.0
    rule: Literal["adagrad", "sgd"] = "adagrad"
    eps: float = 1e-10
    initial_accumulator: float = 0.1
    order: Literal["batch", "online"] = "batch"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"meta.inner_steps must be >= 1, got {self.steps}")
        if self.lam < 0:
            raise ValueError(f"proximal lambda must be >= 0, got {self.lam}")
        if self.order not in ("batch", "online"):
            raise ValueError(f"meta.inner_order must be 'batch' or 'online', got {self.order!r}")


@dataclass(frozen=True)
class TaskBatch:
    """T tasks, each with S support and Q query examples."""

    xs: torch.Tensor  # [T, S, d]
    ys: torch.Tensor  # [T, S]
    xq: torch.Tensor  # [T, Q, d]
    yq: torch.Tensor  # [T, Q]

    def __len__(self) -> int:
        return int(self.xs.shape[0])


def mean_loss(spec: ModelSpec, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean data loss of one parameter vector over examples ``x[n, d]``."""
    return vmap(spec.loss_one, in_dims=(None, 0, 0))(w, x, y).mean()


def adapt(
    spec: ModelSpec,
    rule: InnerRule,
    params: MetaParams,
    xs: torch.Tensor,
    ys: torch.Tensor,
    *,
    first_order: bool = False,
) -> torch.Tensor:
    """Fast weights of one task after ``rule.steps`` inner updates from ``params.theta0``."""
    theta0 = params.theta0
    rate = params.log_rate.exp()

    def support(w: torch.Tensor) -> torch.Tensor:
        prox = 0.5 * rule.lam * ((w - theta0) ** 2).sum() if rule.lam else 0.0
        return mean_loss(spec, w, xs, ys) + prox

    if rule.order == "online":
        return online(spec, rule, params, xs, ys, first_order=first_order)[0]
    w = theta0
    acc = torch.full_like(theta0, rule.initial_accumulator)
    for _ in range(rule.steps):
        g = grad(support)(w)
        if first_order:
            g = g.detach()
        w, acc = _step(rule, w, acc, g, rate)
    return w


def _step(
    rule: InnerRule, w: torch.Tensor, acc: torch.Tensor, g: torch.Tensor, rate: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One inner update (AdaGrad, or a plain step) and the accumulator after it."""
    if rule.rule == "adagrad":
        acc = acc + g * g
        return w - rate * g / ((acc + _SQRT_FLOOR).sqrt() + rule.eps), acc
    return w - rate * g, acc


def online(
    spec: ModelSpec,
    rule: InnerRule,
    params: MetaParams,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    first_order: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The online rule over one task's examples in order: each is predicted with the weights
    so far, then takes one step on its loss plus the proximal term. Returns the weights
    after the last step and the mean prequential loss (each example's loss before its step)."""
    theta0 = params.theta0
    rate = params.log_rate.exp()
    w = theta0
    acc = torch.full_like(theta0, rule.initial_accumulator)
    total = torch.zeros((), dtype=theta0.dtype, device=theta0.device)
    for t in range(x.shape[0]):
        g, loss = torch.func.grad_and_value(spec.loss_one)(w, x[t], y[t])
        total = total + loss
        if rule.lam:
            g = g + rule.lam * (w - theta0)
        if first_order:
            g = g.detach()
        w, acc = _step(rule, w, acc, g, rate)
    return w, total / x.shape[0]


def meta_loss(
    spec: ModelSpec,
    rule: InnerRule,
    params: MetaParams,
    batch: TaskBatch,
    *,
    first_order: bool = False,
) -> torch.Tensor:
    """Mean over tasks of the query loss after adaptation on their support sets
    (``order="batch"``), or of the prequential loss over support and query in order
    (``order="online"``)."""

    def one(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor) -> torch.Tensor:
        if rule.order == "online":
            x, y = torch.cat([xs, xq]), torch.cat([ys, yq])
            return online(spec, rule, params, x, y, first_order=first_order)[1]
        w = adapt(spec, rule, params, xs, ys, first_order=first_order)
        return mean_loss(spec, w, xq, yq)

    return vmap(one)(batch.xs, batch.ys, batch.xq, batch.yq).mean()


def meta_grad(
    spec: ModelSpec,
    rule: InnerRule,
    params: MetaParams,
    batch: TaskBatch,
    *,
    first_order: bool = False,
    learn_rates: bool = True,
) -> tuple[MetaParams, torch.Tensor]:
    """``(d meta_loss / d params, meta_loss)``; rates get a zero gradient when not learned."""

    def f(p: MetaParams) -> torch.Tensor:
        if not learn_rates:
            p = MetaParams(p.theta0, p.log_rate.detach())
        return meta_loss(spec, rule, p, batch, first_order=first_order)

    g, loss = torch.func.grad_and_value(f)(params)
    return MetaParams(*g), loss


class MAML:
    """Outer loop: Adam on ``theta0`` and the log inner rates.

    >>> spec = ModelSpec(1, "regression")
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(8, 10, 1, generator=gen)
    >>> batch = TaskBatch(x[:, :5], 3 * x[:, :5, 0], x[:, 5:], 3 * x[:, 5:, 0])
    >>> m = MAML(spec, InnerRule(steps=1, rule="sgd"), spec.init(kind="zeros"), rate=0.1,
    ...          outer_lr=0.05)
    >>> first = m.step(batch)
    >>> last = [m.step(batch) for _ in range(100)][-1]
    >>> last < first / 10
    True
    """

    def __init__(
        self,
        spec: ModelSpec,
        rule: InnerRule,
        theta0: torch.Tensor,
        *,
        rate: float = 0.1,
        outer_lr: float = 1e-3,
        first_order: bool = False,
        learn_rates: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        if rate <= 0:
            raise ValueError(f"meta.inner_rate must be > 0, got {rate}")
        if outer_lr <= 0:
            raise ValueError(f"meta.outer_lr must be > 0, got {outer_lr}")
        self.spec = spec
        self.rule = rule
        self.first_order = first_order
        self.learn_rates = learn_rates
        self.device = torch.device(device)
        self.theta0 = theta0.detach().clone().float().to(self.device).requires_grad_(True)
        self.log_rate = torch.full_like(self.theta0, float(torch.tensor(rate).log()))
        self.log_rate.requires_grad_(learn_rates)
        leaves = [self.theta0, self.log_rate] if learn_rates else [self.theta0]
        self.opt = torch.optim.Adam(leaves, lr=outer_lr)

    @property
    def params(self) -> MetaParams:
        return MetaParams(self.theta0.detach(), self.log_rate.detach())

    def step(self, batch: TaskBatch) -> float:
        batch = TaskBatch(*(t.to(self.device) for t in (batch.xs, batch.ys, batch.xq, batch.yq)))
        g, loss = meta_grad(
            self.spec,
            self.rule,
            self.params,
            batch,
            first_order=self.first_order,
            learn_rates=self.learn_rates,
        )
        self.theta0.grad = g.theta0
        if self.learn_rates:
            self.log_rate.grad = g.log_rate
        self.opt.step()
        return float(loss)

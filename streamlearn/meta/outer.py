"""One way to build the outer loop, for offline (``meta-train``) and background training."""

from __future__ import annotations

import torch

from streamlearn.meta.implicit import IMAML
from streamlearn.meta.maml import MAML, InnerRule, MetaParams, TaskBatch
from streamlearn.model.spec import ModelSpec

IMPLICIT_DEFAULT_LAMBDA = 1.0  # the implicit path needs lam > 0; used when the rule has none


class OuterLoop:
    """MAML (``theta0`` and, unless ``learn_rates`` is off, the per-parameter rates) or
    iMAML (``theta0`` only; the rates stay as given), started from ``start``.

    >>> import math
    >>> spec = ModelSpec(1, "regression")
    >>> start = MetaParams(torch.zeros(2), torch.full((2,), math.log(0.1)))
    >>> loop = OuterLoop("imaml", spec, InnerRule(), start, outer_lr=0.01, device="cpu")
    >>> torch.equal(loop.params.log_rate, start.log_rate)
    True
    """

    def __init__(
        self,
        method: str,
        spec: ModelSpec,
        rule: InnerRule,
        start: MetaParams,
        *,
        outer_lr: float,
        device: str | torch.device,
        first_order: bool = False,
        learn_rates: bool = True,
    ) -> None:
        if method not in ("maml", "imaml"):
            raise ValueError(f"meta.method must be 'maml' or 'imaml', got {method!r}")
        self._start = start
        rate = float(start.log_rate.exp().mean())
        self._impl: MAML | IMAML
        if method == "maml":
            maml = MAML(
                spec,
                rule,
                start.theta0,
                rate=rate,
                outer_lr=outer_lr,
                first_order=first_order,
                learn_rates=learn_rates,
                device=device,
            )
            with torch.no_grad():
                maml.log_rate.copy_(start.log_rate.to(maml.log_rate.device))
            self._impl = maml
        else:
            lam = rule.lam if rule.lam > 0 else IMPLICIT_DEFAULT_LAMBDA
            self._impl = IMAML(
                spec,
                lam,
                start.theta0,
                outer_lr=outer_lr,
                inner_iter=10,
                inner_rate=rate,
                cg_iter=5,
                device=device,
            )

    def step(self, batch: TaskBatch) -> float:
        return self._impl.step(batch)

    @property
    def params(self) -> MetaParams:
        """The current result, on the CPU."""
        if isinstance(self._impl, MAML):
            p = self._impl.params
            return MetaParams(p.theta0.cpu(), p.log_rate.cpu())
        return MetaParams(self._impl.theta0.detach().cpu(), self._start.log_rate.cpu())

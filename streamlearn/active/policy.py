"""Which unlabelled events to query, at the label budget.

Each event gets a raw score (uncertainty of the prediction, lambda-sensitivity of the
prediction, their mix, or a random draw), turned into its quantile among the recent raw
scores, so that every policy speaks the same scale: a threshold of 0.95 asks for about the
top 5%. A PI controller (:class:`streamlearn.optim.pi.PIController`) moves the threshold so
that the share of events queried, smoothed over polls, holds the budget; an event id is never
queried twice (a bounded memory of the ids already asked).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import numpy as np

from streamlearn.optim.pi import PIController

Policy = Literal["uncertainty", "sensitivity", "combined", "random"]


def uncertainty(p: np.ndarray) -> np.ndarray:
    """1 at a coin flip, 0 when sure: ``1 - |2p - 1|`` for P(class 1) ``[n]``, ``1 - (p_max -
    p_second)`` for class probabilities ``[n, C]``.

    >>> uncertainty(np.array([0.5, 0.9, 0.0])).round(3).tolist()
    [1.0, 0.2, 0.0]
    """
    if p.ndim == 1:
        return np.asarray(1.0 - np.abs(2.0 * p - 1.0))
    top2 = np.sort(p, axis=1)[:, -2:]
    return np.asarray(1.0 - (top2[:, 1] - top2[:, 0]))


class QuantileScale:
    """A raw score's quantile among the last ``size`` raw scores seen (1 before any).

    >>> scale = QuantileScale(size=4)
    >>> scale.quantiles(np.array([1.0, 2.0, 3.0, 4.0]), update=True).tolist()
    [1.0, 1.0, 1.0, 1.0]
    >>> scale.quantiles(np.array([0.0, 2.5, 9.0]), update=False).tolist()
    [0.0, 0.5, 1.0]
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._ref = np.zeros(0)

    def quantiles(self, raw: np.ndarray, *, update: bool) -> np.ndarray:
        ref = self._ref
        if len(ref):
            q = np.searchsorted(np.sort(ref), raw, side="right") / len(ref)
        else:
            q = np.ones(len(raw))
        if update:
            self._ref = np.concatenate([ref, raw])[-self.size :]
        return np.asarray(q, dtype=np.float64)


class QueryPolicy:
    """Scores and picks events to query.

    >>> pol = QueryPolicy("uncertainty", budget=0.1, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> asked = 0
    >>> for i in range(50):
    ...     ids = [f"{i}-{j}" for j in range(200)]
    ...     asked += int(pol.select(ids, pol.scores(rng.random(200))).sum())
    >>> 0.07 < asked / 10_000 < 0.13
    True
    """

    def __init__(
        self,
        policy: Policy,
        *,
        budget: float,
        mix: float = 0.5,
        reference: int = 2000,
        remember: int = 100_000,
        kp: float = 2.0,
        ki: float = 0.5,
        seed: int = 0,
    ) -> None:
        if policy not in ("uncertainty", "sensitivity", "combined", "random"):
            raise ValueError(
                "active.policy must be uncertainty, sensitivity, combined or random, "
                f"got {policy!r}"
            )
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"active.budget must be in (0, 1], got {budget}")
        if not 0.0 <= mix <= 1.0:
            raise ValueError(f"active.mix must be in [0, 1], got {mix}")
        self.policy = policy
        self.budget = budget
        self.mix = mix
        self._rng = np.random.default_rng(seed)
        self._scale = QuantileScale(reference)  # of the policy's raw scores
        self._sensitivity_scale = QuantileScale(reference)  # for mixing with uncertainty
        self._asked: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        # The controller's output is minus the threshold: below budget (error > 0) the
        # output rises, so the threshold falls and more events qualify.
        self.controller = PIController(
            setpoint=budget, kp=kp, ki=ki, out_min=-1.0, out_max=0.0, bias=-(1.0 - budget)
        )
        self.rate = budget  # smoothed share of events queried

    @property
    def threshold(self) -> float:
        return -self.controller.output

    def scores(self, p: np.ndarray, sensitivity: np.ndarray | None = None) -> np.ndarray:
        """Raw scores: larger means more worth a label."""
        n = len(p)
        if self.policy == "random":
            return self._rng.random(n)
        if self.policy == "uncertainty":
            return uncertainty(p)
        if sensitivity is None:
            raise ValueError(f"active.policy {self.policy!r} needs the lambda-sensitivities")
        if self.policy == "sensitivity":
            return np.asarray(sensitivity, dtype=np.float64)
        sens = self._sensitivity_scale.quantiles(np.asarray(sensitivity), update=True)
        return np.asarray(self.mix * sens + (1 - self.mix) * uncertainty(p))

    def select(self, event_ids: Sequence[str], raw: np.ndarray) -> np.ndarray:
        """Mask of the events to query now; updates the reference, the rate and the
        threshold."""
        q = self._scale.quantiles(raw, update=True)
        fresh = np.fromiter((e not in self._asked for e in event_ids), dtype=bool, count=len(raw))
        pick = fresh & (q > self.threshold)
        for e in np.asarray(event_ids, dtype=object)[pick]:
            self._asked[e] = None
        while len(self._asked) > self._remember:
            self._asked.popitem(last=False)
        if len(raw):
            share = float(pick.mean())
            self.rate += 0.2 * (share - self.rate)
            self.controller.update(self.rate)
        return pick

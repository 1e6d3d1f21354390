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
from typing import Any, Literal

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
    """A raw score's quantile among the last ``size`` raw scores seen, these included when
    ``update`` (so the very first batch is ranked among itself, not all waved through).
    Ties get a uniformly random share of their range: a score held by many events (a
    saturated probability) would otherwise jump from quantile 0 to 1 past any threshold.

    >>> scale = QuantileScale(size=4)
    >>> scale.quantiles(np.array([1.0, 2.0, 3.0, 4.0]), update=True).tolist()
    [0.25, 0.5, 0.75, 1.0]
    >>> scale.quantiles(np.array([0.0, 2.5, 9.0]), update=False).tolist()
    [0.0, 0.5, 1.0]
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self._ref = np.zeros(0)
        self._rng = np.random.default_rng(seed)

    def quantiles(self, raw: np.ndarray, *, update: bool) -> np.ndarray:
        if update:
            self._ref = np.concatenate([self._ref, raw])[-self.size :]
        ref = np.sort(self._ref)
        if not len(ref):
            return np.ones(len(raw))
        below = np.searchsorted(ref, raw, side="left")
        upto = np.searchsorted(ref, raw, side="right")
        tied = upto - below
        q = upto if not (tied > 1).any() else below + self._rng.random(len(raw)) * tied
        return np.asarray(q / len(ref), dtype=np.float64)

    def state(self) -> list[float]:
        return [float(v) for v in self._ref]

    def load(self, values: Sequence[float]) -> None:
        self._ref = np.asarray(values, dtype=np.float64)[-self.size :]


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
        explore: float = 0.0,
        horizon: int = 2500,
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
        if not 0.0 <= explore < 1.0:
            raise ValueError(f"active.explore must be in [0, 1), got {explore}")
        if horizon < 1:
            raise ValueError(f"active.horizon must be >= 1 event, got {horizon}")
        self.policy = policy
        self.budget = budget
        self.explore = explore
        self.horizon = horizon
        self.explored = np.zeros(0, dtype=bool)  # which picks of the last select explored
        self.mix = mix
        self._rng = np.random.default_rng(seed)
        self._scale = QuantileScale(reference)  # of the policy's raw scores
        self._sensitivity_scale = QuantileScale(reference)  # for mixing with uncertainty
        self._asked: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        # The controller's output is minus the threshold: below budget (error > 0) the
        # output rises, so the threshold falls and more events qualify.
        scored = budget * (1.0 - explore)
        self.controller = PIController(
            setpoint=scored, kp=kp, ki=ki, out_min=-1.0, out_max=0.0, bias=-(1.0 - scored)
        )
        self.rate = scored  # smoothed share of events queried for their scores

    def set_budget(self, budget: float, explore: float | None = None) -> None:
        """A new target share (a per-second budget turned into a share of the event rate,
        or the pacer's share), and the part of it drawn at random when given."""
        self.budget = min(max(budget, 0.0), 1.0)
        if explore is not None:
            self.explore = min(max(explore, 0.0), 1.0)
        scored = self.budget * (1.0 - self.explore)
        self.controller.setpoint = scored
        # Feed-forward: scores are quantiles, so a threshold of 1 - share asks for about
        # that share at once; the controller only corrects what ties and a moving score
        # distribution make of it (a paced budget moves in steps, integrating each one
        # through the smoothed rate would lag it by the whole horizon).
        self.controller.bias = -(1.0 - scored)

    def state_dict(self) -> dict[str, object]:
        c = self.controller
        return {
            "rate": self.rate,
            "budget": self.budget,
            "controller": [c.integral, c.error, c.output],
            "reference": self._scale.state(),
            "sensitivity_reference": self._sensitivity_scale.state(),
            "asked": list(self._asked),
            "rng": [
                r.bit_generator.state
                for r in (self._rng, self._scale._rng, self._sensitivity_scale._rng)
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rate = float(state["rate"])
        self.set_budget(float(state["budget"]))
        c = self.controller
        c.integral, c.error, c.output = (float(v) for v in state["controller"])
        self._scale.load(state["reference"])
        self._sensitivity_scale.load(state["sensitivity_reference"])
        self._asked = OrderedDict((str(e), None) for e in state["asked"])
        for r, st in zip(
            (self._rng, self._scale._rng, self._sensitivity_scale._rng),
            state.get("rng", []),
            strict=False,  # absent in checkpoints of the first version
        ):
            r.bit_generator.state = st

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
        threshold. A share ``explore`` of the budget goes to events drawn at random
        (:attr:`explored` marks them): their labels are an unbiased sample, so the error
        they show is the model's, not that of the hard cases the scores pick, and drift
        detection can rely on them (the "split" strategy of Zliobaite et al., Active
        learning with drifting streaming data, IEEE TNNLS 2014)."""
        n = len(raw)
        q = self._scale.quantiles(raw, update=True)
        fresh = np.fromiter((e not in self._asked for e in event_ids), dtype=bool, count=n)
        explored = fresh & (self._rng.random(n) < self.budget * self.explore)
        scored = fresh & ~explored & (q > self.threshold)
        pick = explored | scored
        for e in np.asarray(event_ids, dtype=object)[pick]:
            self._asked[e] = None
        while len(self._asked) > self._remember:
            self._asked.popitem(last=False)
        if n:
            # The scored share, smoothed over about ``horizon`` events.
            alpha = 1.0 - (1.0 - 1.0 / self.horizon) ** n
            self.rate += alpha * (float(scored.mean()) - self.rate)
            self.controller.update(self.rate)
        self.explored = explored[pick]
        return pick

"""When to spend the label budget: more while the model errs more than usual.

A fixed share of events queried spends as many labels in a settled stretch, where the model
already knows the concept, as right after a drift, where every label counts. The pacer
moves the share around the budget with the loss of the answered labels: the ratio of a
fast to a slow moving average of that loss (both in labels) raises the share after a drift
and lowers it once the model has caught up. A bank of labels keeps the long-run share at the
budget: every event earns ``budget`` labels, every query spends one, and the share is scaled
by ``exp(bank / scale)`` (``scale`` = the labels the budget earns over ``bank_events``; the
bank capped at ``scale``), so an overspent bank pays itself back in the settled stretch that
follows, and labels saved while the loss was below its usual level are spent soon after.

The moving averages react within tens of explored labels, thousands of events at a tight
budget. A **surge** reacts within a few: a CUSUM of every answered label's evidence that the
model now does no better than a coin (``log loss - coin_loss``, the log-likelihood ratio of
a coin against the model's prediction; ``coin_loss`` is log 2, or log C for C classes)
passes ``alarm_nats``, and the pacer queries at its maximum share for ``surge_events``
events, or until the labels saved in the bank are spent. Every label counts in proportion
to how sure its prediction was: an answer to an uncertain query (p near 0.5) adds about
nothing, a confident miss adds up to ``_CAP`` nats. bench/active_ceiling.py measures what
surges are worth, at the true drift times and on this detector (docs/active-learning.md).
Given the answers' keys, an alarm also says how much of its evidence (the CUSUM's run that
passed the threshold) one key carried, :attr:`BudgetPacer.alarm_key_share`: near 1 the
misses were one key's, spread they were the population's, and only then does the caller
restart the shared model (a one-key stream loses by restarts in its hard stretches; many
keys that drift together gain).

A **warm-up** starts the stream the same way: the first ``warmup_events`` events at the
maximum share. A new model knows nothing, so its first labels teach it the most, and an
uncertainty policy's picks are no better than random then. This one borrows: the bank
pays it back over the next ``bank_events`` or so (measured by bench/active_budget.py;
docs/active-learning.md). A daemon that resumes from a checkpoint does not warm up again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from streamlearn.optim.cusum import cusum_paths

# Nats: the most one answer adds. A confident prediction's label flipped by noise would
# otherwise count ~10 nats alone; log(0.5 / 0.025) is the most a coin can gain over a model
# whose labels are 5% noise.
_CAP = 3.0
# Keys whose part of a CUSUM run's evidence is kept one by one; the parts of keys past
# these count in the run's total only (many keys are no one key's evidence).
_RUN_KEYS = 1024


class BudgetPacer:
    """The share of events to query now, around ``budget``.

    >>> pacer = BudgetPacer(0.05, max_boost=4.0, fast_labels=10, slow_labels=200)
    >>> pacer.add_losses(np.full(400, 0.3))  # settled: loss at its usual level
    >>> round(pacer.share(), 3)
    0.05
    >>> pacer.add_losses(np.full(20, 1.2))  # a drift: the loss of new answers jumps
    >>> round(pacer.share(), 3) > 0.1
    True
    >>> for _ in range(50):  # overspending drains the bank, which lowers the share again
    ...     pacer.spend(events=100, queried=20)
    >>> pacer.share() < 0.05
    True
    """

    def __init__(
        self,
        budget: float,
        *,
        max_boost: float = 4.0,
        fast_labels: int = 30,
        slow_labels: int = 1000,
        bank_events: int = 10_000,
        surge_events: int = 0,
        alarm_nats: float = 8.0,
        coin_loss: float | None = None,
        warmup_events: int = 0,
    ) -> None:
        if max_boost < 1.0:
            raise ValueError(f"active.pacing.max_boost must be >= 1, got {max_boost}")
        if not 1 <= fast_labels < slow_labels:
            raise ValueError(
                f"active.pacing.fast_labels ({fast_labels}) must be >= 1 and below "
                f"active.pacing.slow_labels ({slow_labels})"
            )
        if bank_events < 1:
            raise ValueError(f"active.pacing.bank_events must be >= 1, got {bank_events}")
        if surge_events < 0:
            raise ValueError(f"active.pacing.surge_events must be >= 0, got {surge_events}")
        if warmup_events < 0:
            raise ValueError(f"active.pacing.warmup_events must be >= 0, got {warmup_events}")
        if alarm_nats <= 0:
            raise ValueError(f"active.pacing.alarm_nats must be > 0, got {alarm_nats}")
        self.budget = budget
        self.max_boost = max_boost
        self._a_fast = 1.0 / fast_labels
        self._a_slow = 1.0 / slow_labels
        self.bank_events = bank_events
        self.fast = math.nan  # moving averages of the answered labels' loss
        self.slow = math.nan
        self.bank = 0.0  # labels earned and not spent (negative: overspent)
        # Surges: none without a coin to compare with (regression) or with 0 events.
        self.surge_events = surge_events if coin_loss is not None else 0
        self.alarm_nats = alarm_nats
        self.coin_loss = coin_loss if coin_loss is not None else 0.0
        self.evidence = 0.0  # CUSUM of log loss - coin_loss over the answers
        self._run_keys: dict[str, float] = {}  # each key's part of ``evidence``'s run
        # The most any one key carried of the last alarm's evidence (1 when keys are not
        # given): near 1, the misses were one key's; spread, the population's.
        self.alarm_key_share = 1.0
        self.surge_left = 0  # events left at the maximum share
        self.warmup_left = warmup_events  # events of the start left at the maximum share

    @property
    def at_maximum(self) -> bool:
        """In a surge or the warm-up: the maximum share, and no alarm."""
        return self.surge_left > 0 or self.warmup_left > 0

    @property
    def scale(self) -> float:
        return max(self.budget * self.bank_events, 1.0)

    def add_losses(self, loss: np.ndarray) -> None:
        """The loss of answered labels (their prediction at event time), in arrival order."""
        for v in np.asarray(loss, dtype=np.float64).tolist():
            if not math.isfinite(v):
                continue
            if math.isnan(self.fast):
                self.fast = self.slow = v
            self.fast += self._a_fast * (v - self.fast)
            self.slow += self._a_slow * (v - self.slow)

    def alarm(self, loss: np.ndarray, keys: Sequence[str] | None = None) -> bool:
        """Every answered label's loss, in arrival order (with its key, when given); true
        when the evidence passes ``alarm_nats`` (a drift: the caller restarts what
        re-learns, and :attr:`alarm_key_share` says whether one key carried it). A surge
        starts with it when the bank is not in debt, and ends early once the bank is spent:
        surges spend what the budget saved, never borrow (borrowing to half a ``scale``
        overspent the budget). The evidence waits at 0 during a surge: the model
        is re-learning, and its misses then say nothing new."""
        if not self.surge_events:
            return False
        if self.at_maximum:
            self._reset_run()
            return False
        v = np.asarray(loss, dtype=np.float64)
        finite = np.isfinite(v)
        gains = np.minimum(v[finite], _CAP) - self.coin_loss
        if not len(gains):
            return False
        ks = [str(k) for k, f in zip(keys, finite.tolist(), strict=True) if f] if keys else None
        path = cusum_paths(gains[None], np.array([self.evidence]))[0]
        over = np.flatnonzero(path > self.alarm_nats)
        end = int(over[0]) + 1 if len(over) else len(path)
        zeros = np.flatnonzero(path[:end] == 0.0)
        if len(zeros):  # the run restarted within these answers
            self._reset_run()
        start = int(zeros[-1]) + 1 if len(zeros) else 0
        self._add_to_run(gains[start:end], ks[start:end] if ks is not None else None)
        if not len(over):
            self.evidence = float(path[-1])
            return False
        top = max(self._run_keys.values(), default=0.0) if ks is not None else path[end - 1]
        self.alarm_key_share = float(min(max(top / path[end - 1], 0.0), 1.0))
        self._reset_run()
        if self.bank >= 0.0:
            self.start_surge(self.surge_events)
        return True

    def _reset_run(self) -> None:
        self.evidence = 0.0
        self._run_keys.clear()

    def _add_to_run(self, gains: np.ndarray, keys: list[str] | None) -> None:
        run = self._run_keys
        for k, g in zip(keys or (), gains.tolist(), strict=False):
            if k in run or len(run) < _RUN_KEYS:
                run[k] = run.get(k, 0.0) + g

    def start_surge(self, events: int) -> None:
        """The maximum share for the next ``events`` events (or until the bank is spent)."""
        self.surge_left = events

    def boost(self) -> float:
        """``fast / slow`` loss within ``[1 / max_boost, max_boost]`` (1 before any loss),
        ``max_boost`` during a surge or the warm-up."""
        if self.at_maximum:
            return self.max_boost
        if math.isnan(self.fast) or self.slow <= 0:
            return 1.0
        return min(max(self.fast / self.slow, 1.0 / self.max_boost), self.max_boost)

    def share(self) -> float:
        """The share to query now, within ``[budget / max_boost, min(1, budget * max_boost)]``."""
        b = self.budget
        # Debt lowers the share and savings raise it (up to e x at the cap): without the
        # latter, a bank filled in a settled stretch was never spent and the run ended
        # well under its budget, and less accurate.
        s = b * self.boost() * math.exp(min(self.bank, self.scale) / self.scale)
        return min(max(s, b / self.max_boost), 1.0, b * self.max_boost)

    def spend(self, *, events: int, queried: int) -> None:
        """Account one poll: ``events`` unlabelled events seen, ``queried`` of them asked."""
        self.bank = min(self.bank + self.budget * events - queried, self.scale)
        # The warm-up borrows; a surge ends early once the savings are spent.
        self.warmup_left = max(self.warmup_left - events, 0)
        self.surge_left = max(self.surge_left - events, 0) if self.bank > 0.0 else 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "fast": self.fast,
            "slow": self.slow,
            "bank": self.bank,
            "evidence": self.evidence,
            "surge_left": self.surge_left,
            "warmup_left": self.warmup_left,
            "run_keys": list(self._run_keys),
            "run_evidence": list(self._run_keys.values()),
            "alarm_key_share": self.alarm_key_share,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fast = float(state["fast"])
        self.slow = float(state["slow"])
        self.bank = float(state["bank"])
        self.evidence = float(state.get("evidence", 0.0))  # absent before surges
        self.surge_left = int(state.get("surge_left", 0))
        # A state from before warm-ups is a daemon that has run: no warm-up left.
        self.warmup_left = int(state.get("warmup_left", 0))
        # Absent before alarms knew keys: the run's evidence is then nobody's in particular.
        keys, parts = state.get("run_keys", []), state.get("run_evidence", [])
        self._run_keys = {str(k): float(v) for k, v in zip(keys, parts, strict=True)}
        self.alarm_key_share = float(state.get("alarm_key_share", 1.0))

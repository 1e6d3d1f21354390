"""The active-learning side of one poll: ask for labels, join the answers.

:meth:`ActiveLearning.ask` scores a poll's unlabelled events (after their predictions were
made), picks the ones within the budget, turns them into :class:`~streamlearn.wire.messages.Query`
messages and remembers them as pending. :meth:`ActiveLearning.join` matches label answers to
pending queries and hands back what to learn from, with the prediction published at event
time (regret is charged against that, not against the model the label finds). The lambda
watch (:mod:`streamlearn.active.lambda_watch`) sees every label and, on its cadence, renews
the per-key ``dw*/dlambda`` the sensitivity scores need and, when tuning, lambda itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.active.lambda_watch import LambdaWatch
from streamlearn.active.pacing import BudgetPacer
from streamlearn.active.pending import Pending, PendingQueries
from streamlearn.active.policy import QueryPolicy
from streamlearn.config import ActiveConfig
from streamlearn.learning.learner import OnlineLearner
from streamlearn.ops.metrics import ActiveMetrics
from streamlearn.wire.messages import Answer, EventBatch, Query


@dataclass(frozen=True)
class Joined:
    """Answers joined to their queries, as a batch to learn from (raw features), with the
    predictions published for those events."""

    batch: EventBatch
    p: np.ndarray
    explored: np.ndarray  # answers to random (exploration) queries


class ActiveLearning:
    """Query selection, pending queries and the lambda watch of one daemon.

    Not run as a doctest (it needs a learner and metrics): see ``tests/active/test_active_loop.py``.
    """

    def __init__(
        self,
        cfg: ActiveConfig,
        learner: OnlineLearner,
        metrics: ActiveMetrics,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.learner = learner
        self.metrics = metrics
        self.clock = clock
        self.policy = QueryPolicy(
            cfg.policy,
            budget=cfg.budget,
            mix=cfg.mix,
            reference=cfg.reference,
            remember=cfg.remember,
            kp=cfg.kp,
            ki=cfg.ki,
            explore=cfg.explore,
            horizon=cfg.horizon,
            seed=seed,
        )
        pc = cfg.pacing
        self.pacer = (
            BudgetPacer(
                cfg.budget,
                max_boost=pc.max_boost,
                fast_labels=pc.fast_labels,
                slow_labels=pc.slow_labels,
                bank_events=pc.bank_events,
                surge_events=pc.surge_events,
                alarm_nats=pc.alarm_nats,
                coin_loss=learner.spec.coin_loss,
                warmup_events=pc.warmup_events,
            )
            if pc.enabled
            else None
        )
        self.pending = PendingQueries(cfg.max_pending, cfg.remember)
        needs_watch = cfg.policy in ("sensitivity", "combined") or cfg.lambda_tuning.enabled
        self.watch = (
            LambdaWatch(learner.spec, cfg, learner.proximal_lambda, clock) if needs_watch else None
        )
        self.asked = 0  # queries produced
        self.joined = 0  # answers joined and learned
        self._last_ask: float | None = None
        self._unlabelled_rate = 0.0  # events per second, smoothed
        metrics.query_budget.set(cfg.budget)
        metrics.proximal_lambda.set(learner.proximal_lambda)

    # -- labels -----------------------------------------------------------------------------

    def tune_lambda(self, keys: list[str], x_std: np.ndarray, y: np.ndarray) -> float | None:
        """Every label learned (carried by events or answered); refreshes on cadence.
        Returns the proximal strength the learner should take (lambda tuning), else None."""
        w = self.watch
        if w is None or not len(y):
            return None
        w.add_labels(self.learner.slots_of(keys), x_std, y)
        if not w.due():
            return None
        params, anchors = self.learner.tables()
        out = w.refresh(params, anchors)
        self.metrics.lambda_hypergradient.set(out.hypergradient)
        return out.lam if self.cfg.lambda_tuning.enabled else None

    # -- queries ----------------------------------------------------------------------------

    def ask(self, batch: EventBatch, p: np.ndarray, x_std: np.ndarray) -> list[Query]:
        """Queries for the poll's unlabelled events worth a label (``p`` and ``x_std``:
        the poll's predictions and standardised features, aligned with the batch)."""
        now = self.clock()
        self._expire(now)
        idx = np.flatnonzero(~batch.labelled)
        self._hold_budget(now, len(idx))
        if not len(idx):
            return []
        ids = [batch.ids[i] for i in idx]
        keys = [batch.keys[i] for i in idx]
        p_u = p[idx]
        sens = None
        if self.watch is not None:
            slots = self.learner.slots_of(keys)
            w, _ = self.learner.rows(slots)
            sens = self.watch.sensitivity(w, slots, np.asarray(x_std[idx], dtype=np.float32))
        raw = self.policy.scores(p_u, sens)
        pick = np.flatnonzero(self.policy.select(ids, raw))
        mt = self.metrics
        if self.pacer is not None:
            self.pacer.spend(events=len(idx), queried=len(pick))
            mt.label_bank.set(self.pacer.bank)
        mt.query_rate.set(self.policy.rate)
        mt.query_threshold.set(self.policy.threshold)
        if not len(pick):
            return []
        version = self.learner.model_version
        expires = now + self.cfg.expiry_s
        out: list[Query] = []
        for j, explored in zip(pick.tolist(), self.policy.explored.tolist(), strict=True):
            i = int(idx[j])
            x = batch.x[i].tolist()
            pj: Any = p_u[j].tolist()
            qid = f"q-{ids[j]}"
            if self.pending.knows(qid):
                # A replayed event asked before (by a run that stopped, or answered
                # already): asking again would learn its label twice.
                continue
            reason = "explore" if explored else self.cfg.policy
            q = Query(qid, ids[j], keys[j], x, float(raw[j]), reason, pj, version, expires)
            self.pending.add(Pending.of(q, now, float(batch.ts[i])))
            out.append(q)
            mt.queries.labels(reason).inc()
        mt.pending_queries.set(len(self.pending))
        self.asked += len(out)
        return out

    def status(self) -> str:
        """For the daemon's status line."""
        return (
            f" queries={self.asked:,} answered={self.joined:,} pending={len(self.pending):,}"
            f" lambda={self.learner.proximal_lambda:.3g}"
        )

    def _hold_budget(self, now: float, n_unlabelled: int) -> None:
        """The budget: ``budget``, or with ``budget_per_second`` at most that over the rate
        of unlabelled events (smoothed); the pacer then moves the share queried now around
        it (more after a drift, paid back later)."""
        c = self.cfg
        share = c.budget
        if c.budget_per_second > 0:
            if self._last_ask is not None and now > self._last_ask:
                rate = n_unlabelled / (now - self._last_ask)
                a = 0.2 if self._unlabelled_rate else 1.0
                self._unlabelled_rate += a * (rate - self._unlabelled_rate)
            self._last_ask = now
            if self._unlabelled_rate > 0:
                share = min(c.budget, c.budget_per_second / self._unlabelled_rate)
        self.metrics.query_budget.set(share)
        if self.pacer is None:
            self.metrics.query_share_target.set(share)
            self.policy.set_budget(share)
            return
        base = share
        self.pacer.budget = base
        share = self.pacer.share()
        # What the pacer adds is drawn at random: after a drift the model's scores point at
        # the old concept's hard cases, and random labels are what relearns the new one
        # (measured: uncertainty-picked labels after a drift recovered half as fast). The
        # random share of the base budget stays, so drift detection is fed as before.
        random_share = c.explore * base + max(share - base, 0.0)
        self.metrics.query_share_target.set(share)
        self.policy.set_budget(share, explore=min(random_share / share, 1.0) if share else None)

    def pace_answers(self, loss: np.ndarray, explored: np.ndarray, keys: Sequence[str]) -> bool:
        """The loss of the answered labels' event-time predictions (and their keys) paces
        the budget: of the explored (random) answers only when there are such, since the
        scored ones are hard cases by design (an uncertain event's log loss is near log 2
        whatever the model's state). Returns whether the shared model should restart (with
        its ramp) after a surge of missed labels."""
        if self.pacer is None:
            return False
        c = self.cfg
        self.pacer.add_losses(loss[explored] if c.explore > 0 and c.policy != "random" else loss)
        if self.pacer.alarm(loss, keys):
            self.metrics.label_surges.inc()
            # The shared model re-learns with large steps again (its accumulator grew on
            # the settled concept's small gradients), ramping back to the old steps once
            # the new concept is learned. Only for a drift of the population: when one
            # key carried more than restart_key_share of the evidence, the misses are that
            # key's (its own offset and drift detector re-learn it), and larger shared
            # steps only add noise (docs/active-learning.md has the measurements).
            return (
                self.learner.shared is not None
                and c.pacing.restart_shared
                and self.pacer.alarm_key_share <= c.pacing.restart_key_share
            )
        return False

    def _expire(self, now: float) -> None:
        gone = self.pending.expire(now)
        if gone:
            self.metrics.queries_expired.inc(len(gone))
            self.metrics.pending_queries.set(len(self.pending))

    # -- answers ----------------------------------------------------------------------------

    def join(self, answers: Sequence[Answer]) -> Joined | None:
        """Match answers to pending queries; counts every outcome; the joined ones come back
        as a batch (event ids, keys, the event's time and features, the answered label)."""
        now = self.clock()
        self._expire(now)
        mt = self.metrics
        items: list[Pending] = []
        ys: list[float] = []
        for a in answers:
            item, outcome = self.pending.answer(a.ident, now)
            mt.answers.labels(outcome).inc()
            if item is not None:
                items.append(item)
                ys.append(a.y)
                mt.label_latency.observe(max(0.0, now - item.asked_at))
        mt.pending_queries.set(len(self.pending))
        if not items:
            return None
        self.joined += len(items)
        batch = EventBatch(
            [i.event_id for i in items],
            [i.key for i in items],
            np.array([i.event_ts for i in items], dtype=np.float64),
            np.array([i.x for i in items], dtype=np.float32),
            np.array(ys, dtype=np.float32),
        )
        explored = np.array([i.explored for i in items], dtype=bool)
        return Joined(batch, np.array([i.p for i in items], dtype=np.float64), explored)

    def recover(self, sent: Iterable[tuple[Query, float]]) -> int:
        """Open again the unexpired queries this service sent (each with the time it was
        sent) that its state does not hold: ones asked after the checkpoint it resumed
        from, by a run that then stopped. Their answers are then learned like any other."""
        now = self.clock()
        n = 0
        for q, sent_at in sent:  # the event's own time is not on the query
            if q.expires_at > now:
                n += self.pending.adopt(Pending.of(q, sent_at, sent_at))
        self.metrics.pending_queries.set(len(self.pending))
        return n

    # -- persistence ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, object]:
        return {
            "pending": self.pending.state_dict(),
            "policy": self.policy.state_dict(),
            "lambda": self.watch.state_dict() if self.watch is not None else {},
            "pacer": self.pacer.state_dict() if self.pacer is not None else {},
            "counts": {"asked": self.asked, "joined": self.joined},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending.load_state_dict(state["pending"])
        self.policy.load_state_dict(state["policy"])
        if self.watch is not None and state.get("lambda"):
            self.watch.load_state_dict(state["lambda"])
        if self.pacer is not None and state.get("pacer"):
            self.pacer.load_state_dict(state["pacer"])
        counts = state.get("counts", {})
        self.asked = int(counts.get("asked", 0))
        self.joined = int(counts.get("joined", 0))
        self.metrics.pending_queries.set(len(self.pending))

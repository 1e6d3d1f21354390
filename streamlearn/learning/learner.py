"""Per-key fast weights, prequential predict-then-learn, resets to the meta-init.

What is batched, exactly: a poll's events are grouped by key and cut into *rounds*; round r
holds the r-th event of every key that has more than r events in the poll. A round is one
lane-batched step: every lane predicts with its key's current weights, then the labelled
lanes take one AdaGrad step on ``L(f(x; w), y) + (lambda/2)||w - theta0||^2``. So within a
key, events are handled one at a time in arrival order, exactly as if they had arrived alone
(each prediction sees every earlier label of its key); across keys nothing is shared within
a poll. The per-poll quantities are the feature standardiser, updated with the poll's events
before the first round, and, with ``learner.shared`` on, the shared model's step at the
first round end after every ``learner.shared.step_labels`` labels
(:mod:`streamlearn.learning.shared`: theta0 and every key move by it).

State lives in numpy tables (one row per key; :mod:`streamlearn.model.lanes` says why numpy);
the public accessors hand out torch tensors, the currency of the model and meta-learning.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from streamlearn.config import MAX_POOL, LearnerConfig
from streamlearn.learning import kernel, learner_state
from streamlearn.learning.key_rows import KeyRows
from streamlearn.learning.learner_state import KeyTables
from streamlearn.learning.learner_state import as_row as _as_row
from streamlearn.learning.linear import LinearExpert
from streamlearn.learning.mixture import ExpertMixture
from streamlearn.learning.recall import ConceptMemory
from streamlearn.learning.shared import SharedWeights
from streamlearn.learning.spline import SplineExpert
from streamlearn.learning.step_result import StepResult, event_outputs
from streamlearn.model import lanes
from streamlearn.model.scaling import RunningStandardizer
from streamlearn.model.spec import ModelSpec
from streamlearn.optim import AdagradState, adagrad_step, proximal_grad
from streamlearn.optim.guard import UpdateGuard
from streamlearn.optim.stepsize import StepSizer
from streamlearn.state.keys import rounds
from streamlearn.state.residency import Residency
from streamlearn.wire.messages import EventBatch


class OnlineLearner(KeyRows):
    """Per-key online learner starting from ``theta0``.

    >>> from streamlearn.wire.messages import EventBatch
    >>> spec = ModelSpec(n_features=1)
    >>> from streamlearn.config import SharedConfig
    >>> cfg = LearnerConfig(learning_rate=0.5, shared=SharedConfig(enabled=False))
    >>> learner = OnlineLearner(spec, cfg, spec.init(kind="zeros"))
    >>> batch = EventBatch(["1", "2"], ["a", "a"], np.zeros(2), np.array([[1.0], [1.0]]),
    ...                    np.array([1.0, 1.0]))
    >>> [round(v, 3) for v in learner.process(batch).p.tolist()]  # second sees the first
    [0.5, 0.577]
    """

    def __init__(
        self,
        spec: ModelSpec,
        cfg: LearnerConfig,
        theta0: torch.Tensor,
        *,
        standardize: bool = True,
        version: int = 0,
        compiled: bool = True,
    ) -> None:
        if tuple(theta0.shape) != (spec.n_params,):
            raise ValueError(
                f"theta0 has shape {tuple(theta0.shape)}, the model needs ({spec.n_params},)"
            )
        self.spec = spec
        self.cfg = cfg
        self.scaler = RunningStandardizer(spec.n_features) if standardize else None
        tables = KeyTables.fresh(_as_row(theta0), version, cfg.initial_accumulator)
        self._install(tables)
        self._rates: np.ndarray | None = None
        # learner.personal_hidden: the per-parameter factor on a key's own rate (1 on the
        # output layer); None when it is 1 everywhere.
        self._personal = (
            np.where(spec.head_mask(), np.float32(1.0), np.float32(cfg.personal_hidden))
            if cfg.personal_hidden < 1.0 and spec.hidden
            else None
        )
        # The starts a key can be reset to: row 0 is theta0, rows 1..K a meta-init pool
        # (streamlearn.meta.pool). A key's proximal term pulls towards the start it was
        # last reset to.
        self._pool = np.zeros((0, spec.n_params), dtype=np.float32)
        self._start_of = tables.start_of
        self.sizer = StepSizer(spec, cfg)
        # The compiled round loop where it computes this configuration (compiled=False: the
        # numpy rounds, its reference, always).
        self._kernel = (
            kernel.Model.of(spec)
            if compiled and kernel.supports(cfg, self.sizer.per_round)
            else None
        )
        # The proximal strength in force: learner.proximal_lambda, unless tuned online
        # (active.lambda_tuning moves it through set_proximal_lambda).
        self.proximal_lambda = cfg.proximal_lambda
        self.shared = (
            SharedWeights(
                self._theta0,
                rate=cfg.shared.learning_rate,
                initial_accumulator=cfg.initial_accumulator,
                forgetting=cfg.shared.forgetting,
                step_labels=cfg.shared.step_labels,
                eps=cfg.adagrad_eps,
            )
            if cfg.shared.enabled
            else None
        )
        # The shared model's earlier concepts, recalled when the labels say so. Not for
        # regression: no coin's loss to tell failing weights by (ungated, recall raised the
        # squared error).
        self.memory = (
            ConceptMemory(spec, cfg.shared.recall)
            if cfg.shared.enabled and cfg.shared.recall.enabled and spec.coin_loss is not None
            else None
        )
        # The prediction served: the key's weights, the shared weights alone and a linear
        # model, mixed online (streamlearn.learning.mixture).
        mix = cfg.mixture
        mixed = mix.enabled and spec.task != "regression"
        self._mix_shared = mixed and cfg.shared.enabled
        self.linear = (
            LinearExpert(
                spec.n_features,
                spec.n_outputs,
                learning_rate=mix.linear.learning_rate,
                forgetting=mix.linear.forgetting,
                initial_accumulator=cfg.initial_accumulator,
                average=mix.linear.average,
                eps=cfg.adagrad_eps,
            )
            if mixed and mix.linear.enabled
            else None
        )
        spline = mix.spline
        self.spline = (
            SplineExpert(
                spec.n_features,
                spec.n_outputs,
                knots=spline.knots,
                hidden=spline.hidden,
                learning_rate=spline.learning_rate,
                forgetting=spline.forgetting,
                initial_accumulator=cfg.initial_accumulator,
                warmup=spline.warmup,
                seed=spline.seed,
                eps=cfg.adagrad_eps,
            )
            if mixed and spline.enabled
            else None
        )
        experts = self.experts
        self.mixture = (
            ExpertMixture(
                mix.share,
                names=experts,
                n_outputs=spec.n_outputs,
                calibration_rate=mix.calibration_rate,
            )
            if len(experts) > 1
            else None
        )
        # Each key's last AdaGrad direction, for the rate hypergradient (zeros: none yet).
        self._direction = np.zeros_like(self._params) if self.sizer.hyper else None
        # Bounded keys (learner.max_keys): the daemon attaches one; None keeps every key.
        self.residency: Residency | None = None
        # The rows of evicted keys, kept once track_freed_rows() asks (row-indexed state).
        self.freed_rows: list[np.ndarray] | None = None

    # -- state, read through properties ----------------------------------------------------

    @property
    def theta0(self) -> torch.Tensor:
        return torch.from_numpy(self._theta0.copy())

    @property
    def experts(self) -> list[str]:
        """The mixture's experts, in the order of its weights (``key`` alone: no mixture)."""
        return (
            ["key"]
            + ["shared"] * self._mix_shared
            + ["linear", "linear_average"][: 0 if self.linear is None else self.linear.n_experts]
            + ["spline"] * (self.spline is not None)
        )

    @property
    def compiled(self) -> bool:
        """Whether the poll's rounds run in the compiled loop (:mod:`.kernel`)."""
        return self._kernel is not None

    @property
    def model_version(self) -> int:
        return self._version

    @property
    def rates(self) -> torch.Tensor | None:
        """The per-parameter rates of the online steps when meta-learned ones are in force
        (None: ``learning_rate`` for every parameter)."""
        return None if self._rates is None else torch.from_numpy(self._rates.copy())

    @property
    def n_keys(self) -> int:
        return len(self.keys)

    @property
    def starts(self) -> np.ndarray:
        """``[1 + K, P]``: theta0, then the pool's members."""
        return np.concatenate([self._theta0[None], self._pool])

    def params_of(self, key: str) -> torch.Tensor:
        """Current fast weights of ``key`` (theta0 for a key never seen)."""
        slot = self.keys.get(key)
        row = self._theta0 if slot is None else self._params[slot]
        return torch.from_numpy(row.copy())

    def accum_of(self, key: str) -> torch.Tensor:
        slot = self.keys.get(key)
        if slot is None:
            return torch.full((self.spec.n_params,), self.cfg.initial_accumulator)
        return torch.from_numpy(self._accum[slot].copy())

    def slots_of(self, keys: Sequence[str]) -> np.ndarray:
        """Table row of each key, -1 for keys never seen."""
        get = self.keys.get
        return np.fromiter(
            (-1 if (s := get(k)) is None else s for k in keys), dtype=np.int64, count=len(keys)
        )

    def rows(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fast weights and proximal anchors (the start each key was last reset to) of these
        rows; -1 (a key never seen) reads theta0 for both. Copies."""
        known = slots >= 0
        w = np.tile(self._theta0, (len(slots), 1))
        anchor = w.copy()
        w[known] = self._params[slots[known]]
        anchor[known] = self.starts[self._start_of[slots[known]]]
        return w, anchor

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Fast weights and anchors of every key row (views of the live tables' rows)."""
        n = self.keys.high_water
        return self._params[:n], self.starts[self._start_of[:n]]

    def set_proximal_lambda(self, lam: float) -> None:
        if not lam > 0:
            raise ValueError(f"learner.proximal_lambda must be > 0 when tuned, got {lam}")
        self.proximal_lambda = lam
        if self.sizer.watch is not None:
            self.sizer.watch.lam = lam

    def predict(self, keys: Sequence[str], x: np.ndarray) -> np.ndarray:
        """Predictions with the keys' current weights; changes nothing (not even the scaler)."""
        raw = x
        if self.scaler is not None:
            x = self.scaler.transform(x)
        rows = [self.keys.get(k) for k in keys]
        w = np.stack([self._theta0 if r is None else self._params[r] for r in rows])
        x32 = np.asarray(x, dtype=np.float32)
        out = lanes.predict(self.spec, w, x32).astype(np.float64)
        if self.mixture is not None:
            experts = [out]
            if self._mix_shared:
                shared = np.broadcast_to(self._theta0, w.shape)
                experts.append(lanes.predict(self.spec, shared, x32))
            if self.linear is not None:
                experts.extend(self.linear.predict(x32))
            if self.spline is not None:
                experts.append(self.spline.predict(np.asarray(raw, np.float64), x32))
            out = self.mixture.predict(experts)
        return out if self.spec.task == "multiclass" else out[:, 0]

    # -- updates ---------------------------------------------------------------------------

    def set_theta0(
        self, theta0: torch.Tensor, version: int, rates: torch.Tensor | None = None
    ) -> None:
        """Install a new meta-init; it applies to new keys and to later resets. ``rates``,
        when given, replace ``learning_rate`` with per-parameter AdaGrad rates."""
        if tuple(theta0.shape) != self._theta0.shape:
            raise ValueError(f"theta0 shape {tuple(theta0.shape)} != {self._theta0.shape}")
        if rates is not None and tuple(rates.shape) != self._theta0.shape:
            raise ValueError(f"rates shape {tuple(rates.shape)} != {self._theta0.shape}")
        self._theta0 = _as_row(theta0)
        self._rates = None if rates is None else _as_row(rates)
        self._version = version
        if self.shared is not None:
            self.shared.restart(self._theta0)
        if self.memory is not None:  # the old concepts' weights mean nothing now
            self.memory = ConceptMemory(self.spec, self.cfg.shared.recall)

    def set_pool(self, pool: torch.Tensor | None) -> None:
        """Install a meta-init pool (``[K, P]``) as starts ``1..K``; None removes it. Keys keep
        their weights; their proximal terms pull towards theta0 until their next reset."""
        p = self.spec.n_params
        if pool is None:
            pool = torch.zeros(0, p)
        if pool.ndim != 2 or pool.shape[1] != p or len(pool) > MAX_POOL:
            raise ValueError(
                f"meta-init pool shape {tuple(pool.shape)}: needs (K <= {MAX_POOL}, {p})"
            )
        self._pool = np.ascontiguousarray(pool.detach().cpu().numpy(), dtype=np.float32)
        self._start_of[:] = 0
        if self.residency is not None:  # keys spilled under the old pool return to theta0
            self.residency.pool_generation += 1

    def reset(self, keys: Iterable[str], start: int = 0) -> int:
        """Fast weights of ``keys`` back to start ``start`` (0: theta0); returns how many.

        From theta0, a starting point made for fast adaptation, the AdaGrad state restarts
        too. A pool member is a fitted concept: the keys keep their AdaGrad state, so they
        refine it with the small steps they had reached instead of relearning it.
        """
        slots = [s for k in keys if (s := self.keys.get(k)) is not None]
        if slots:
            self._reset_slots(np.asarray(slots, dtype=np.int64), start)
        return len(slots)

    def reset_all(self, start: int = 0) -> int:
        """Every key to ``start``; with a shared model, it goes back to its start first."""
        if self.shared is not None:
            self._theta0 = self.shared.start.copy()
            self.shared.restart()
        self._reset_slots(self.keys.live_slots(), start)
        if self.residency is not None:  # spilled keys take this reset on their return
            self.residency.epoch += 1
            self.residency.epoch_start = start
        return len(self.keys)

    def _reset_slots(self, slots: np.ndarray, start: int) -> None:
        if not 0 <= start <= len(self._pool):
            raise ValueError(
                f"start {start} is not theta0 (0) or a pool member (1..{len(self._pool)})"
            )
        self._params[slots] = self.starts[start]
        self._start_of[slots] = start
        if self._direction is not None:
            self._direction[slots] = 0.0
        if start == 0:
            self._accum[slots] = self.cfg.initial_accumulator

    def _ensure_capacity(self, n: int) -> None:
        cap = self._params.shape[0]
        if n <= cap:
            return
        extra = max(n, 2 * cap) - cap
        p = self.spec.n_params
        self._params = np.concatenate([self._params, np.tile(self._theta0, (extra, 1))])
        init = np.full((extra, p), self.cfg.initial_accumulator, dtype=np.float32)
        self._accum = np.concatenate([self._accum, init])
        self._start_of = np.concatenate([self._start_of, np.zeros(extra, dtype=np.int64)])
        if self._direction is not None:
            self._direction = np.concatenate([self._direction, np.zeros((extra, p), np.float32)])

    def process(
        self, batch: EventBatch, *, update_scaler: bool = True, cut_rounds: bool = False
    ) -> StepResult:
        """Predict every event, then learn from the labelled ones (prequential), per round.

        ``update_scaler=False`` for events the standardiser has already seen (delayed label
        answers to queried events); ``cut_rounds`` lets the shared model step inside rounds,
        exactly every ``step_labels`` labels (for label answers)."""
        n = len(batch.ids)
        spec, cfg = self.spec, self.cfg
        if n == 0:
            empty = np.zeros(0)
            p0 = np.zeros((0, spec.n_outputs)) if spec.task == "multiclass" else empty
            return StepResult(p0, empty, empty, 0, 0.0, batch.x)
        slots = self._admit(batch.keys)
        raw = x = np.asarray(batch.x, dtype=np.float32)
        if self.scaler is not None:
            if update_scaler:
                self.scaler.update(x)
            x = self.scaler.transform(x)
        order, sizes = rounds(slots)
        xs, ss = x[order], slots[order]
        y_sorted = np.asarray(batch.y, dtype=np.float32)[order]
        labelled = ~np.isnan(y_sorted)
        ys = np.where(labelled, y_sorted, np.float32(0.0))
        n_labelled = np.concatenate([[0], np.cumsum(labelled)])
        p_out = np.empty((n, spec.n_outputs), dtype=np.float32)
        loss_out = np.empty(n, dtype=np.float32)
        params, theta0 = self._params, self._theta0
        base = cfg.learning_rate if self._rates is None else self._rates
        lr = self.sizer.poll_rate(base if self._personal is None else base * self._personal)
        sizer, shared = self.sizer, self.shared
        # Round ends; the shared model steps at the first one after step_labels labels.
        # Cutting rounds to step exactly every step_labels labels made many more lanes
        # calls with every event labelled (about half the throughput), so only batches of
        # label answers are cut: one round of distinct keys each, small, and with active
        # learning every label comes that way (one step per batch cost accuracy).
        memory = self.memory
        if memory is not None and n_labelled[-1]:
            lab_rows = np.flatnonzero(labelled)
            rows = lab_rows[memory.pick(len(lab_rows))]
            memory.score_labels(params[ss[rows]], theta0, xs[rows], ys[rows], len(lab_rows))
        if shared is not None and cut_rounds:
            pieces = shared.pieces(sizes, n_labelled)
        else:
            pieces = np.cumsum(sizes).tolist()
        mixture = self.mixture
        p_shared = np.empty_like(p_out) if self._mix_shared else None
        if self._kernel is not None:
            step_sq, rollbacks = self._rounds_compiled(
                kernel.Rounds(xs, ys, labelled, ss, np.asarray(pieces, np.int64), p_out, loss_out),
                lr,
                p_shared,
            )
        else:
            step_sq, rollbacks = self._rounds_numpy(
                xs, ys, labelled, ss, pieces, lr, n_labelled, p_out, loss_out, p_shared
            )
        if mixture is not None:
            experts = [p_out]
            if p_shared is not None:
                experts.append(p_shared)
            if self.linear is not None:
                experts.extend(self.linear.process(xs, ys, labelled))
            if self.spline is not None:
                experts.append(self.spline.process(raw[order], xs, ys, labelled))
            p_out, loss_out = mixture.mix(experts, ys, labelled)
        if shared is not None and shared.ready:
            self._shared_step(self._theta0)
        recalled = False
        if memory is not None:  # after the poll: no prediction by weights its label chose
            if (shift := memory.take_recall(self._theta0)) is not None:
                self.shift_shared(shift)
                recalled = True
            memory.maybe_snapshot()
        inv = np.empty(n, dtype=np.int64)
        inv[order] = np.arange(n)
        loss_np = np.where(labelled, loss_out, np.nan)[inv].astype(np.float64)
        watch = sizer.watch
        if watch is not None:
            keep = ~np.isnan(loss_np)
            y32 = np.asarray(batch.y, dtype=np.float32)[keep]
            watch.add_labels(slots[keep], x[keep], y32, loss_np[keep])
            if watch.due():
                watch.refresh(self._params, self._accum, self._theta0, sizer.eta)
        p_np, correct = event_outputs(spec, p_out, inv, np.asarray(batch.y, dtype=np.float64))
        n_steps = int(n_labelled[-1]) - rollbacks
        mean_step = (step_sq / n_steps) ** 0.5 if n_steps > 0 else 0.0
        return StepResult(
            p_np,
            loss_np,
            correct,
            rollbacks,
            mean_step,
            x,
            sizer.eta,
            sizer.hypergradient,
            sizer.take_mean_weight(),
            recalled,
        )

    def _rounds_compiled(
        self, rounds: kernel.Rounds, lr: float | np.ndarray, p_shared: np.ndarray | None
    ) -> tuple[float, int]:
        """The poll's rounds through the compiled loop (:mod:`streamlearn.learning.kernel`);
        returns the sum of squared steps and the rolled-back steps."""
        assert self._kernel is not None
        p = self.spec.n_params
        rate = np.ascontiguousarray(np.broadcast_to(np.asarray(lr, np.float32), (p,)))
        shared = self.shared
        step_labels = 0 if shared is None else shared.step_labels
        grad_sum = np.zeros(p) if shared is None else shared.grad_sum
        piece, step_sq, rollbacks = 0, 0.0, 0
        while piece < len(rounds.ends):
            if shared is not None and shared.ready:
                self._shared_step(self._theta0)
            pooled = len(self._pool) > 0
            count = 0 if shared is None else shared.count
            piece, new_count, sq, rolled, _ = kernel.run(
                self._kernel,
                rounds,
                piece,
                self._params,
                self._accum,
                self.starts if pooled else self._theta0[None],
                self._start_of if pooled else None,
                rate,
                self.proximal_lambda,
                self.cfg.adagrad_eps,
                self.cfg.max_step_norm,
                grad_sum,
                count,
                step_labels,
                p_shared,
            )
            if shared is not None:
                shared.counted(new_count - count)
            step_sq += sq
            rollbacks += rolled
        return step_sq, rollbacks

    def _rounds_numpy(
        self,
        xs: np.ndarray,
        ys: np.ndarray,
        labelled: np.ndarray,
        ss: np.ndarray,
        pieces: list[int],
        lr: float | np.ndarray,
        n_labelled: np.ndarray,
        p_out: np.ndarray,
        loss_out: np.ndarray,
        p_shared: np.ndarray | None,
    ) -> tuple[float, int]:
        """The poll's rounds as numpy arrays, a round at a time: the reference of the compiled
        loop, and the path of the per-round options (rate hypergradient, curriculum, the
        guard's loss re-check). Returns the sum of squared steps and the rolled-back steps."""
        spec, cfg = self.spec, self.cfg
        params, accum, theta0 = self._params, self._accum, self._theta0
        lam, eps = self.proximal_lambda, cfg.adagrad_eps
        guard = UpdateGuard(spec, cfg)
        sizer, direction, shared = self.sizer, self._direction, self.shared
        per_round = sizer.per_round
        mask = labelled.astype(np.float32)[:, None]
        step_sq = 0.0
        rollbacks = 0
        lo = 0
        with np.errstate(all="ignore"):  # overflow is caught by the guard below, per lane
            for hi in pieces:
                if shared is not None and shared.ready:
                    theta0 = self._shared_step(theta0)
                starts = self.starts if len(self._pool) else None
                if p_shared is not None:
                    shared_w = np.broadcast_to(theta0, (hi - lo, theta0.shape[0]))
                    p_shared[lo:hi] = lanes.predict(spec, shared_w, xs[lo:hi])
                sl = ss[lo:hi]
                w = params[sl]
                if n_labelled[hi] == n_labelled[lo]:
                    p_out[lo:hi] = lanes.predict(spec, w, xs[lo:hi])
                    loss_out[lo:hi] = 0.0
                    lo = hi
                    continue
                g, p, loss = lanes.grad(spec, w, xs[lo:hi], ys[lo:hi])
                if shared is not None:
                    shared.accumulate(g[labelled[lo:hi]])
                p_out[lo:hi] = p
                loss_out[lo:hi] = loss
                anchor = theta0 if starts is None else starts[self._start_of[sl]]
                g = proximal_grad(g, w, anchor, lam) * mask[lo:hi]
                lab = labelled[lo:hi]
                lr_r = lr
                if per_round:
                    u_prev = direction[sl] if direction is not None else g
                    lr_r = sizer.rates(lr, g, u_prev, p, ys[lo:hi], lab)
                a_old = accum[sl]
                w_new, state, step = adagrad_step(w, AdagradState(a_old), g, lr_r, eps)
                w_new, new_accum, sq, ok = guard.check(
                    w, a_old, w_new, state.accum, step, loss, xs[lo:hi], ys[lo:hi], lab
                )
                rollbacks += int((~ok).sum())
                params[sl] = w_new
                accum[sl] = new_accum
                if direction is not None:
                    upd = lab & ok
                    direction[sl[upd]] = (g / (new_accum**0.5 + eps))[upd]
                step_sq += float(sq.sum())
                lo = hi
        return step_sq, rollbacks

    def _shared_step(self, theta0: np.ndarray) -> np.ndarray:
        """The shared model's step: theta0 and every key move by it."""
        assert self.shared is not None
        if (delta := self.shared.step(theta0)) is not None:
            self.shift_shared(delta)
        return self._theta0

    def shift_shared(self, delta: np.ndarray) -> None:
        """Move theta0 by ``delta`` and every key with it: each keeps its own offset."""
        self._theta0 = self._theta0 + delta
        self._params[: self.keys.high_water] += delta

    # -- persistence -----------------------------------------------------------------------

    def _install(self, tables: KeyTables) -> None:
        """The key tables in force (the start of each key is installed after the pool)."""
        self._theta0, self._version, self.keys = tables.theta0, tables.version, tables.keys
        self._params, self._accum = tables.params, tables.accum

    def state_dict(self) -> dict[str, object]:
        tables = KeyTables(
            self._theta0, self._version, self.keys, self._params, self._accum, self._start_of
        )
        res = self.residency
        live = self.keys.live_slots()
        return {
            **learner_state.pack(tables),
            "theta0": self.theta0,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "pool": torch.from_numpy(self._pool.copy()),
            "residency": {}
            if res is None
            else {**res.state_dict(), "last_used": torch.from_numpy(res.last_used(live))},
            "eta": self.sizer.eta,
            # the meta-learned per-parameter rates of the online steps, when in force
            "rates": None if self._rates is None else torch.from_numpy(self._rates.copy()),
            "proximal_lambda": self.proximal_lambda,
            "shared": {} if self.shared is None else self.shared.state_dict(),
            "recall": {} if self.memory is None else self.memory.state_dict(),
            "curvature": {} if self.sizer.watch is None else self.sizer.watch.state_dict(),
            "mixture": {} if self.mixture is None else self.mixture.state_dict(),
            "linear": {} if self.linear is None else self.linear.state_dict(),
            "spline": {} if self.spline is None else self.spline.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; the model layout must match."""
        pool = state.get("pool")  # absent in checkpoints from before pools
        pooled = pool is not None and len(pool) > 0
        tables, slots = learner_state.unpack(
            state, self.spec.n_params, self.cfg.initial_accumulator, pooled
        )
        self._install(tables)
        self.set_pool(pool)
        res = self.residency
        if res is not None and state.get("residency"):  # after set_pool counted its pool
            res.load_state_dict(state["residency"])
            if "last_used" in state["residency"]:
                res.touch(slots, np.asarray(state["residency"]["last_used"], dtype=np.int64))
        self._start_of = tables.start_of
        if self._direction is not None:  # directions restart: one hypergradient step lost
            self._direction = np.zeros_like(self._params)
            if self.sizer.hyper is not None and "eta" in state:
                self.sizer.hyper.set_eta(float(state["eta"]))
        rates = state.get("rates")  # absent before 0.3 (the rates were lost on a restart)
        self._rates = None if rates is None else _as_row(rates)
        self.proximal_lambda = float(state.get("proximal_lambda", self.cfg.proximal_lambda))
        watch = self.sizer.watch
        if watch is not None:
            watch.lam = self.proximal_lambda
            if state.get("curvature"):
                watch.load_state_dict(state["curvature"])
        if self.shared is not None and state.get("shared"):
            self.shared.load_state_dict(state["shared"])
        if self.memory is not None and state.get("recall"):  # absent before recall
            self.memory.load_state_dict(state["recall"])
        if self.mixture is not None and state.get("mixture"):  # absent before the mixture
            self.mixture.load_state_dict(state["mixture"])
        if self.linear is not None and state.get("linear"):
            self.linear.load_state_dict(state["linear"])
        if self.spline is not None and state.get("spline"):  # absent before the spline
            self.spline.load_state_dict(state["spline"])
        scaler = state.get("scaler")
        if self.scaler is not None and scaler is not None:
            self.scaler.load_state_dict(scaler)

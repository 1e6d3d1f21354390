"""Wiring and the processing loop (design §4), one poll at a time."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from streamlearn.checkpoint import CheckpointError, CheckpointStore
from streamlearn.config import Config
from streamlearn.drift import DriftMonitor, RecoveryTracker
from streamlearn.io.base import Sink, Source
from streamlearn.io.memory import MemorySink
from streamlearn.learner import OnlineLearner
from streamlearn.messages import EventBatch, EventDecoder, Prediction
from streamlearn.meta.hotswap import meta_tick
from streamlearn.meta.initfile import MetaInit
from streamlearn.meta.maml import InnerRule, MetaParams
from streamlearn.meta.tasks import TaskBuffer
from streamlearn.meta.trainer import BackgroundMetaTrainer
from streamlearn.metrics import Metrics, RollingMean
from streamlearn.regret import GlobalBaseline
from streamlearn.resets import Resetter
from streamlearn.wiring import build_io, build_spec

log = logging.getLogger("streamlearn")


class Daemon:
    """Decode -> predict -> learn -> drift -> metrics, one poll per :meth:`step`.

    >>> from streamlearn.config import load_config
    >>> cfg = load_config(overrides={"source": {"synthetic": {"n_keys": 5}}}, env={})
    >>> d = Daemon(cfg, CollectorRegistry())
    >>> d.run(max_events=1000), d.events_seen
    (0, 1000)
    """

    def __init__(
        self,
        cfg: Config,
        registry: CollectorRegistry,
        *,
        source: Source | None = None,
        sink: Sink | None = None,
        theta0: torch.Tensor | None = None,
    ) -> None:
        self.cfg = cfg
        self.spec = build_spec(cfg)
        m = cfg.model
        if theta0 is None:
            theta0 = self.spec.init(seed=m.seed, kind=m.init, scale=m.init_scale)
        if source is None:
            source, built_sink = build_io(cfg)
            sink = sink if sink is not None else built_sink
        self.source: Source = source
        self.sink: Sink = sink if sink is not None else MemorySink()
        self.decoder = EventDecoder(
            m.n_features,
            m.task,
            m.n_classes,
            m.feature_names,
        )
        self.learner = OnlineLearner(self.spec, cfg.learner, theta0, standardize=m.standardize)
        self.resetter = Resetter(self.learner, cfg.drift)
        self.baseline = (
            GlobalBaseline(self.spec, cfg.learner, theta0, cfg.metrics.baseline_batch)
            if cfg.metrics.baseline == "global_model"
            else None
        )
        self.drift = DriftMonitor(cfg.drift)
        d = cfg.drift
        self.recovery = RecoveryTracker(
            d.recovery_window,
            d.recovery_tolerance,
            d.recovery_max_labels,
            relative=m.task == "regression",
        )
        self.metrics = Metrics(registry, m.task)
        self.metrics.step_size.set(cfg.learner.learning_rate)
        self.metrics.model_version.set(self.learner.model_version)
        window = cfg.metrics.rolling_window
        self._rolling_loss = RollingMean(window)
        self._rolling_base = RollingMean(window)
        self._rolling_quality = RollingMean(window)
        self._cum_loss = 0.0
        self._cum_base = 0.0
        self._stop = threading.Event()
        self.events_seen = 0
        self.labels_seen = 0
        self._running = False
        ck = cfg.checkpoint
        self.store = CheckpointStore(ck.dir, ck.keep) if ck.dir else None
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._checkpoint_error: str | None = None
        self.resumed_from: int | None = None
        self.tasks: TaskBuffer | None = None
        self.meta_trainer: BackgroundMetaTrainer | None = None
        self._meta = MetaParams(
            self.learner.theta0,
            torch.full((self.spec.n_params,), math.log(cfg.learner.learning_rate)),
        )
        if cfg.meta.enabled:
            mc = cfg.meta
            self.tasks = TaskBuffer(mc.buffer_per_task, mc.buffer_tasks, seed=m.seed)
            rule = InnerRule(
                steps=mc.inner_steps,
                lam=cfg.learner.proximal_lambda,
                eps=cfg.learner.adagrad_eps,
                initial_accumulator=cfg.learner.initial_accumulator,
            )
            self.meta_trainer = BackgroundMetaTrainer(mc, self.spec, rule, seed=m.seed)
        if self.store is not None:
            self._restore(self.store)

    # -- state, read through properties ----------------------------------------------------

    @property
    def regret(self) -> float:
        return self._cum_loss - self._cum_base

    @property
    def rolling_quality(self) -> float:
        return self._rolling_quality.value

    def ready(self) -> tuple[bool, str]:
        if not self._running:
            return False, "not consuming"
        if not self.source.healthy:
            return False, "broker not reachable"
        if self._checkpoint_error is not None:
            return False, self._checkpoint_error
        return True, "ready"

    # -- checkpoints ---------------------------------------------------------------------------

    def _state(self) -> dict[str, object]:
        return {
            "learner": self.learner.state_dict(),
            "baseline": self.baseline.state_dict() if self.baseline is not None else {},
            "meta": {
                "log_rate": self._meta.log_rate.clone(),
                "tasks": self.tasks.state_dict() if self.tasks is not None else {},
            },
            "totals": {
                "events": self.events_seen,
                "labels": self.labels_seen,
                "loss": self._cum_loss,
                "baseline_loss": self._cum_base,
            },
        }

    def _restore(self, store: CheckpointStore) -> None:
        ck = store.load_latest()
        if ck is None:
            return
        state = ck.state
        self.learner.load_state_dict(state["learner"])
        if self.baseline is not None and state.get("baseline"):
            self.baseline.load_state_dict(state["baseline"])
        meta = state.get("meta", {})
        if "log_rate" in meta:
            self._meta = MetaParams(self.learner.theta0, meta["log_rate"])
        if self.tasks is not None and meta.get("tasks"):
            self.tasks.load_state_dict(meta["tasks"])
        totals = state["totals"]
        self.events_seen = int(totals["events"])
        self.labels_seen = int(totals["labels"])
        self._cum_loss = float(totals["loss"])
        self._cum_base = float(totals["baseline_loss"])
        self.source.seek(ck.offsets)
        self.resumed_from = ck.sequence
        self.metrics.model_version.set(self.learner.model_version)
        self.metrics.active_keys.set(self.learner.n_keys)
        log.info(
            "resumed from checkpoint %d (%s): %d keys, %d labels learned, offsets %s",
            ck.sequence,
            ck.path.name,
            self.learner.n_keys,
            self.labels_seen,
            ck.offsets,
        )

    def checkpoint(self) -> bool:
        """Flush outputs, save state with the positions it covers, then commit those
        positions. Offsets are never committed ahead of a saved checkpoint."""
        if self.store is None:
            return self.source.commit(self.source.positions())
        mt = self.metrics
        started = time.perf_counter()
        positions = self.source.positions()
        try:
            self.sink.flush()
            path = self.store.save(self._state(), positions)
        except (CheckpointError, OSError, RuntimeError) as exc:
            # KafkaTimeoutError from a producer flush is a RuntimeError subclass too.
            self._checkpoint_error = f"checkpoint failed: {exc}"
            mt.checkpoints.labels("failed").inc()
            log.error("%s; offsets stay uncommitted, retrying at the next cadence", exc)
            return False
        self._checkpoint_error = None
        mt.checkpoints.labels("saved").inc()
        mt.checkpoint_seconds.observe(time.perf_counter() - started)
        mt.last_checkpoint.set(time.time())
        committed = self.source.commit(positions)
        mt.commits.labels("ok" if committed else "failed").inc()
        log.debug("checkpoint %s covers %s; committed=%s", path.name, positions, committed)
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        return committed

    def _maybe_checkpoint(self) -> None:
        ck = self.cfg.checkpoint
        if self._since_checkpoint == 0:
            return
        if (
            self._since_checkpoint >= ck.every_events
            or time.monotonic() - self._last_checkpoint >= ck.every_seconds
        ):
            self.checkpoint()

    def request_stop(self) -> None:
        self._stop.set()

    def install_meta_init(self, init: MetaInit, *, use_rates: bool = False) -> None:
        """A new starting point for new keys and later resets (the scaler too when the
        daemon has seen nothing yet, so it starts in the space the init was trained in);
        ``use_rates`` also takes the learned per-parameter rates for online steps."""
        self.learner.set_theta0(init.theta0, init.version, init.rates if use_rates else None)
        self.learner.set_pool(init.pool)
        self._meta = MetaParams(init.theta0.float(), init.rates.float().log())
        scaler = self.learner.scaler
        if init.scaler is not None and scaler is not None and scaler.count == 0:
            scaler.load_state_dict(init.scaler)
        self.metrics.model_version.set(init.version)

    # -- the loop ----------------------------------------------------------------------------

    def step(self, max_records: int | None = None) -> int:
        """Poll once and process what came; returns the number of raw records consumed."""
        limit = max_records or self.cfg.source.batch_size
        records = self.source.poll(limit, self.cfg.service.poll_timeout_s)
        if not records:
            self._maybe_checkpoint()  # a quiet stream still gets its tail committed on time
            return 0
        started = time.perf_counter()
        batch, dead = self.decoder.decode(records)
        mt = self.metrics
        if dead:
            self.sink.dead_letters(dead)
            for reason, count in Tally(d.reason.value for d in dead).items():
                mt.dead_letters.labels(reason).inc(count)
        if len(batch):
            self._learn(batch)
        mt.poll_seconds.observe(time.perf_counter() - started)
        self.events_seen += len(records)
        self._since_checkpoint += len(records)
        self._meta_tick()
        self._maybe_checkpoint()
        return len(records)

    def _meta_tick(self) -> None:
        if self.meta_trainer is not None and self.tasks is not None:
            self._meta = meta_tick(
                self.meta_trainer,
                self.tasks,
                self.learner,
                self.metrics,
                self._meta,
                self.labels_seen,
                use_learned_rates=self.cfg.meta.use_learned_rates,
            )

    def _learn(self, batch: EventBatch) -> None:
        mt, cfg = self.metrics, self.cfg
        res = self.learner.process(batch)
        n = len(batch)
        mt.events.inc(n)
        version = self.learner.model_version
        self.sink.predictions(
            [
                Prediction(eid, key, p, version, t, origin.partition)
                for eid, key, p, t, origin in zip(
                    batch.ids,
                    batch.keys,
                    res.p.tolist(),
                    batch.ts.tolist(),
                    batch.origins,
                    strict=True,
                )
            ]
        )
        mt.predictions.inc(n)
        labelled = batch.labelled
        m = int(labelled.sum())
        if m == 0:
            return
        self.labels_seen += m
        mt.labels.inc(m)
        loss = res.loss[labelled]
        self._cum_loss += float(loss.sum())
        mt.loss.inc(float(loss.sum()))
        self._rolling_loss.extend(loss.tolist())
        mt.rolling_loss.set(self._rolling_loss.value)
        if self.baseline is not None:
            base = self.baseline.process(res.x_std, batch.y)[labelled]
            self._cum_base += float(base.sum())
            mt.baseline_loss.inc(float(base.sum()))
            self._rolling_base.extend(base.tolist())
            mt.rolling_baseline_loss.set(self._rolling_base.value)
            mt.regret.set(self.regret)
        if self.spec.task == "regression":
            quality = (-loss).tolist()
            abs_err = np.abs(res.p[labelled] - batch.y[labelled])
            self._rolling_quality.extend(abs_err.tolist())
        else:
            quality = res.correct[labelled].tolist()
            self._rolling_quality.extend(quality)
        mt.rolling_quality.set(self._rolling_quality.value)
        if res.rollbacks:
            mt.rollbacks.inc(res.rollbacks)
        mt.update_norm.set(res.mean_step)
        mt.step_size.set(res.eta)
        mt.hypergradient.set(res.hypergradient)
        mt.curriculum_weight.set(res.curriculum)
        if self.learner.sizer.watch is not None:
            mt.observe_curvature(self.learner.sizer.watch)
        keys_l = [k for k, is_l in zip(batch.keys, labelled.tolist(), strict=True) if is_l]
        if self.tasks is not None:
            self.tasks.add(keys_l, res.x_std[labelled], batch.y[labelled])
        self.resetter.observe(keys_l, res.x_std[labelled], batch.y[labelled])
        for length in self.recovery.observe(quality):
            mt.recovery.observe(length)
        report = self.drift.update(keys_l, res.error[labelled].tolist())
        if report.drifted_keys:
            if self.tasks is not None:
                self.tasks.close_segments(report.drifted_keys)
            mt.drifts.labels("key").inc(len(report.drifted_keys))
            mt.resets.labels("key_drift").inc(
                self._count_starts(self.resetter.reset(report.drifted_keys))
            )
        if report.global_drift:
            if self.tasks is not None:
                self.tasks.close_all()
            mt.global_drift_now()
            unrecovered_before = self.recovery.unrecovered
            self.recovery.drift()
            mt.unrecovered.inc(self.recovery.unrecovered - unrecovered_before)
            if cfg.drift.on_global_drift == "reset_all":
                mt.resets.labels("global_drift").inc(self._count_starts(self.resetter.reset_all()))
        mt.active_keys.set(self.learner.n_keys)

    def _count_starts(self, by_start: dict[int, int]) -> int:
        for start, n in by_start.items():
            self.metrics.reset_starts.labels(str(start)).inc(n)
        return sum(by_start.values())

    def run(self, max_events: int = 0, status: Callable[[str], None] | None = None) -> int:
        """Process until stopped, the source ends, or ``max_events`` records; returns 0."""
        self._running = True
        self.metrics.up.set(1)
        interval = self.cfg.service.status_interval_s
        last_status, last_events = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                limit = self.cfg.source.batch_size
                if max_events:
                    limit = min(limit, max_events - self.events_seen)
                    if limit <= 0:
                        break
                got = self.step(limit)
                if got == 0 and self.source.exhausted:
                    break
                now = time.monotonic()
                if status is not None and now - last_status >= interval:
                    rate = (self.events_seen - last_events) / (now - last_status)
                    status(self.status_line(rate))
                    last_status, last_events = now, self.events_seen
        finally:
            self._running = False
            self.metrics.up.set(0)
            if self._since_checkpoint or self.store is None:
                self.checkpoint()
            if self.meta_trainer is not None:
                self.meta_trainer.close()
            self.source.close()
            self.sink.close()
        if status is not None:
            status(self.status_line(None))
        return 0

    def status_line(self, rate: float | None) -> str:
        q = "acc" if self.spec.task != "regression" else "mae"
        rate_s = f" ({rate:,.0f}/s)" if rate is not None else ""
        return (
            f"events={self.events_seen:,}{rate_s} labels={self.labels_seen:,} "
            f"{q}={self.rolling_quality:.3f} loss={self._rolling_loss.value:.3f} "
            f"regret={self.regret:+.1f} drifts={self.drift.n_global}/{self.drift.n_key} "
            f"keys={self.learner.n_keys:,} version={self.learner.model_version}"
        )

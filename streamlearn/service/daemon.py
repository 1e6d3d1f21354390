"""Wiring and the processing loop (design §4), one poll at a time."""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from streamlearn.active.loop import ActiveLearning
from streamlearn.config import Config
from streamlearn.io.base import Sink, Source
from streamlearn.io.memory import MemorySink
from streamlearn.learning.learner import OnlineLearner
from streamlearn.learning.step_result import StepResult
from streamlearn.meta.hotswap import meta_tick
from streamlearn.meta.initfile import MetaInit
from streamlearn.meta.maml import InnerRule, MetaParams
from streamlearn.meta.tasks import TaskBuffer
from streamlearn.meta.trainer import BackgroundMetaTrainer
from streamlearn.ops.metrics import Metrics
from streamlearn.ops.metrics_log import MetricsLog
from streamlearn.service.checkpointing import Checkpointer
from streamlearn.service.dedup import RecentIds
from streamlearn.service.outcomes import Outcomes, prediction_loss
from streamlearn.service.quarantine import PollFailedError, Quarantine
from streamlearn.service.recovery import recover_queries
from streamlearn.service.wiring import attach_handoff, attach_residency, build_io, build_spec
from streamlearn.state.checkpoint import Checkpoint, CheckpointStore
from streamlearn.state.residency import KeyStateHolder
from streamlearn.wire.messages import (
    DeadLetter,
    EventBatch,
    EventDecoder,
    Prediction,
    RawRecord,
    bounded,
    failed_record,
)

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
        clock: Callable[[], float] = time.time,
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
        self.metrics = Metrics(registry, m.task)
        self.metrics.steps.step_size.set(cfg.learner.learning_rate)
        self.metrics.stream.model_version.set(self.learner.model_version)
        log_path = cfg.metrics.log_path
        self.metrics_log = (
            MetricsLog(registry, Path(log_path), cfg.metrics.log_every_s) if log_path else None
        )
        self.tasks: TaskBuffer | None = None
        if cfg.meta.enabled:
            self.tasks = TaskBuffer(cfg.meta.buffer_per_task, cfg.meta.buffer_tasks, seed=m.seed)
        self.outcomes = Outcomes(cfg, self.learner, self.metrics, theta0, self.tasks)
        self.clock = clock
        self.active = (
            ActiveLearning(cfg.active, self.learner, self.metrics.active, seed=m.seed, clock=clock)
            if cfg.active.enabled
            else None
        )
        if self.active is not None and self.active.watch is not None:
            self.learner.track_freed_rows()
        holders: list[KeyStateHolder] = [self.outcomes.drift, *([self.tasks] if self.tasks else [])]
        self.residency = attach_residency(cfg, self.learner, holders)
        pending = self.active.pending if self.active is not None else None
        self.handoff = attach_handoff(cfg, self.learner, self.source, self.metrics.service, pending)
        self._labels_topic = cfg.kafka.topics.labels
        self._stop = threading.Event()
        self.events_seen = 0
        self._running = False
        ck = cfg.checkpoint
        self.store = CheckpointStore(ck.dir, ck.keep) if ck.dir else None
        self.quarantine = Quarantine(Path(ck.dir) if ck.dir else None)
        window = cfg.source.dedup_window
        self.recent_ids = RecentIds(window) if window else None
        self.checkpointer = Checkpointer(
            ck,
            self.store,
            self.source,
            self.sink,
            self.metrics.service,
            self.quarantine,
            self.state_dict,
            self.residency,
            self.handoff,
        )
        self.resumed_from: int | None = None
        self.meta_trainer: BackgroundMetaTrainer | None = None
        self._meta = MetaParams(
            self.learner.theta0,
            torch.full((self.spec.n_params,), math.log(cfg.learner.learning_rate)),
        )
        if cfg.meta.enabled:
            mc = cfg.meta
            rule = InnerRule(
                steps=mc.inner_steps,
                lam=cfg.learner.proximal_lambda,
                eps=cfg.learner.adagrad_eps,
                initial_accumulator=cfg.learner.initial_accumulator,
                order=mc.inner_order,
            )
            self.meta_trainer = BackgroundMetaTrainer(mc, self.spec, rule, seed=m.seed)
        resumed = self.checkpointer.restore(self._apply_checkpoint)
        if resumed is not None:
            log.info(
                "resumed from checkpoint %d (%s): %d keys, %d labels learned, offsets %s",
                resumed.sequence,
                resumed.path.name,
                self.learner.n_keys,
                self.labels_seen,
                resumed.offsets,
            )
        if self.active is not None and cfg.source.kind == "kafka":
            recover_queries(self.active, cfg, clock(), resumed.created_at if resumed else None)

    # -- state, read through properties ----------------------------------------------------

    @property
    def regret(self) -> float:
        return self.outcomes.regret

    @property
    def rolling_quality(self) -> float:
        return self.outcomes.rolling_quality

    @property
    def labels_seen(self) -> int:
        return self.outcomes.labels

    def ready(self) -> tuple[bool, str]:
        if not self._running:
            return False, "not consuming"
        if not self.source.healthy:
            return False, "broker not reachable"
        if self.checkpointer.error is not None:
            return False, self.checkpointer.error
        if (lost := self.sink.lost) is not None:
            return False, lost
        if self.residency is not None and self.residency.error is not None:
            return False, self.residency.error
        return True, "ready"

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, object]:
        """Everything a restart needs (tensors and plain data only)."""
        o = self.outcomes
        return {
            "learner": self.learner.state_dict(),
            "baseline": o.baseline.state_dict() if o.baseline is not None else {},
            "meta": {
                "log_rate": self._meta.log_rate.clone(),
                "tasks": self.tasks.state_dict() if self.tasks is not None else {},
            },
            "active": self.active.state_dict() if self.active is not None else {},
            "resets": o.resetter.state_dict(),
            "drift": o.drift.state_dict(),
            "totals": {"events": self.events_seen, **o.totals()},
            "handoff": self.handoff.state_dict() if self.handoff is not None else {},
            "recent_ids": self.recent_ids.state_dict() if self.recent_ids is not None else {},
        }

    def _apply_checkpoint(self, ck: Checkpoint) -> None:
        state = ck.state
        self.learner.load_state_dict(state["learner"])
        o = self.outcomes
        if o.baseline is not None and state.get("baseline"):
            o.baseline.load_state_dict(state["baseline"])
        meta = state.get("meta", {})
        if "log_rate" in meta:
            self._meta = MetaParams(self.learner.theta0, meta["log_rate"])
        if self.tasks is not None and meta.get("tasks"):
            self.tasks.load_state_dict(meta["tasks"])
        if self.active is not None and state.get("active"):
            self.active.load_state_dict(state["active"])
        if state.get("resets"):
            o.resetter.load_state_dict(state["resets"])
        if state.get("drift"):
            o.drift.load_state_dict(state["drift"])
        if self.handoff is not None and state.get("handoff"):
            self.handoff.load_state_dict(state["handoff"])
        if self.recent_ids is not None and state.get("recent_ids"):
            self.recent_ids.load_state_dict(state["recent_ids"])
        totals = state["totals"]
        self.events_seen = int(totals["events"])
        o.restore_totals(totals)
        self.resumed_from = ck.sequence
        self.metrics.stream.model_version.set(self.learner.model_version)
        self.metrics.stream.active_keys.set(self.learner.n_keys)

    def checkpoint(self, *, durable: bool = False) -> bool:
        """Flush outputs, save state with the positions it covers, then commit those
        positions (:meth:`Checkpointer.save`); False when not committed."""
        return self.checkpointer.save(durable=durable)

    def _maybe_checkpoint(self) -> None:
        if self.checkpointer.due():
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
        self.metrics.stream.model_version.set(init.version)

    # -- the loop ----------------------------------------------------------------------------

    def step(self, max_records: int | None = None) -> int:
        """Poll once and process what came; returns the number of raw records consumed.

        Raises PollFailedError when processing failed past what one record's dead letter
        covers (with a checkpoint store): nothing of that poll is checkpointed or
        committed, and the next run isolates the record (:mod:`streamlearn.service.quarantine`).
        """
        limit = max_records or self.cfg.source.batch_size
        records = self.source.poll(limit, self.cfg.service.poll_timeout_s)
        if self.handoff is not None:  # a rebalance inside that poll: before its records
            records = self.handoff.after_poll(records)
        self._service_tick()
        if not records:
            self._maybe_checkpoint()  # a quiet stream still gets its tail committed on time
            return 0
        self._guarded(records)
        self.checkpointer.count(len(records))
        self._meta_tick()
        self._maybe_checkpoint()
        if (lost := self.sink.lost) is not None:
            raise PollFailedError(f"{lost}: stopping so a restart replays it from a checkpoint")
        return len(records)

    def _guarded(self, records: list[RawRecord]) -> None:
        """:meth:`_process` with a failure kept to the record that caused it."""
        q = self.quarantine
        if not q.empty:
            records = self._without_poison(records)
            if any(q.is_suspect(r.origin) for r in records):
                log.warning("processing a poll with suspect records one record at a time")
                for r in records:
                    self._isolated(r)
                return
        try:
            self._process(records)
        except Exception as exc:
            what = f"{type(exc).__name__}: {bounded(str(exc))}"
            if self.store is None:  # no checkpoint to replay from: isolate it here
                log.error("a poll failed (%s); retrying its records one at a time", what)
                for r in records:
                    self._isolated(r)
                return
            q.suspect(r.origin for r in records)
            raise PollFailedError(
                f"a poll of {len(records)} records failed ({what}); nothing past the last "
                "checkpoint was committed, and the next run isolates the record"
            ) from exc

    def _isolated(self, record: RawRecord) -> None:
        """One record on its own: one that fails is poison. With a store, the state may be
        part-way through it, so the run stops (the next one dead-letters it first); without
        one it is dead-lettered now."""
        try:
            self._process([record])
        except Exception as exc:
            if self.store is None:
                log.error("dead-lettering a record that fails on its own: %s", exc)
                self._dead_letters([failed_record(record, f"{type(exc).__name__}: {exc}")])
                return
            self.quarantine.condemn(record.origin, f"{type(exc).__name__}: {exc}")
            raise PollFailedError(
                f"the record at {record.origin.topic}:{record.origin.partition}"
                f"@{record.origin.offset} fails on its own ({type(exc).__name__}); the next "
                "run dead-letters it"
            ) from exc

    def _without_poison(self, records: list[RawRecord]) -> list[RawRecord]:
        kept, dead = [], []
        for r in records:
            why = self.quarantine.poison_reason(r.origin)
            if why is None:
                kept.append(r)
            else:
                dead.append(failed_record(r, f"in an earlier run: {why}"))
        if dead:
            self._dead_letters(dead)
        return kept

    def _process(self, records: list[RawRecord]) -> None:
        """Decode -> drop repeats -> dead letters -> predict, ask and learn the events ->
        learn the joined label answers (design §4: the poll's own events are predicted
        before any label of this poll is learned)."""
        started = time.perf_counter()
        events, answers = self._split(records)
        batch, dead = self.decoder.decode(events)
        if dead:
            self._dead_letters(dead)
        seen = self.recent_ids
        if seen is not None and len(batch):
            fresh = seen.fresh(batch.ids)
            if not fresh.all():
                self.metrics.stream.duplicates.inc(int(len(fresh) - fresh.sum()))
                batch = batch.select(fresh)
        if len(batch):
            self._learn(batch)
            if seen is not None:  # once learned: a poll that failed is not remembered
                seen.remember(batch.ids)
        if answers and (dead := self._answers(answers)):
            self._dead_letters(dead)
        self.metrics.stream.poll_seconds.observe(time.perf_counter() - started)
        self.events_seen += len(events)

    def _dead_letters(self, dead: list[DeadLetter]) -> None:
        self.sink.dead_letters(dead)
        for reason, count in Tally(d.reason.value for d in dead).items():
            self.metrics.stream.dead_letters.labels(reason).inc(count)

    def _service_tick(self) -> None:
        mt = self.metrics
        mt.service.ready.set(1.0 if self.ready()[0] else 0.0)
        if (lag := self.source.lag()) is not None:
            mt.service.consumer_lag.set(lag)
        if self.metrics_log is not None:
            self.metrics_log.maybe_write()
        h = self.handoff
        if h is not None and (init := h.newer_meta_init(self.learner.model_version, self.spec)):
            self.install_meta_init(init, use_rates=self.cfg.meta.use_learned_rates)
            log.info("installed published meta-init version %d", init.version)

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

    def _split(self, records: list[RawRecord]) -> tuple[list[RawRecord], list[RawRecord]]:
        """Events, and label answers (records of the labels topic, with active learning)."""
        if self.active is None:
            return records, []
        topic = self._labels_topic
        events = [r for r in records if r.origin.topic != topic]
        if len(events) == len(records):
            return records, []
        return events, [r for r in records if r.origin.topic == topic]

    def _answers(self, records: list[RawRecord]) -> list[DeadLetter]:
        """Join label answers to their queries and learn from them (delayed labels)."""
        assert self.active is not None
        answers, dead = self.decoder.decode_answers(records)
        if dead:
            self.metrics.active.answers.labels("malformed").inc(len(dead))
        joined = self.active.join(answers)
        if joined is not None:
            res = self.learner.process(joined.batch, update_scaler=False, cut_rounds=True)
            if self.handoff is not None:
                self.handoff.dirty.update(joined.batch.keys)
            b, p = joined.batch, joined.p
            # With an exploration share, only its (random, unbiased) labels feed drift
            # detection: the scored ones are the model's hard cases by design.
            a = self.cfg.active
            detect = joined.explored if a.explore > 0 and a.policy != "random" else None
            loss = prediction_loss(self.spec, p, b.y)
            if self.active.pace_answers(loss, joined.explored, b.keys):
                assert self.learner.shared is not None
                self.learner.shared.restart(ramp=True)
                self.metrics.active.shared_restarts.inc()
            y = b.y.astype(np.float64)
            self._active_labels(b.keys, res.x_std, y)
            self.outcomes.record(b.keys, res.x_std, y, p, loss, detect)
            self._step_metrics(res)
        return dead

    def _learn(self, batch: EventBatch) -> None:
        mt = self.metrics
        res = self.learner.process(batch)
        n = len(batch)
        mt.stream.events.inc(n)
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
        mt.stream.predictions.inc(n)
        queried: list[str] = []
        if self.active is not None:
            queries = self.active.ask(batch, res.p, res.x_std)
            if queries:
                self.sink.queries(queries)
                queried = [q.key for q in queries]
        labelled = batch.labelled
        keys_l = [k for k, is_l in zip(batch.keys, labelled.tolist(), strict=True) if is_l]
        if self.handoff is not None:  # a key's open queries are part of its state too
            partitions = [o.partition for o in batch.origins]
            self.handoff.note(batch.keys, partitions, [*keys_l, *queried])
        if keys_l:
            y = batch.y[labelled].astype(np.float64)
            self._active_labels(keys_l, res.x_std[labelled], y)
            self.outcomes.record(
                keys_l, res.x_std[labelled], y, res.p[labelled], res.loss[labelled]
            )
            self._step_metrics(res)
        mt.stream.active_keys.set(self.learner.n_keys)
        if self.residency is not None:
            evicted, restored = self.residency.take_counts()
            mt.stream.keys_evicted.inc(evicted)
            mt.stream.keys_restored.inc(restored)

    def _active_labels(self, keys: list[str], x_std: np.ndarray, y: np.ndarray) -> None:
        """The poll's labels to active learning (before drift detection may reset their
        keys); the proximal strength it tunes goes to the learner."""
        active = self.active
        if active is None:
            return
        if active.watch is not None and len(freed := self.learner.take_freed_rows()):
            active.watch.forget_rows(freed)
        if (lam := active.tune_lambda(keys, x_std, y)) is not None:
            self.learner.set_proximal_lambda(lam)
            self.metrics.active.proximal_lambda.set(lam)

    def _step_metrics(self, res: StepResult) -> None:
        mt = self.metrics
        if res.recalled:
            mt.steps.concept_recalls.inc()
        if (memory := self.learner.memory) is not None:
            mt.steps.concept_members.set(len(memory.members))
        if res.rollbacks:
            mt.steps.rollbacks.inc(res.rollbacks)
        mt.steps.update_norm.set(res.mean_step)
        mt.steps.step_size.set(res.eta)
        mt.steps.hypergradient.set(res.hypergradient)
        mt.steps.curriculum_weight.set(res.curriculum)
        if (mixture := self.learner.mixture) is not None:
            for name, weight in zip(self.learner.experts, mixture.weights, strict=True):
                mt.steps.expert_weight.labels(name).set(weight)
        if self.learner.sizer.watch is not None:
            mt.steps.set_curvature(self.learner.sizer.watch)

    def run(self, max_events: int = 0, status: Callable[[str], None] | None = None) -> int:
        """Process until stopped, the source ends, or ``max_events`` records; returns 0."""
        self._running = True
        self.metrics.service.up.set(1)
        frozen = self.cfg.service.gc_freeze and gc.get_freeze_count() == 0
        if frozen:
            # The start-up objects live as long as the loop; a full collection walking them
            # all was its longest pause (bench/kafka_throughput.py, paced phases). Given
            # back to the collector when the loop ends (an embedding process goes on). No
            # collection first: it cost ~200 ms at every start (a fifth of a short run),
            # and the start-up garbage it would free is collected after the loop.
            gc.freeze()
        interval = self.cfg.service.status_interval_s
        last_status, last_events = time.monotonic(), 0
        completed = False
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
            completed = True
        finally:
            if frozen:
                gc.unfreeze()
            self._running = False
            self.metrics.service.up.set(0)
            # After a failure nothing is saved or committed: the state may be part-way
            # through a poll, and a restart replays from the last checkpoint instead.
            if completed and (self.checkpointer.since or self.store is None):
                self.checkpoint(durable=True)
            if self.metrics_log is not None:
                self.metrics_log.maybe_write(force=True)  # the run's last figures
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
        drift = self.outcomes.drift
        return (
            f"events={self.events_seen:,}{rate_s} labels={self.labels_seen:,} "
            f"{q}={self.rolling_quality:.3f} loss={self.outcomes.rolling_loss.value:.3f} "
            f"regret={self.regret:+.1f} drifts={drift.n_global}/{drift.n_key} "
            f"keys={self.learner.n_keys:,} version={self.learner.model_version}"
            + (self.active.status() if self.active is not None else "")
        )

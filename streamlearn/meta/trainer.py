"""Background re-meta-training with hot swap.

On a cadence (``meta.every_labels`` labelled events or ``meta.every_seconds``), the daemon's
loop takes one snapshot of its :class:`~streamlearn.meta.tasks.TaskBuffer` (a copy, in the
loop's thread, so the buffer is never shared) and hands it to a worker *process*, which
samples its own support/query batches:
meta-training is Python-heavy, and a thread would take the loop's GIL; a process uses the
other core. The worker meta-trains a candidate from the current ``theta0`` (on ``cuda`` when
present, with ``meta.threads`` torch threads), scores candidate and current on held-out tasks,
and returns both scores. The loop promotes the candidate, as a new numbered version, only if
it beats the current one by ``meta.min_improvement``; new keys and later resets use it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from streamlearn.config import MetaConfig
from streamlearn.meta.maml import InnerRule, MetaParams, meta_loss
from streamlearn.meta.outer import OuterLoop
from streamlearn.meta.pool import cluster_tasks, pool_meta_loss, task_fits
from streamlearn.meta.tasks import TaskBuffer, TaskSnapshot
from streamlearn.model.spec import ModelSpec

WORKER_NICENESS = 10
# The share of a snapshot's entities held out to score a candidate against the incumbent.
HELD_OUT_SHARE = 0.2
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


@dataclass(frozen=True)
class Job:
    spec: ModelSpec
    rule: InnerRule
    start: MetaParams
    tasks: TaskSnapshot
    steps: int
    tasks_per_step: int
    support: int
    query: int
    held_out_tasks: int
    seed: int
    method: str
    outer_lr: float
    first_order: bool
    device: str
    threads: int
    duty_cycle: float = 1.0
    pool_size: int = 1
    pool_steps: int = 100


@dataclass(frozen=True)
class Outcome:
    candidate: MetaParams
    loss_before: float
    loss_after: float
    seconds: float
    device: str
    # The pool's starts ([K, P]) when the job trained one, and the held-out loss of starting
    # from the best-fitting start of the pool (the candidate as member 0) and of the
    # candidate alone, on the same score (streamlearn.meta.pool.pool_meta_loss).
    pool: torch.Tensor | None = None
    pool_loss: float = float("inf")
    single_loss: float = float("inf")

    @property
    def pool_helps(self) -> bool:
        """Whether the pool beat the candidate alone on the held-out entities."""
        return self.pool is not None and self.pool_loss < self.single_loss


def _yield_to_the_stream(daemon_pid: int) -> None:
    """The worker runs at a lower CPU priority: when cores are short, the stream comes first.

    It also ignores SIGINT and SIGTERM: its parent owns its lifetime. Ctrl-C in a terminal,
    ``timeout`` and systemd signal the whole process group; the worker dying there before
    the daemon drained made a clean stop log an ERROR and count a failed run. The daemon
    ends the worker itself (:meth:`BackgroundMetaTrainer.close`), and on Linux the kernel
    kills it if the daemon dies first (an OOM kill, say), so it is never left behind.

    This runs seconds after the worker started (it has imported torch by then); a daemon
    that died in between never signals it, so once the kernel will, the worker checks that
    ``daemon_pid`` is still its parent, and ends at once if not (such workers were seen left
    behind by daemons killed while their first run was starting, ~590 MB each)."""
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != daemon_pid:
        os._exit(0)


def run_job(job: Job) -> Outcome:
    """Meta-train from ``job.start`` on ``job.train``; score on ``job.held_out``. Runs in the
    worker process (also callable in process, as the tests do)."""
    torch.set_num_threads(job.threads)
    started = time.monotonic()
    rng = np.random.default_rng(job.seed)
    # Candidate and incumbent are scored on entities the candidate never trained on.
    need = job.support + job.query
    train, held = job.tasks.subset(job.tasks.n >= need).split(HELD_OUT_SHARE, rng)
    held_out = held.sample(job.held_out_tasks, job.support, job.query, rng)
    device = job.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loop = OuterLoop(
        job.method,
        job.spec,
        job.rule,
        job.start,
        outer_lr=job.outer_lr,
        device=device,
        first_order=job.first_order,
    )
    _outer_steps(loop, train, job.steps, job, rng)
    candidate = loop.params
    before = float(meta_loss(job.spec, job.rule, job.start, held_out))
    after = float(meta_loss(job.spec, job.rule, candidate, held_out))
    pool, pool_loss, single = None, float("inf"), float("inf")
    if job.pool_size > 1 and len(train) >= job.pool_size:
        members = _train_pool(job, candidate, train, device, rng)
        pool = torch.stack([m.theta0 for m in members])
        pool_loss = float(pool_meta_loss(job.spec, job.rule, [candidate, *members], held_out))
        single = float(pool_meta_loss(job.spec, job.rule, [candidate], held_out))
    seconds = time.monotonic() - started
    return Outcome(candidate, before, after, seconds, device, pool, pool_loss, single)


def _outer_steps(
    loop: OuterLoop, tasks: TaskSnapshot, steps: int, job: Job, rng: np.random.Generator
) -> None:
    for _ in range(steps):
        t0 = time.monotonic()
        loop.step(tasks.sample(job.tasks_per_step, job.support, job.query, rng))
        if job.duty_cycle < 1.0:  # rest in proportion: busy at most duty_cycle of the time
            time.sleep((time.monotonic() - t0) * (1.0 / job.duty_cycle - 1.0))


def _train_pool(
    job: Job, candidate: MetaParams, train: TaskSnapshot, device: str, rng: np.random.Generator
) -> list[MetaParams]:
    """One start per cluster of the training tasks (clustered by the direction their fits
    move from the candidate), each warm-started from it; the rates stay the candidate's
    (online every start steps at them; as in the offline pool, streamlearn.meta.offline)."""
    labels = cluster_tasks(task_fits(job.spec, job.rule, candidate, train), job.pool_size, job.seed)
    members = []
    for c in range(job.pool_size):
        loop = OuterLoop(
            job.method,
            job.spec,
            job.rule,
            candidate,
            outer_lr=job.outer_lr,
            device=device,
            first_order=job.first_order,
            learn_rates=False,
        )
        _outer_steps(loop, train.subset(labels == c), job.pool_steps, job, rng)
        members.append(loop.params)
    return members


class BackgroundMetaTrainer:
    """Schedules meta-training jobs in one worker process; at most one job at a time.

    Not run in doctests (it spawns a process): see ``tests/meta/test_meta_trainer.py``.
    """

    def __init__(self, cfg: MetaConfig, spec: ModelSpec, rule: InnerRule, seed: int = 0) -> None:
        self.cfg = cfg
        self.spec = spec
        self.rule = rule
        self._rng = np.random.default_rng(seed)
        self._executor: ProcessPoolExecutor | None = None
        self._future: Future[Outcome] | None = None
        self._last_start = time.monotonic()
        self._labels_at_start = 0

    @property
    def running(self) -> bool:
        return self._future is not None

    def due(self, labels_seen: int) -> bool:
        if self._future is not None:
            return False
        return (
            labels_seen - self._labels_at_start >= self.cfg.every_labels
            or time.monotonic() - self._last_start >= self.cfg.every_seconds
        )

    def start(self, buffer: TaskBuffer, current: MetaParams, labels_seen: int) -> bool:
        """Snapshot tasks and submit a job; False when the buffer cannot feed one yet."""
        cfg = self.cfg
        snapshot = buffer.snapshot(cfg.support + cfg.query)
        self._last_start = time.monotonic()
        self._labels_at_start = labels_seen
        if len(snapshot) < 2:
            # not enough data yet (a candidate needs tasks to train on and an entity held
            # out to be scored on): retry at the next cadence
            return False
        job = Job(
            self.spec,
            self.rule,
            current,
            snapshot,
            cfg.steps,
            cfg.tasks_per_step,
            cfg.support,
            cfg.query,
            cfg.held_out_tasks,
            int(self._rng.integers(2**31)),
            cfg.method,
            cfg.outer_lr,
            cfg.first_order,
            cfg.device,
            cfg.threads,
            cfg.duty_cycle,
            cfg.pool_size,
            cfg.pool_steps,
        )
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_yield_to_the_stream,
                initargs=(os.getpid(),),
            )
        self._future = self._executor.submit(run_job, job)
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job in flight (if any) has finished, at most ``timeout`` seconds;
        True when none is left running. Its outcome is still taken by :meth:`result`."""
        fut = self._future
        if fut is None:
            return True
        done, _ = concurrent.futures.wait([fut], timeout=timeout)
        return bool(done)

    def result(self) -> Outcome | None:
        """The finished job's outcome, once; None while running or idle. A failed job
        raises its exception here (the daemon counts it and carries on)."""
        fut = self._future
        if fut is None or not fut.done():
            return None
        self._future = None
        try:
            return fut.result()
        except Exception:
            self.close()  # the pool may be broken: start afresh next time
            raise

    def promotes(self, outcome: Outcome) -> bool:
        return outcome.loss_after < outcome.loss_before * (1.0 - self.cfg.min_improvement)

    def close(self) -> None:
        """Stop now: a job in flight is dropped (the next cadence runs a fresh one). Without
        ending the worker, the interpreter's exit would wait for the job to finish (3.3 s
        after a SIGTERM with the defaults on the CPU; more for bigger jobs)."""
        executor, self._executor, self._future = self._executor, None, None
        if executor is None:
            return
        workers = list(getattr(executor, "_processes", {}).values())  # no public handle < 3.14
        executor.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.kill()  # it ignores SIGTERM; it holds nothing that needs a clean exit
        for worker in workers:
            worker.join(timeout=10)

"""Meta-training time on the GPU against the CPU for the same job.

The first job is the background trainer's own (:func:`streamlearn.meta.trainer.run_job`, the
daemon's ``meta`` defaults: 300 outer steps of 16 tasks, 10 support + 10 query, one AdaGrad
inner step, second-order MAML) on tasks cut from the default drifting family, plus larger
variants (more tasks per step, an MLP, iMAML; ``--steps`` outer steps each) where a GPU
has work to do. Each job runs on
``cpu`` with one torch thread (what ``meta.threads`` defaults to), on ``cpu`` with all
cores, and on ``cuda`` when present; one untimed warm-up job per device first, then the
median of ``--repeats`` seconds. So that the speed is for the same work, each job's
meta-gradient on the last device (float32) is checked against float64 on the CPU on one
batch, and the held-out meta-loss of the candidates is shown for cpu and the last device.

    .venv/bin/python -m bench.meta_device --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from streamlearn.config import load_config
from streamlearn.io.synthetic import build_family
from streamlearn.meta.implicit import batched_meta_grad
from streamlearn.meta.maml import InnerRule, MetaParams, TaskBatch, meta_grad
from streamlearn.meta.offline import OfflineSettings, build_buffers
from streamlearn.meta.outer import IMPLICIT_DEFAULT_LAMBDA
from streamlearn.meta.tasks import TaskSnapshot
from streamlearn.meta.trainer import Job, Outcome, run_job
from streamlearn.model.spec import ModelSpec


@dataclass(frozen=True)
class Case:
    name: str
    hidden: tuple[int, ...]
    method: str
    tasks_per_step: int
    first_order: bool = False
    steps: int | None = None  # None: --steps


CASES = (
    Case("daemon default (linear, MAML, 16 tasks, 300 steps)", (), "maml", 16, steps=300),
    Case("linear, MAML, 256 tasks", (), "maml", 256),
    Case("linear, first-order MAML, 256 tasks", (), "maml", 256, first_order=True),
    Case("MLP 64x64, MAML, 16 tasks", (64, 64), "maml", 16),
    Case("MLP 64x64, MAML, 256 tasks", (64, 64), "maml", 256),
    Case("MLP 64x64, iMAML, 64 tasks", (64, 64), "imaml", 64),
)


def snapshot(events: int) -> TaskSnapshot:
    cfg = load_config(env={})
    syn = cfg.source.synthetic.model_copy(update={"max_events": events})
    train, _, _ = build_buffers(build_family(syn), cfg.model.n_features, OfflineSettings())
    return train.snapshot(20)


def job_for(case: Case, tasks: TaskSnapshot, steps: int, device: str, threads: int) -> Job:
    learner = load_config(env={}).learner  # the daemon's defaults: its inner rule
    spec = ModelSpec(tasks.x.shape[2], "binary", hidden=case.hidden)
    theta0 = spec.init(seed=0, kind="normal" if case.hidden else "zeros", scale=0.5)
    start = MetaParams(theta0, torch.full_like(theta0, float(np.log(0.5))))
    return Job(
        spec,
        InnerRule(
            steps=1,
            lam=learner.proximal_lambda,
            eps=learner.adagrad_eps,
            initial_accumulator=learner.initial_accumulator,
        ),
        start,
        tasks,
        steps,
        case.tasks_per_step,
        10,
        10,
        100,
        seed=7,
        method=case.method,
        outer_lr=3e-3,
        first_order=case.first_order,
        device=device,
        threads=threads,
    )


def gradient_error(case: Case, tasks: TaskSnapshot, device: str) -> float:
    """Relative error of one float32 meta-gradient on ``device`` against float64 on the CPU,
    same batch: Adam's sign-like steps let last-bit differences grow over a run, so the
    gradient is where devices must agree."""
    job = job_for(case, tasks, 1, device, 1)
    batch = tasks.sample(case.tasks_per_step, 10, 10, np.random.default_rng(3))

    def grad(dev: str, dtype: torch.dtype) -> torch.Tensor:
        b = TaskBatch(*(t.to(dev, dtype) for t in (batch.xs, batch.ys, batch.xq, batch.yq)))
        p = MetaParams(*(t.to(dev, dtype) for t in job.start))
        if case.method == "imaml":
            g, _ = batched_meta_grad(
                job.spec, IMPLICIT_DEFAULT_LAMBDA, p.theta0, b, inner_steps=10,
                inner_rate=0.5, cg_iter=5,
            )  # fmt: skip
            return g.cpu().double()
        gm, _ = meta_grad(job.spec, job.rule, p, b, first_order=case.first_order)
        return torch.cat([gm.theta0, gm.log_rate]).cpu().double()

    ref = grad("cpu", torch.float64)
    return float((grad(device, torch.float32) - ref).norm() / ref.norm())


def timed(job: Job) -> Outcome:
    if job.device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = run_job(job)
    if job.device == "cuda":
        torch.cuda.synchronize()
    return replace(out, seconds=time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--steps", type=int, default=100, help="outer steps (but the default job's 300)"
    )
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--cases", type=int, default=len(CASES), help="first N cases only")
    args = ap.parse_args()
    tasks = snapshot(args.events)
    cores = os.cpu_count() or 1
    devices = [("cpu", 1), ("cpu", cores)]
    if torch.cuda.is_available():
        devices.append(("cuda", 1))
        print("cuda device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
    print(f"{len(tasks)} tasks, {cores} cores, {args.steps} outer steps, median of {args.repeats}")
    rows = []
    for case in CASES[: args.cases]:
        secs: dict[str, float] = {}
        held: dict[str, float] = {}
        for dev, threads in devices:
            label = dev if dev == "cuda" else f"cpu x{threads}"
            run_job(job_for(case, tasks, 5, dev, threads))  # warm-up: CUDA context, kernels
            steps = case.steps or args.steps
            runs = [timed(job_for(case, tasks, steps, dev, threads)) for _ in range(args.repeats)]
            secs[label] = statistics.median(r.seconds for r in runs)
            held[label] = statistics.median(r.loss_after for r in runs)
            print(f"  {case.name} | {label}: {[round(r.seconds, 2) for r in runs]}", flush=True)
        err = gradient_error(case, tasks, devices[-1][0])
        rows.append((case, secs, held, err))
    labels = [dev if dev == "cuda" else f"cpu x{t}" for dev, t in devices]
    print()
    head = " | ".join(f"{lab} s" for lab in labels)
    speed = " | ".join(f"{lab} / cuda" for lab in labels[:-1]) if "cuda" in labels else ""
    last = labels[-1]
    print(
        f"| job | {head} |"
        + (f" {speed} |" if speed else "")
        + f" held-out meta-loss after, cpu x1 / {last} |"
        + f" meta-gradient rel. err, {last} f32 vs f64 |"
    )
    print("|---" * (1 + len(labels) + (len(labels) - 1 if speed else 0) + 2) + "|")
    for case, secs, held, err in rows:
        cells = " | ".join(f"{secs[lab]:.2f}" for lab in labels)
        ratios = ""
        if "cuda" in secs:
            ratios = (
                " " + " | ".join(f"{secs[lab] / secs['cuda']:.2f}" for lab in labels[:-1]) + " |"
            )
        losses = f"{held['cpu x1']:.4f} / {held[last]:.4f}"
        print(f"| {case.name} | {cells} |{ratios} {losses} | {err:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

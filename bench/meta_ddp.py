"""The distributed meta-training path (``DistributedDataParallel``; NCCL on a GPU, gloo on the
CPU) against one process, on this machine's device.

``torchrun`` with one rank is not distributed (``world_from_env`` gives None), so this joins
a process group of one rank itself and runs the offline trainer's own loop
(:func:`streamlearn.meta.offline.meta_train`) twice on the same tasks and seed: through
:class:`streamlearn.meta.distributed.DistributedMAML` and through the plain outer loop. It
prints the backend, the largest difference between the two meta-inits, their held-out
meta-losses and the medians of ``--repeats`` timings (the DDP run's time over the plain run's).
Several ranks on one GPU are refused by NCCL, so this is what a one-GPU machine can check;
``tests/meta/test_meta_ddp.py`` holds two gloo ranks equal to one process.

    .venv/bin/python -m bench.meta_ddp --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist

from streamlearn.config import load_config
from streamlearn.io.synthetic import build_family
from streamlearn.meta.distributed import World, leave
from streamlearn.meta.offline import MetaResult, OfflineSettings, build_buffers, meta_train
from streamlearn.model.spec import ModelSpec
from tests.helpers import free_tcp_port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--tasks-per-step", type=int, default=64)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--hidden", type=int, nargs="*", default=[64, 64])
    args = ap.parse_args()
    cfg = load_config(env={})
    syn = cfg.source.synthetic.model_copy(update={"max_events": args.events})
    settings = OfflineSettings(steps=args.steps, tasks_per_step=args.tasks_per_step)
    train, test, _ = build_buffers(build_family(syn), cfg.model.n_features, settings)
    spec = ModelSpec(cfg.model.n_features, "binary", hidden=tuple(args.hidden))
    theta0 = spec.init(seed=0, kind="normal" if args.hidden else "zeros", scale=0.5)
    world = World(rank=0, size=1, local_rank=0)
    # The process group's rendezvous, on a free port.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_tcp_port()))

    def once(w: World | None) -> tuple[MetaResult, float]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = meta_train(spec, theta0, train, test, settings, progress=False, world=w)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    once(None)  # warm-up: CUDA context, kernels
    ddp_s, plain_s = [], []
    ddp = plain = None
    backend = "?"
    for _ in range(args.repeats):  # alternate, so drift in the machine's speed hits both
        ddp, s = once(world)
        backend = str(dist.get_backend())
        ddp_s.append(s)
        plain, s = once(None)
        plain_s.append(s)
    leave()
    assert ddp is not None
    assert plain is not None
    gap = float((ddp.params.theta0 - plain.params.theta0).abs().max())
    rate_gap = float((ddp.params.log_rate - plain.params.log_rate).abs().max())
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(
        f"DDP (one rank) against one process: {device}, backend {backend}, model "
        f"{args.hidden or 'linear'}, MAML, {args.tasks_per_step} tasks x {args.steps} steps, "
        f"torch {torch.__version__}, median of {args.repeats}\n"
    )
    print("| path | s (median) | held-out meta-loss before -> after |")
    print("|---|---|---|")
    for name, res, secs in (("DDP", ddp, ddp_s), ("one process", plain, plain_s)):
        before, after = res.summary["held_out_before"], res.summary["held_out_after"]
        print(f"| {name} | {statistics.median(secs):.2f} | {before:.4f} -> {after:.4f} |")
    ratio = statistics.median(d / p for d, p in zip(ddp_s, plain_s, strict=True))
    print(
        f"\nmax |theta0 DDP - theta0 one process| = {gap:.2e}; max |log rate gap| = {rate_gap:.2e}"
    )
    print(f"DDP time / one-process time (median of paired runs) = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Few-shot sinusoid regression: does the meta-learned start adapt faster?

The classic benchmark: a task is ``y = A sin(x - phi)``, ``A`` in [0.1, 5], ``phi`` in
[0, pi], ``x`` in [-5, 5]; the model an MLP 1-40-40-1 (ReLU). Every method adapts with the
online learner's rule (AdaGrad steps on the k support points) and is scored by MSE on 100
query points of each of 600 held-out tasks:

- ``maml``: unrolled MAML, second order, per-parameter inner rates learned with ``theta0``;
- ``imaml``: the implicit path (proximal inner problem, CG on HVPs), then AdaGrad;
- ``pretrained``: one model fitted jointly on data pooled over many tasks, then AdaGrad;
- ``random``: a fresh initialisation, then AdaGrad.

The baselines' (and iMAML's) AdaGrad rate is the best of a grid, chosen per (k, steps) on
separate validation tasks. Training is bounded by wall time per method (``--seconds``) on
``cuda`` when present, else the CPU.

    .venv/bin/python -m bench.meta_sinusoid --seconds 90
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch

from streamlearn.meta.implicit import IMAML
from streamlearn.meta.maml import MAML, InnerRule, MetaParams, TaskBatch, adapt, mean_loss
from streamlearn.model.spec import ModelSpec

SPEC = ModelSpec(1, "regression", hidden=(40, 40), activation="relu")
RATES = (0.001, 0.003, 0.01, 0.03, 0.1)
SHOTS = (5, 10)
STEPS = (1, 5)


def sample_tasks(gen: torch.Generator, n: int, k: int, q: int, device: torch.device) -> TaskBatch:
    amp = torch.rand(n, 1, generator=gen) * 4.9 + 0.1
    phase = torch.rand(n, 1, generator=gen) * math.pi
    x = torch.rand(n, k + q, 1, generator=gen) * 10.0 - 5.0
    y = amp * torch.sin(x[..., 0] - phase)
    b = TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:])
    return TaskBatch(*(t.to(device) for t in (b.xs, b.ys, b.xq, b.yq)))


def evaluate(params: MetaParams, batch: TaskBatch, steps: int) -> tuple[float, float]:
    """Mean and standard error of the query MSE after ``steps`` AdaGrad steps."""
    rule = InnerRule(steps=steps, rule="adagrad")

    def one(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor) -> torch.Tensor:
        w = adapt(SPEC, rule, params, xs, ys)
        return 2.0 * mean_loss(SPEC, w, xq, yq)  # the loss is half the squared error

    mse = torch.func.vmap(one)(batch.xs, batch.ys, batch.xq, batch.yq).detach()
    return float(mse.mean()), float(mse.std() / math.sqrt(len(mse)))


def with_rate(theta0: torch.Tensor, rate: float) -> MetaParams:
    return MetaParams(theta0, torch.full_like(theta0, math.log(rate)))


def train_for(seconds: float, step: Callable[[], float]) -> tuple[int, float]:
    started, n, loss = time.monotonic(), 0, float("nan")
    while time.monotonic() - started < seconds:
        loss = step()
        n += 1
    return n, loss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=90.0, help="training time per method")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    theta_random = SPEC.init(seed=args.seed).to(device)
    trained: dict[str, MetaParams | torch.Tensor] = {}
    info: dict[str, str] = {}

    maml = MAML(
        SPEC,
        InnerRule(steps=1, rule="adagrad"),
        theta_random,
        rate=0.01,
        outer_lr=1e-3,
        device=device,
    )
    n, loss = train_for(args.seconds, lambda: maml.step(sample_tasks(gen, 25, 10, 10, device)))
    trained["maml"] = maml.params
    info["maml"] = f"{n} meta-steps of 25 tasks (k=10, 1 inner step), last meta-loss {loss:.3f}"

    imaml = IMAML(
        SPEC,
        lam=2.0,
        theta0=theta_random,
        outer_lr=1e-3,
        inner_iter=10,
        inner_rate=0.03,
        cg_iter=5,
        device=device,
    )
    n, loss = train_for(args.seconds, lambda: imaml.step(sample_tasks(gen, 10, 10, 10, device)))
    trained["imaml"] = imaml.theta0.detach()
    info["imaml"] = f"{n} meta-steps of 10 tasks (lam=2, 10 inner steps, CG 5), last {loss:.3f}"

    pre = theta_random.clone().requires_grad_(True)
    opt = torch.optim.Adam([pre], lr=1e-3)

    def pre_step() -> float:
        b = sample_tasks(gen, 25, 20, 0, device)
        loss = mean_loss(SPEC, pre, b.xs.reshape(-1, 1), b.ys.reshape(-1))
        opt.zero_grad()
        (pre.grad,) = torch.autograd.grad(loss, [pre])
        opt.step()
        return float(loss.detach())

    n, loss = train_for(args.seconds, pre_step)
    trained["pretrained"] = pre.detach()
    info["pretrained"] = f"{n} Adam steps on 500 pooled points each, last loss {loss:.3f}"
    trained["random"] = theta_random
    info["random"] = "Glorot-normal initialisation, no training"

    evaluation = {k: sample_tasks(gen, 600, k, 100, device) for k in SHOTS}
    validation = {k: sample_tasks(gen, 200, k, 100, device) for k in SHOTS}
    rows: dict[str, dict[tuple[int, int], tuple[float, float, str]]] = {}
    for name, value in trained.items():
        rows[name] = {}
        for k in SHOTS:
            for steps in STEPS:
                if isinstance(value, MetaParams):
                    params, rate_s = value, "learned"
                else:
                    scores = {
                        r: evaluate(with_rate(value, r), validation[k], steps)[0] for r in RATES
                    }
                    best = min(scores, key=scores.__getitem__)
                    params, rate_s = with_rate(value, best), f"{best:g}"
                mean, se = evaluate(params, evaluation[k], steps)
                rows[name][(k, steps)] = (mean, se, rate_s)

    print(
        f"\nsinusoid few-shot, MLP 1-40-40-1, device {device}, {args.seconds:.0f} s training "
        "per method; query MSE over 600 tasks (mean +- s.e.; AdaGrad rate in brackets)\n"
    )
    cols = [(k, s) for k in SHOTS for s in STEPS]
    print("| method | " + " | ".join(f"k={k}, {s} step{'s' * (s > 1)}" for k, s in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, cells in rows.items():
        print(
            f"| {name} | "
            + " | ".join(f"{cells[c][0]:.3f} +- {cells[c][1]:.3f} ({cells[c][2]})" for c in cols)
            + " |"
        )
    ratio = rows["maml"][(10, 1)][0] / rows["pretrained"][(10, 1)][0]
    ratio_i = rows["imaml"][(10, 1)][0] / rows["pretrained"][(10, 1)][0]
    print(
        f"\nk=10, 1 step: maml / pretrained = {ratio:.2f}, imaml / pretrained = {ratio_i:.2f} "
        "(the bar: <= 0.5)"
    )
    print("\ntraining:")
    for name, line in info.items():
        print(f"- {name}: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

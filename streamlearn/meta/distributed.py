"""Meta-training across processes and GPUs: ``torchrun`` and ``DistributedDataParallel``.

``torchrun --nproc_per_node N -m streamlearn meta-train ...`` starts N ranks; each reads the
same stream, builds the same task buffers and, with the same seed, draws the same batch of
``tasks_per_step`` tasks per outer step, then meta-trains on its own share of it (tasks
``rank, rank + N, ...``). DDP averages the ranks' gradients, so the step equals the one a
single process takes on the whole batch, and N ranks end on the same meta-init as one
process (up to the order of float sums; ``tests/meta/test_meta_ddp.py`` holds them equal). The
backend is NCCL on GPUs (rank ``LOCAL_RANK``'s device) and gloo on CPU; only rank 0 writes
the meta-init file.

Only MAML (``--method maml``) runs distributed: iMAML's outer gradient comes from conjugate
gradients on its own implicit system, not from one ``backward`` DDP could hook.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from streamlearn.meta.maml import InnerRule, MetaParams, TaskBatch, meta_loss
from streamlearn.model.spec import ModelSpec


@dataclass(frozen=True)
class World:
    """This process's place among torchrun's ranks.

    >>> w = world_from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    >>> (w.size, w.rank, w.is_main) if w else None
    (2, 1, False)
    >>> world_from_env({}) is None
    True
    """

    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env(env: Mapping[str, str] | None = None) -> World | None:
    """The torchrun world this process belongs to; None outside torchrun or with one rank."""
    env = os.environ if env is None else env
    size = int(env.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    return World(int(env["RANK"]), size, int(env.get("LOCAL_RANK", env["RANK"])))


def join(world: World) -> torch.device:
    """Join the process group (NCCL with GPUs, else gloo); the device of this rank."""
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=world.rank, world_size=world.size)
    if cuda:
        device = torch.device("cuda", world.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _MetaLossModule(nn.Module):
    """``theta0`` and the log rates as parameters; the forward pass is the meta-loss."""

    def __init__(
        self,
        spec: ModelSpec,
        rule: InnerRule,
        start: MetaParams,
        first_order: bool,
        learn_rates: bool,
    ) -> None:
        super().__init__()
        self.spec, self.rule, self.first_order = spec, rule, first_order
        self.theta0 = nn.Parameter(start.theta0.detach().clone().float())
        self.log_rate = nn.Parameter(
            start.log_rate.detach().clone().float(), requires_grad=learn_rates
        )

    def forward(
        self, xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor
    ) -> torch.Tensor:
        params = MetaParams(self.theta0, self.log_rate)
        batch = TaskBatch(xs, ys, xq, yq)
        return meta_loss(self.spec, self.rule, params, batch, first_order=self.first_order)


class DistributedMAML:
    """MAML's outer loop (Adam on ``theta0`` and the log rates, as :class:`MAML`) with the
    gradient averaged over the ranks by DDP. Same interface as
    :class:`streamlearn.meta.outer.OuterLoop`.

    Not run as a doctest (it needs a process group): see ``tests/meta/test_meta_ddp.py``.
    """

    def __init__(
        self,
        world: World,
        spec: ModelSpec,
        rule: InnerRule,
        start: MetaParams,
        *,
        outer_lr: float,
        device: torch.device,
        first_order: bool = False,
        learn_rates: bool = True,
    ) -> None:
        if outer_lr <= 0:
            raise ValueError(f"meta.outer_lr must be > 0, got {outer_lr}")
        self.world = world
        self.device = device
        module = _MetaLossModule(spec, rule, start, first_order, learn_rates).to(device)
        self._module = module
        ids = [device.index] if device.type == "cuda" else None
        self._ddp = DistributedDataParallel(module, device_ids=ids)
        leaves = [p for p in module.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(leaves, lr=outer_lr)

    def step(self, batch: TaskBatch) -> float:
        """One outer step on this rank's share of ``batch`` (the same batch on every rank);
        returns the meta-loss of the whole batch."""
        n, size = len(batch), self.world.size
        if n % size:
            raise ValueError(
                f"--tasks-per-step ({n}) must be a multiple of the number of ranks ({size}): "
                "each rank takes an equal share, so that the averaged gradient is the batch's"
            )
        r = self.world.rank
        part = [t[r::size].to(self.device) for t in (batch.xs, batch.ys, batch.xq, batch.yq)]
        self.opt.zero_grad(set_to_none=True)
        loss = self._ddp(*part)
        loss.backward()
        self.opt.step()
        total = loss.detach().clone()
        dist.all_reduce(total)
        return float(total) / size

    @property
    def params(self) -> MetaParams:
        """The current result, on the CPU."""
        m = self._module
        return MetaParams(m.theta0.detach().cpu(), m.log_rate.detach().cpu())

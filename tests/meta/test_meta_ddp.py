"""Distributed meta-training: two gloo ranks under torchrun end on the meta-init one process
makes from the same data (streamlearn.meta.distributed)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from streamlearn.config import load_config
from streamlearn.meta.distributed import world_from_env
from streamlearn.meta.initfile import MetaInit, load_meta_init
from streamlearn.service.wiring import build_spec
from tests.helpers import ROOT, run_cli

ARGS = ("--events", "12000", "--steps", "40", "--tasks-per-step", "8", "--no-progress")


def _torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(nproc), "-m", "streamlearn", *args]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU even on a GPU machine
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, check=False
    )


def _init(path: Path) -> MetaInit:
    return load_meta_init(path, build_spec(load_config(env={})))


def _theta0(path: Path) -> torch.Tensor:
    return _init(path).theta0


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "one.pt"
    res = run_cli("meta-train", "--out", str(out), *ARGS, env={"CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 0, res.stderr
    return out


def test_two_gloo_ranks_equal_one_process(single: Path, tmp_path: Path) -> None:
    out = tmp_path / "two.pt"
    res = _torchrun(2, "meta-train", "--out", str(out), *ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    one, two = _theta0(single), _theta0(out)
    assert float(one.abs().max()) > 1e-3  # training moved theta0 off its zero start
    assert torch.allclose(one, two, atol=1e-6), float((one - two).abs().max())
    assert _init(out).rates.allclose(_init(single).rates, atol=1e-6)


def test_a_rank_alone_differs(single: Path, tmp_path: Path) -> None:
    """Negative control: each rank's half of the tasks alone (no gradient averaging) gives
    another result, so the equality above is DDP's doing."""
    out = tmp_path / "half.pt"
    res = run_cli(
        "meta-train", "--out", str(out), *ARGS[:-3], "--tasks-per-step", "4", "--no-progress"
    )
    assert res.returncode == 0, res.stderr
    assert float((_theta0(out) - _theta0(single)).abs().max()) > 1e-4


def test_uneven_shares_and_imaml_are_refused(tmp_path: Path) -> None:
    uneven = ("--events", "12000", "--steps", "2", "--tasks-per-step", "3", "--no-progress")
    res = _torchrun(2, "meta-train", "--out", str(tmp_path / "x.pt"), *uneven)
    assert res.returncode != 0
    assert "--tasks-per-step (3) must be a multiple of the number of ranks (2)" in res.stderr
    res = _torchrun(2, "meta-train", "--out", str(tmp_path / "y.pt"), *ARGS, "--method", "imaml")
    assert res.returncode != 0
    assert "--method must be 'maml' under torchrun" in res.stderr


def test_world_from_env() -> None:
    assert world_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    w = world_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert w is not None
    assert (w.rank, w.size, w.local_rank, w.is_main) == (2, 4, 0, False)

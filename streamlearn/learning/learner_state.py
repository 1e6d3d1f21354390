"""The learner's checkpoint state: what :meth:`OnlineLearner.state_dict` saves and
:meth:`OnlineLearner.load_state_dict` restores (tensors and plain data only).

Rows are saved with their row numbers and the free rows, so everything indexed by row (the
curvature and lambda windows, the lambda directions) still points at the same keys after a
restart, and new keys take the same rows as they would have without one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from streamlearn.state.checkpoint import from_json_tensor, json_tensor
from streamlearn.state.keys import KeyTable

if TYPE_CHECKING:
    from streamlearn.learning.learner import OnlineLearner

MIN_CAPACITY = 64  # rows a learner's tables start with


def as_row(theta0: torch.Tensor | np.ndarray) -> np.ndarray:
    """A contiguous float32 copy of a parameter vector."""
    if isinstance(theta0, torch.Tensor):
        theta0 = theta0.detach().cpu().numpy()
    return np.ascontiguousarray(theta0, dtype=np.float32).copy()


def state_of(learner: OnlineLearner) -> dict[str, object]:
    live = learner.keys.live_slots()
    res = learner.residency
    return {
        "theta0": learner.theta0,
        "version": learner._version,
        "keys": json_tensor(learner.keys.names()),
        "slots": torch.from_numpy(live),
        "free": torch.tensor(learner.keys.free_rows(), dtype=torch.int64),
        "params": torch.from_numpy(learner._params[live]),
        "accum": torch.from_numpy(learner._accum[live]),
        "scaler": learner.scaler.state_dict() if learner.scaler else None,
        "pool": torch.from_numpy(learner._pool.copy()),
        "start_of": torch.from_numpy(learner._start_of[live]),
        "residency": {}
        if res is None
        else {**res.state_dict(), "last_used": torch.from_numpy(res.last_used(live))},
        "eta": learner.sizer.eta,
        "proximal_lambda": learner.proximal_lambda,
        "shared": {} if learner.shared is None else learner.shared.state_dict(),
        "recall": {} if learner.memory is None else learner.memory.state_dict(),
        "curvature": {} if learner.sizer.watch is None else learner.sizer.watch.state_dict(),
    }


def key_names(state: dict[str, Any]) -> list[str]:
    """The resident keys' names in a learner state, in row order of its ``params``."""
    names = state["keys"]
    # A list of names in checkpoints of earlier versions.
    return from_json_tensor(names) if isinstance(names, torch.Tensor) else list(names)


def load_into(learner: OnlineLearner, state: dict[str, Any]) -> None:
    p = learner.spec.n_params
    theta0, params, accum = state["theta0"], state["params"], state["accum"]
    keys = key_names(state)
    if (
        tuple(theta0.shape) != (p,)
        or tuple(params.shape) != (len(keys), p)
        or tuple(accum.shape) != (len(keys), p)
    ):
        raise ValueError(
            f"checkpoint holds a model of {tuple(theta0.shape)} parameters for "
            f"{len(keys)} keys; this model has ({p},): was model.* changed?"
        )
    # Checkpoints from before eviction hold rows 0..n-1 in key order.
    slots = state["slots"].numpy() if "slots" in state else np.arange(len(keys))
    free = state["free"].tolist() if "free" in state else []
    learner._theta0 = as_row(theta0)
    learner._version = int(state["version"])
    learner.keys = KeyTable.restore(keys, slots, free)
    rows = max(MIN_CAPACITY, learner.keys.high_water)
    learner._params = np.tile(learner._theta0, (rows, 1))
    learner._accum = np.full_like(learner._params, learner.cfg.initial_accumulator)
    learner._params[slots] = params.numpy()
    learner._accum[slots] = accum.numpy()
    learner.set_pool(state.get("pool"))  # absent in checkpoints from before pools
    res = learner.residency
    if res is not None and state.get("residency"):  # after set_pool counted its pool
        res.load_state_dict(state["residency"])
        if "last_used" in state["residency"]:
            res.touch(slots, np.asarray(state["residency"]["last_used"], dtype=np.int64))
    learner._start_of = np.zeros(len(learner._params), dtype=np.int64)
    if "start_of" in state and len(learner._pool):
        learner._start_of[slots] = state["start_of"].numpy()
    if learner._direction is not None:  # directions restart: one hypergradient step lost
        learner._direction = np.zeros_like(learner._params)
        if learner.sizer.hyper is not None and "eta" in state:
            learner.sizer.hyper.set_eta(float(state["eta"]))
    learner.proximal_lambda = float(state.get("proximal_lambda", learner.cfg.proximal_lambda))
    watch = learner.sizer.watch
    if watch is not None:
        watch.lam = learner.proximal_lambda
        if state.get("curvature"):
            watch.load_state_dict(state["curvature"])
    if learner.shared is not None and state.get("shared"):
        learner.shared.load_state_dict(state["shared"])
    if learner.memory is not None and state.get("recall"):  # absent before recall
        learner.memory.load_state_dict(state["recall"])
    scaler = state.get("scaler")
    if learner.scaler is not None and scaler is not None:
        learner.scaler.load_state_dict(scaler)

"""The learner's key tables as one value, and their checkpoint form (tensors and plain
data only): :meth:`OnlineLearner.state_dict` packs them with its components' states,
:meth:`OnlineLearner.load_state_dict` unpacks and installs them.

Rows are saved with their row numbers and the free rows, so everything indexed by row (the
curvature and lambda windows, the lambda directions) still points at the same keys after a
restart, and new keys take the same rows as they would have without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamlearn.state.checkpoint import from_json_tensor, json_tensor
from streamlearn.state.keys import KeyTable

MIN_CAPACITY = 64  # rows a learner's tables start with


def as_row(theta0: torch.Tensor | np.ndarray) -> np.ndarray:
    """A contiguous float32 copy of a parameter vector."""
    if isinstance(theta0, torch.Tensor):
        theta0 = theta0.detach().cpu().numpy()
    return np.ascontiguousarray(theta0, dtype=np.float32).copy()


@dataclass
class KeyTables:
    """Every key's row: fast weights, AdaGrad accumulators and the start it resets to, with
    the starting point ``theta0`` and its version. Rows past ``keys.high_water`` are spare.

    >>> t = KeyTables.fresh(np.zeros(2, np.float32), 0, initial_accumulator=0.5)
    >>> t.params.shape, float(t.accum[0, 0]), t.keys.high_water
    ((64, 2), 0.5, 0)
    """

    theta0: np.ndarray
    version: int
    keys: KeyTable
    params: np.ndarray
    accum: np.ndarray
    start_of: np.ndarray

    @classmethod
    def fresh(cls, theta0: np.ndarray, version: int, initial_accumulator: float) -> KeyTables:
        params = np.tile(theta0, (MIN_CAPACITY, 1))
        return cls(
            theta0,
            version,
            KeyTable(),
            params,
            np.full_like(params, initial_accumulator),
            np.zeros(MIN_CAPACITY, dtype=np.int64),
        )


def pack(tables: KeyTables) -> dict[str, object]:
    """The checkpoint form of the resident rows."""
    live = tables.keys.live_slots()
    return {
        "theta0": torch.from_numpy(tables.theta0.copy()),
        "version": tables.version,
        "keys": json_tensor(tables.keys.names()),
        "slots": torch.from_numpy(live),
        "free": torch.tensor(tables.keys.free_rows(), dtype=torch.int64),
        "params": torch.from_numpy(tables.params[live]),
        "accum": torch.from_numpy(tables.accum[live]),
        "start_of": torch.from_numpy(tables.start_of[live]),
    }


def key_names(state: dict[str, Any]) -> list[str]:
    """The resident keys' names in a learner state, in row order of its ``params``."""
    names = state["keys"]
    # A list of names in checkpoints of earlier versions.
    return from_json_tensor(names) if isinstance(names, torch.Tensor) else list(names)


def unpack(
    state: dict[str, Any], n_params: int, initial_accumulator: float, pooled: bool
) -> tuple[KeyTables, np.ndarray]:
    """The tables a learner state holds, and the rows of its resident keys; ValueError when
    they are for another model layout. ``pooled``: the start of each key is kept (with a
    meta-init pool installed)."""
    theta0, params, accum = state["theta0"], state["params"], state["accum"]
    keys = key_names(state)
    p = n_params
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
    row = as_row(theta0)
    table = KeyTable.restore(keys, slots, free)
    rows = max(MIN_CAPACITY, table.high_water)
    all_params = np.tile(row, (rows, 1))
    all_accum = np.full_like(all_params, initial_accumulator)
    all_params[slots] = params.numpy()
    all_accum[slots] = accum.numpy()
    start_of = np.zeros(rows, dtype=np.int64)
    if "start_of" in state and pooled:
        start_of[slots] = state["start_of"].numpy()
    tables = KeyTables(row, int(state["version"]), table, all_params, all_accum, start_of)
    return tables, slots

"""Meta-init files: what ``streamlearn meta-train`` writes and ``run --meta-init`` loads.

One sealed ``torch.save`` file (:func:`streamlearn.state.checkpoint.seal`: checked against its
SHA-256 before it is loaded, with ``weights_only=True``) of tensors and plain values: the
starting point ``theta0``, the learned per-parameter inner rates, optionally a pool of
further starts for recurring concepts (``[K, P]``, see :mod:`streamlearn.meta.pool`), the
model layout it was trained for, the feature standardisation it was trained in, a version and
a summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from streamlearn.model.spec import ModelSpec
from streamlearn.state.checkpoint import CheckpointError, atomic_save, load_sealed

FORMAT = "streamlearn-meta-init"


@dataclass(frozen=True)
class MetaInit:
    theta0: torch.Tensor
    rates: torch.Tensor
    version: int
    scaler: dict[str, Any] | None
    summary: dict[str, Any]
    pool: torch.Tensor | None = None  # [K, P]: starts for recurring concepts, or none


def _layout(spec: ModelSpec) -> dict[str, Any]:
    return {
        "n_features": spec.n_features,
        "task": spec.task,
        "n_classes": spec.n_classes,
        "hidden": list(spec.hidden),
        "activation": spec.activation,
    }


def save_meta_init(path: str | Path, spec: ModelSpec, init: MetaInit) -> None:
    atomic_save(
        {
            "format": FORMAT,
            "layout": _layout(spec),
            "theta0": init.theta0.detach().cpu().float(),
            "rates": init.rates.detach().cpu().float(),
            "version": init.version,
            "scaler": init.scaler,
            "summary": init.summary,
            "pool": None if init.pool is None else init.pool.detach().cpu().float(),
        },
        Path(path),
    )


def load_meta_init(path: str | Path, spec: ModelSpec) -> MetaInit:
    """Load and check against the configured model; errors name the mismatch.

    >>> import tempfile, os
    >>> spec = ModelSpec(2)
    >>> p = os.path.join(tempfile.mkdtemp(), "init.pt")
    >>> save_meta_init(p, spec, MetaInit(torch.ones(3), torch.full((3,), 0.1), 4, None, {}))
    >>> load_meta_init(p, spec).version
    4
    """
    if not Path(path).is_file():
        raise ValueError(f"--meta-init {str(path)!r}: no such file")
    try:
        payload = load_sealed(Path(path))
    except CheckpointError as exc:
        raise ValueError(f"--meta-init {str(path)!r}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"--meta-init {str(path)!r}: not a streamlearn meta-init file")
    if payload["layout"] != _layout(spec):
        raise ValueError(
            f"--meta-init {str(path)!r} was trained for model {payload['layout']}, "
            f"the config describes {_layout(spec)}"
        )
    pool = payload.get("pool")
    if pool is not None and (pool.ndim != 2 or pool.shape[1] != payload["theta0"].shape[0]):
        raise ValueError(f"--meta-init {str(path)!r}: pool of shape {tuple(pool.shape)} is corrupt")
    return MetaInit(
        payload["theta0"],
        payload["rates"],
        int(payload["version"]),
        payload["scaler"],
        dict(payload["summary"]),
        pool,
    )

"""One benchmark cell in a fresh process: the protocol's "one fresh process per (learner,
stream)", so that peak RSS and imports are the cell's own."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def try_worker(
    module: str, *args: str, env: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """``python -m MODULE --worker ARGS`` from the repository root: the JSON object on the
    last line of its output, or None after printing its error (the table goes on without
    that cell)."""
    out = subprocess.run(
        [sys.executable, "-m", module, "--worker", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=None if env is None else dict(env),
    )
    if out.returncode != 0:
        print(f"{module} {' '.join(args)} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_worker(module: str, *args: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """As :func:`try_worker`; a failed run raises."""
    res = try_worker(module, *args, env=env)
    if res is None:
        raise RuntimeError(f"{module} {' '.join(args)} failed (its error is printed above)")
    return res

"""Small helpers shared by tests."""

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m streamlearn ARGS`` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "streamlearn", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def sample(reg: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's value; fails the test when the series does not exist."""
    value = reg.get_sample_value(name, labels)
    assert value is not None, f"no sample {name} {labels or ''}"
    return value

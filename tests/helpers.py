"""Small helpers shared by tests."""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from streamlearn.config import LearnerConfig, MixtureConfig, SharedConfig, merge_overrides
from streamlearn.service.daemon import Daemon
from streamlearn.wire.messages import EventBatch

ROOT = Path(__file__).resolve().parent.parent


def free_tcp_port() -> int:
    """A port nothing listens on now (the OS's pick for an ephemeral bind)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def event_batch(keys: list[str], x: object, y: object) -> EventBatch:
    """A decoded batch: ids 0..n-1, ts 0, the given keys, features and labels (NaN: none)."""
    n = len(keys)
    return EventBatch(
        [str(i) for i in range(n)],
        list(keys),
        np.zeros(n),
        np.asarray(x, dtype=np.float32),
        np.asarray(y, dtype=np.float64),
    )


# The linear model and its rates (the default before the MLP): the tests of mechanisms
# written for and measured on a linear model (drift resets, concept recall, pools, the
# 0.1.0 checkpoint) keep it.
LINEAR_LEARNER: dict[str, Any] = {
    "learning_rate": 1.0,
    "shared": {"learning_rate": 1.0, "forgetting": 0.99},
    "mixture": {"enabled": False},
}
LINEAR: dict[str, Any] = {"model": {"hidden": [], "init": "zeros"}, "learner": LINEAR_LEARNER}


def with_linear(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` on top of :data:`LINEAR` (nested sections merged)."""
    return merge_overrides(LINEAR, overrides)


def per_key_rules(**kw: Any) -> LearnerConfig:
    """A learner config with the shared model and the mixture off: the per-key rules alone,
    for the tests that hold them to their oracles one event at a time."""
    return LearnerConfig(
        shared=SharedConfig(enabled=False), mixture=MixtureConfig(enabled=False), **kw
    )


def start_in_thread(daemon: Daemon) -> tuple[threading.Thread, list[BaseException]]:
    """``daemon.run()`` in a started thread, and the list that receives what stopped it."""
    failure: list[BaseException] = []

    def body() -> None:
        try:
            daemon.run()
        except BaseException as exc:
            failure.append(exc)

    runner = threading.Thread(target=body)
    runner.start()
    return runner, failure

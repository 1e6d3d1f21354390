"""A run's metrics as a JSON-lines file, for ``streamlearn report`` without a Prometheus.

Every ``metrics.log_every_s`` the daemon appends one line: ``{"t": unix seconds, "samples":
{series: value}}`` with every ``streamlearn_*`` sample of its registry, a series written as
Prometheus writes it (``name{label="value",...}``); histogram buckets are left out (their
``_sum`` and ``_count`` stay). Rotation is the operator's (the file only grows by appends).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry


def series_name(name: str, labels: dict[str, str]) -> str:
    """``name{a="x",b="y"}`` (labels sorted), or ``name`` without labels."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def snapshot(registry: CollectorRegistry) -> dict[str, float]:
    """Every streamlearn sample of ``registry`` but histogram buckets and ``_created``."""
    out: dict[str, float] = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name.startswith("streamlearn_") and not s.name.endswith(("_bucket", "_created")):
                out[series_name(s.name, dict(s.labels))] = float(s.value)
    return out


class MetricsLog:
    """Appends registry snapshots to ``path`` at most every ``every_s`` seconds.

    >>> import tempfile
    >>> from prometheus_client import Counter
    >>> reg = CollectorRegistry()
    >>> c = Counter("streamlearn_events", "Events.", registry=reg)
    >>> log = MetricsLog(reg, Path(tempfile.mkdtemp()) / "m.jsonl", every_s=60.0)
    >>> c.inc(2); log.maybe_write(); c.inc(); log.maybe_write()  # the second is too soon
    True
    False
    >>> [orjson.loads(line)["samples"] for line in log.path.read_bytes().splitlines()]
    [{'streamlearn_events_total': 2.0}]
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        path: Path,
        every_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if every_s <= 0:
            raise ValueError(f"metrics.log_every_s must be > 0, got {every_s}")
        self.registry = registry
        self.path = path
        self.every_s = every_s
        self._clock = clock
        self._last = -float("inf")
        path.parent.mkdir(parents=True, exist_ok=True)

    def maybe_write(self, force: bool = False) -> bool:
        """Append a snapshot when one is due (or ``force``); True when one was written."""
        now = self._clock()
        if not force and now - self._last < self.every_s:
            return False
        self._last = now
        line = orjson.dumps({"t": now, "samples": snapshot(self.registry)})
        with self.path.open("ab") as fh:
            fh.write(line + b"\n")
        return True

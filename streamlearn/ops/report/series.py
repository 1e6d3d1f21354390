"""A run's metric series, from the daemon's metrics log or from a Prometheus HTTP API.

Both give a :class:`Run`: sample times and, per series (``name{label="value",...}``), its
values at those times (NaN where it was absent). Series that differ only by the scraped
process (``job``, ``instance``) are summed: replicas of one service make one run.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from streamlearn.ops.metrics_log import series_name

_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_PROCESS_LABELS = {"job", "instance"}


def _nan_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise sum where a NaN counts as absent (NaN only where both are)."""
    return np.where(np.isnan(a), b, np.where(np.isnan(b), a, a + b))


def parse_series(series: str) -> tuple[str, dict[str, str]]:
    """``'a_total{x="1"}'`` -> ``('a_total', {'x': '1'})``."""
    m = _SERIES.match(series)
    if m is None:
        raise ValueError(f"not a series name: {series!r}")
    return m.group(1), dict(_LABEL.findall(m.group(2) or ""))


@dataclass(frozen=True)
class Run:
    """Times (Unix seconds, ascending) and each series' values at them.

    >>> run = Run(np.array([0.0, 5.0]), {'q_total{reason="a"}': np.array([1.0, 2.0]),
    ...                                  'q_total{reason="b"}': np.array([0.0, 3.0])})
    >>> run.get("q_total").tolist(), run.get("q_total", reason="b").tolist()
    ([1.0, 5.0], [0.0, 3.0])
    """

    t: np.ndarray
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.t)

    def has(self, name: str) -> bool:
        return any(parse_series(s)[0] == name for s in self.values)

    def get(self, name: str, **labels: str) -> np.ndarray:
        """The sum of the series named ``name`` whose labels include ``labels`` (NaN where
        none had a value; all NaN when there is no such series)."""
        out = np.full(len(self.t), np.nan)
        for series, v in self.values.items():
            base, have = parse_series(series)
            if base == name and all(have.get(k) == val for k, val in labels.items()):
                out = _nan_add(out, v)
        return out


def from_log(path: Path) -> Run:
    """Read a metrics log (``metrics.log_path``); a torn last line (a killed run) is skipped."""
    times: list[float] = []
    rows: list[dict[str, float]] = []
    with path.open("rb") as fh:
        for line in fh:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            times.append(float(rec["t"]))
            rows.append(rec["samples"])
    if not rows:
        raise ValueError(f"{path}: no metric snapshots in it")
    names = sorted({k for r in rows for k in r})
    values = {n: np.array([r.get(n, np.nan) for r in rows], dtype=np.float64) for n in names}
    return Run(np.asarray(times), values)


def from_prometheus(
    url: str, start: float, end: float, step_s: float, selector: str = "", timeout_s: float = 30
) -> Run:
    """``query_range`` of every streamlearn series (but histogram buckets) on the Prometheus
    at ``url`` between ``start`` and ``end``; ``selector`` adds label matchers (e.g.
    ``job="streamlearn"``)."""
    matchers = '__name__=~"streamlearn_.+",__name__!~".+_bucket"'
    if selector:
        matchers += "," + selector
    query = urllib.parse.urlencode(
        {"query": "{" + matchers + "}", "start": start, "end": end, "step": step_s}
    )
    with urllib.request.urlopen(
        f"{url.rstrip('/')}/api/v1/query_range?{query}", timeout=timeout_s
    ) as r:
        body = json.loads(r.read())
    if body.get("status") != "success":
        raise ValueError(f"Prometheus at {url} answered {body.get('error', body)}")
    t = np.arange(start, end + step_s / 2, step_s)
    values: dict[str, np.ndarray] = {}
    for item in body["data"]["result"]:
        labels = {k: v for k, v in item["metric"].items() if k not in _PROCESS_LABELS}
        name = labels.pop("__name__")
        key = series_name(name, labels)
        col = np.full(len(t), np.nan)
        for ts, val in item["values"]:
            i = round((float(ts) - start) / step_s)
            if 0 <= i < len(t):
                col[i] = float(val)
        prev = values.get(key)
        values[key] = col if prev is None else _nan_add(prev, col)
    if not values:
        raise ValueError(f"Prometheus at {url} holds no streamlearn series in that range")
    return Run(t, values)

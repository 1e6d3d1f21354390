"""Replay of a CSV or JSONL file, in row order, as events of the wire contract."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamlearn.config import FileSourceConfig
from streamlearn.io.synthetic import LabelledEvent

DEFAULT_KEY = "default"


def _number(v: Any) -> Any:
    """CSV cells become floats where they parse; anything else is passed on for the decoder
    to reject with a reason (never silently coerced)."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


class FileReplay:
    """Iterates a file's rows as :class:`LabelledEvent` items.

    ``features`` defaults to every column except the label, key and id columns, in file
    order. ``withhold_label_fraction`` drops that share of labels (seeded); the true label
    stays on the item for an oracle labeller.
    """

    def __init__(self, cfg: FileSourceConfig) -> None:
        self.cfg = cfg
        self.path = Path(cfg.path)
        if not self.path.is_file():
            raise ValueError(f"source.file.path = {cfg.path!r}: no such file")
        fmt = cfg.format
        if fmt == "auto":
            fmt = "jsonl" if self.path.suffix in (".jsonl", ".ndjson", ".json") else "csv"
        self.format = fmt
        self.features = list(cfg.features) if cfg.features else self._default_features()

    def _default_features(self) -> list[str]:
        first = next(iter(self._rows()), None)
        if first is None:
            raise ValueError(f"source.file.path = {self.cfg.path!r}: the file has no rows")
        skip = {self.cfg.label_column, self.cfg.key_column, self.cfg.id_column}
        return [c for c in first if c not in skip]

    def _rows(self) -> Iterator[dict[str, Any]]:
        with self.path.open(encoding="utf-8", newline="") as fh:
            if self.format == "csv":
                yield from csv.DictReader(fh)
            else:
                for line in fh:
                    if line.strip():
                        row = orjson.loads(line)
                        yield row if isinstance(row, dict) else {"__invalid__": row}

    def __iter__(self) -> Iterator[LabelledEvent]:
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        for i, row in enumerate(self._rows()):
            key = str(row.get(cfg.key_column, DEFAULT_KEY)) if cfg.key_column else DEFAULT_KEY
            eid = (
                str(row[cfg.id_column])
                if cfg.id_column and cfg.id_column in row
                else (f"{self.path.name}:{i}")
            )
            x = [_number(row.get(f)) for f in self.features]
            ev: dict[str, Any] = {"id": eid, "key": key, "ts": float(i), "x": x}
            raw_y = _number(row.get(cfg.label_column))
            y = raw_y if raw_y is not None else float("nan")
            keep = raw_y is not None and (
                cfg.withhold_label_fraction == 0.0 or rng.random() >= cfg.withhold_label_fraction
            )
            if keep:
                ev["y"] = int(raw_y) if isinstance(raw_y, float) and raw_y.is_integer() else raw_y
            yield LabelledEvent(ev, y if isinstance(y, float) else float("nan"), -1)


def replay(cfg: FileSourceConfig, limit: int = 0) -> Iterator[LabelledEvent]:
    it = iter(FileReplay(cfg))
    return itertools.islice(it, limit) if limit else it

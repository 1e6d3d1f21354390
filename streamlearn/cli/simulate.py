"""``streamlearn simulate``: produce a synthetic family or a file replay into the events
topic, keyed by entity, at a chosen rate, with a share of labels withheld and kept aside as
ground truth (JSONL) for an oracle labeller."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson
from tqdm import tqdm

from streamlearn.config import Config, FileSourceConfig, SyntheticSourceConfig
from streamlearn.io.files import replay
from streamlearn.io.kafka import KafkaSink, ensure_topics
from streamlearn.io.synthetic import LabelledEvent, build_family


@dataclass(frozen=True)
class SimulationReport:
    produced: int
    labelled: int
    withheld: int
    seconds: float

    def line(self) -> str:
        rate = self.produced / self.seconds if self.seconds > 0 else 0.0
        return (
            f"produced {self.produced:,} events ({self.labelled:,} labelled, "
            f"{self.withheld:,} withheld) in {self.seconds:.1f} s ({rate:,.0f}/s)"
        )


def events_for(
    cfg: Config,
    *,
    file: str | None,
    events: int,
    withhold: float | None,
    label_column: str | None = None,
) -> Iterator[LabelledEvent]:
    """The stream to produce: the configured synthetic family, or ``file`` replayed."""
    if file is not None:
        fc = cfg.source.file.model_copy(update={"path": file})
        if label_column is not None:
            fc = fc.model_copy(update={"label_column": label_column})
        if withhold is not None:
            fc = fc.model_copy(update={"withhold_label_fraction": withhold})
        return replay(FileSourceConfig.model_validate(fc.model_dump()), limit=events)
    sc = cfg.source.synthetic.model_copy(update={"max_events": events})
    if withhold is not None:
        sc = sc.model_copy(update={"label_fraction": 1.0 - withhold})
    return build_family(SyntheticSourceConfig.model_validate(sc.model_dump()))


def simulate(
    cfg: Config,
    stream: Iterator[LabelledEvent],
    *,
    total: int | None,
    rate: float,
    truth: IO[bytes] | None = None,
    topic: str | None = None,
    progress: bool = True,
) -> SimulationReport:
    """Produce ``stream`` into the events topic; returns what was sent."""
    k = cfg.kafka
    topic = topic or k.topics.events
    if k.create_topics:
        ensure_topics(k, [topic])
    sink = KafkaSink(k)
    produced = labelled = withheld = 0
    started = time.monotonic()
    bar = tqdm(total=total, unit="ev", desc="simulate", disable=not progress, smoothing=0.1)
    try:
        for item in stream:
            ev = item.event
            sink.send(topic, ev["key"], orjson.dumps(ev))
            produced += 1
            if "y" in ev:
                labelled += 1
            else:
                withheld += 1
                if truth is not None:
                    truth.write(
                        orjson.dumps({"event_id": ev["id"], "key": ev["key"], "y": item.y_true})
                        + b"\n"
                    )
            if produced % 1000 == 0:
                bar.update(1000)
                if rate > 0:
                    ahead = produced / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        bar.update(produced % 1000)
        sink.flush()
    finally:
        bar.close()
        sink.close()
    return SimulationReport(produced, labelled, withheld, time.monotonic() - started)


def open_truth(path: str | None) -> IO[bytes] | None:
    if path is None:
        return None
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p.open("wb")

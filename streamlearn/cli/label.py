"""``streamlearn label``: answer the daemon's queries, by hand or from the ground truth.

Reads the query topic (its own consumer group, ``--group``), and produces answers
(``query_id``, ``y``, ``labeller``) to the labels topic keyed by the query's entity key, so an
answer lands on the partition number its event came from: the replica that asked reads it.

- Interactive: each query is shown (key, event, score and why, the current prediction, time
  left, features) and a label is read from the terminal; ``s`` skips, ``q`` quits.
- ``--oracle TRUTH``: answers from the labels ``streamlearn simulate --withhold F --truth
  TRUTH`` kept aside, after ``--delay`` seconds, flipped (or, for regression, perturbed) with
  probability (standard deviation) ``--noise``, for a share ``--answer-rate`` of the queries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson
from kafka import KafkaConsumer

from streamlearn.active.oracle import Oracle
from streamlearn.config import Config
from streamlearn.io.kafka import KafkaSink, client_settings, ensure_topics, wait_for_partitions

log = logging.getLogger("streamlearn.label")


@dataclass
class LabelReport:
    queries: int = 0
    answered: int = 0
    skipped: int = 0
    malformed: int = 0

    def line(self) -> str:
        return (
            f"read {self.queries:,} queries, sent {self.answered:,} answers, "
            f"skipped {self.skipped:,}, unreadable {self.malformed:,}"
        )


class QueryReader:
    """The query topic, decoded; unreadable records are counted and skipped."""

    def __init__(self, cfg: Config, group: str, report: LabelReport) -> None:
        k = cfg.kafka
        settings = {**client_settings(k), "client_id": f"{k.client_id}-labeller"}
        self._consumer = KafkaConsumer(
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            **settings,
        )
        wait_for_partitions(self._consumer, [k.topics.queries])
        self._consumer.subscribe([k.topics.queries])
        self._report = report

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for records in self._consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
            for r in records:
                try:
                    q = orjson.loads(r.value)
                    if not isinstance(q, dict) or "query_id" not in q or "key" not in q:
                        raise ValueError("not a query")
                except (ValueError, TypeError):
                    self._report.malformed += 1
                    continue
                out.append(q)
        self._report.queries += len(out)
        return out

    def close(self) -> None:
        self._consumer.close()


def _parse_label(text: str, task: str, n_classes: int) -> float | int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if task == "regression":
        return value
    if value != int(value) or not 0 <= value < (2 if task == "binary" else n_classes):
        return None
    return int(value)


def show_query(q: dict[str, Any], now: float) -> str:
    """A query as a person reads it."""
    left = float(q.get("expires_at", now)) - now
    p = q.get("p")
    p_s = f"{p:.3f}" if isinstance(p, float) else str(p)
    x = q.get("x", [])
    feats = ", ".join(f"{v:.4g}" for v in x[:12]) + (", ..." if len(x) > 12 else "")
    return (
        f"\nquery {q['query_id']}  key={q['key']}  event={q.get('event_id')}\n"
        f"  why: {q.get('reason')} (score {float(q.get('score', 0.0)):.3f})   "
        f"model v{q.get('model_version')} says p={p_s}   expires in {max(left, 0.0):,.0f} s\n"
        f"  x = [{feats}]"
    )


def interactive(
    cfg: Config,
    reader_poll: Callable[[float], list[dict[str, Any]]],
    send: Callable[[str, bytes], None],
    report: LabelReport,
    *,
    labeller: str,
    read_line: Callable[[str], str] = input,
    out: IO[str] | None = None,
    max_answers: int = 0,
    idle_timeout_s: float = 0.0,
) -> None:
    """Show each query and send the label typed for it."""
    m = cfg.model
    hint = (
        "a number"
        if m.task == "regression"
        else ("0 or 1" if m.task == "binary" else f"0..{m.n_classes - 1}")
    )

    def emit(text: str) -> None:
        print(text, file=out, flush=True)

    emit(f"streamlearn label: answering {cfg.kafka.topics.queries} as {labeller!r}; "
         f"type {hint}, s to skip, q to quit")  # fmt: skip
    for q in _queries(reader_poll, idle_timeout_s):
        emit(show_query(q, time.time()))
        while True:
            text = read_line(f"label ({hint}, s, q) > ").strip().lower()
            if text == "q":
                return
            if text == "s":
                report.skipped += 1
                break
            y = _parse_label(text, m.task, m.n_classes)
            if y is None:
                emit(f"  not a label: {text!r}; type {hint}")
                continue
            answer = {"query_id": q["query_id"], "y": y, "labeller": labeller}
            send(str(q["key"]), orjson.dumps(answer))
            report.answered += 1
            emit(f"  sent y={y} for {q['query_id']}")
            break
        if max_answers and report.answered >= max_answers:
            return


def oracle_loop(
    reader_poll: Callable[[float], list[dict[str, Any]]],
    send: Callable[[str, bytes], None],
    oracle: Oracle,
    report: LabelReport,
    *,
    max_answers: int = 0,
    idle_timeout_s: float = 0.0,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Answer queries from the truth, each when its delay has passed."""
    idle_since = time.monotonic()
    try:
        while not stop():
            queries = reader_poll(0.2)
            now = time.time()
            if queries:
                idle_since = time.monotonic()
                oracle.offer(queries, now)
            for key, answer in oracle.due(now):
                send(key, answer)
                report.answered += 1
                if max_answers and report.answered >= max_answers:
                    return
            idle = time.monotonic() - idle_since
            if idle_timeout_s and idle >= idle_timeout_s and oracle.waiting == 0:
                return
    finally:
        report.skipped = oracle.skipped + oracle.unknown  # not answered: by rate, or no truth


def _queries(
    reader_poll: Callable[[float], list[dict[str, Any]]], idle_timeout_s: float
) -> Iterator[dict[str, Any]]:
    idle_since = time.monotonic()
    while True:
        batch = reader_poll(0.5)
        if batch:
            idle_since = time.monotonic()
        yield from batch
        if idle_timeout_s and time.monotonic() - idle_since >= idle_timeout_s:
            return


def open_labeller_io(
    cfg: Config, group: str, report: LabelReport
) -> tuple[QueryReader, KafkaSink, Callable[[str, bytes], None]]:
    k = cfg.kafka
    if k.create_topics:
        ensure_topics(k, [k.topics.queries, k.topics.labels])
    reader = QueryReader(cfg, group, report)
    sink = KafkaSink(k)

    def send(key: str, value: bytes) -> None:
        sink.send(k.topics.labels, key or None, value)

    return reader, sink, send

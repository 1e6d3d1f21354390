"""A simulated labeller: answers queries from the ground truth ``streamlearn simulate``
withheld, after a delay, with label noise, and only for a share of the queries.

The same object serves ``streamlearn label --oracle`` (over Kafka, wall-clock seconds) and
the in-process loop of tests and benchmarks (:mod:`streamlearn.testing`, on whatever
clock the caller passes).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import orjson

from streamlearn.wire.messages import Task


def read_truth(path: str | Path) -> dict[str, float]:
    """``event_id -> y`` from the JSONL ``streamlearn simulate --truth`` writes."""
    truth: dict[str, float] = {}
    with Path(path).open("rb") as f:
        for line in f:
            if line.strip():
                row = orjson.loads(line)
                truth[str(row["event_id"])] = float(row["y"])
    return truth


class TruthFile(Mapping[str, float]):
    r"""The truth of a file ``streamlearn simulate`` may still be writing: an id not read yet
    makes it read the lines appended since (complete lines only), so a labeller started
    beside a live simulator answers for events produced after it started.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "truth.jsonl"
    >>> _ = path.write_bytes(b'{"event_id": "1", "y": 1}\n')
    >>> truth = TruthFile(path)
    >>> with path.open("ab") as f:
    ...     _ = f.write(b'{"event_id": "2", "y": 0}\n{"event_id": "3"')  # 3: half written
    >>> truth.get("2"), truth.get("3"), len(truth)
    (0.0, None, 2)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._truth: dict[str, float] = {}
        self._offset = 0
        self.refresh()

    def refresh(self) -> int:
        """Read complete lines appended since the last read; returns how many (a file not
        written yet reads as empty)."""
        if not self.path.exists():
            return 0
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        n = 0
        for line in data[:end].splitlines():
            if line.strip():
                row = orjson.loads(line)
                self._truth[str(row["event_id"])] = float(row["y"])
                n += 1
        self._offset += end
        return n

    def __getitem__(self, event_id: str) -> float:
        if event_id not in self._truth:
            self.refresh()
        return self._truth[event_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._truth)

    def __len__(self) -> int:
        return len(self._truth)


class Oracle:
    """Schedules answers to queries (mappings with ``query_id`` and ``event_id``).

    >>> o = Oracle({"e1": 1.0}, task="binary", delay_s=5.0)
    >>> o.offer([{"query_id": "q-e1", "event_id": "e1"}], now=0.0)
    >>> o.due(now=4.0), [orjson.loads(a)["y"] for _, a in o.due(now=5.0)]
    ([], [1])
    """

    def __init__(
        self,
        truth: Mapping[str, float],
        *,
        task: Task,
        n_classes: int = 2,
        delay_s: float = 0.0,
        noise: float = 0.0,
        answer_rate: float = 1.0,
        labeller: str = "oracle",
        seed: int = 0,
    ) -> None:
        if delay_s < 0:
            raise ValueError(f"--delay must be >= 0 seconds, got {delay_s}")
        if not 0.0 <= noise <= (1.0 if task != "regression" else float("inf")):
            raise ValueError(f"--noise must be a probability for classification, got {noise}")
        if not 0.0 < answer_rate <= 1.0:
            raise ValueError(f"--answer-rate must be in (0, 1], got {answer_rate}")
        self.truth = truth
        self.task = task
        self.n_classes = n_classes
        self.delay_s = delay_s
        self.noise = noise
        self.answer_rate = answer_rate
        self.labeller = labeller
        self._rng = np.random.default_rng(seed)
        self._queue: list[tuple[float, int, str, bytes]] = []  # due, order, key, answer
        self._n = 0
        self.offered = 0
        self.unknown = 0  # queries for events the truth does not hold
        self.skipped = 0  # left unanswered (answer rate)
        self.answered = 0

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def offer(self, queries: Iterable[Mapping[str, object]], now: float) -> None:
        for q in queries:
            self.offered += 1
            y = self.truth.get(str(q["event_id"]))
            if y is None:
                self.unknown += 1
                continue
            if self._rng.random() >= self.answer_rate:
                self.skipped += 1
                continue
            answer = {"query_id": q["query_id"], "y": self._noisy(y), "labeller": self.labeller}
            self._n += 1
            key = str(q.get("key", ""))
            heapq.heappush(self._queue, (now + self.delay_s, self._n, key, orjson.dumps(answer)))

    def _noisy(self, y: float) -> float | int:
        if self.task == "regression":
            return float(y + self.noise * self._rng.standard_normal()) if self.noise else y
        label = int(y)
        if self.noise and self._rng.random() < self.noise:
            others = [c for c in range(self.n_classes) if c != label]
            label = int(self._rng.choice(others))
        return label

    def due(self, now: float) -> list[tuple[str, bytes]]:
        """``(entity key, answer)`` whose time has come, oldest first."""
        out: list[tuple[str, bytes]] = []
        while self._queue and self._queue[0][0] <= now:
            _, _, key, answer = heapq.heappop(self._queue)
            out.append((key, answer))
        self.answered += len(out)
        return out

    def drain(self) -> Iterator[tuple[str, bytes]]:
        """Every answer still scheduled, whatever its time."""
        while self._queue:
            self.answered += 1
            _, _, key, answer = heapq.heappop(self._queue)
            yield key, answer

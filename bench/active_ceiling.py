"""What knowing the drifts would be worth to active learning at a tight budget, and how
much of it the daemon's own drift reactions get.

The issue-6 bar asks the best policy at a 5% budget to match random querying at 20% on the
drifting family. At 5% the model re-learns each new concept from a twentieth of the
labels, and a detector has few labels to see a drift by. The first rows give the daemon
(the same pipeline as ``bench.active_budget``, with its own surges and recall off) what no
detector can have: the true drift times of the synthetic stream, acted on ``--delays``
events late:

- **react**: the pacer queries at its maximum share (``active.pacing.max_boost`` times the
  budget, drawn at random) for ``--surge`` events, paid back from its bank afterwards, and
  the shared model's accumulator restarts (large steps again, ramping back as on an alarm).
- **recall**: at a drift into a concept seen before, the shared weights go back to those
  the stream had shortly before that concept's last segment ended (every key moves by the
  same shift, keeping its own offset).

So they read as a ceiling: what a detector with that delay, and no false alarms, could get
at most. The last rows are the daemon's own: a **surge** when the answers' evidence that the
model does no better than a coin passes ``active.pacing.alarm_nats``
(:mod:`streamlearn.active.pacing`; the table gives how late its first alarm after each
drift came, and how many alarms fell outside the first 5,000 events of a segment), and
**recall** from the concept memory (:mod:`streamlearn.learning.recall`). Prequential accuracy over
every event, medians over seeds.

    .venv/bin/python -m bench.active_ceiling [--seeds 3] [--delays 0,500,1000,2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.active_budget import run_one
from streamlearn.active.pacing import BudgetPacer
from streamlearn.config import SyntheticSourceConfig
from streamlearn.testing import LoopbackSource

SEGMENT = SyntheticSourceConfig().segment_length  # family100's (bench.active_budget)
CONCEPTS = SyntheticSourceConfig().n_concepts
SNAPSHOT_BEFORE_END = 500  # events before a segment's end where its shared weights are kept
OWN_OFF = {
    "active": {"pacing": {"surge_events": 0}},
    "learner": {"shared": {"recall": {"enabled": False}}},
}
RECALL_OFF = {"learner": {"shared": {"recall": {"enabled": False}}}}


def oracle_loop(*, react: bool, recall: bool, delay: int, surge: int) -> type[LoopbackSource]:
    """A loopback source that acts on the daemon at the stream's true drift times, and
    records when the pacer's own alarms came (``alarms``, in events)."""

    class OracleLoop(LoopbackSource):
        daemon: Any = None
        kept: dict[int, np.ndarray]
        alarms: list[int]

        def attach(self, daemon: Any) -> None:
            self.daemon = daemon
            self.kept = {}
            self.alarms = []
            pacer = daemon.active.pacer
            if pacer is not None:
                loop = self

                class Recording(BudgetPacer):
                    def alarm(self, loss: np.ndarray, keys: Sequence[str] | None = None) -> bool:
                        raised = super().alarm(loss, keys)
                        if raised:
                            loop.alarms.append(loop._events)
                        return raised

                pacer.__class__ = Recording

        def poll(self, max_records: int, timeout_s: float) -> list[Any]:
            before = self._events
            out = super().poll(max_records, timeout_s)
            if react or recall:
                self._act(before, self._events)
            return out

        def _crossed(self, before: int, after: int, mark: int) -> int | None:
            """The segment whose position ``mark`` lies in (before, after], if any."""
            seg = (after - mark) // SEGMENT
            return seg if after >= mark and before < seg * SEGMENT + mark else None

        def _act(self, before: int, after: int) -> None:
            learner = self.daemon.learner
            seg = self._crossed(before, after, SEGMENT - SNAPSHOT_BEFORE_END)
            if seg is not None:
                self.kept[seg % CONCEPTS] = learner.theta0.numpy().copy()
            seg = self._crossed(before, after, delay)
            if seg is None or seg == 0:
                return
            concept = seg % CONCEPTS
            if recall and seg >= CONCEPTS and concept in self.kept:
                learner.shift_shared(self.kept[concept] - learner.theta0.numpy())
                return
            if react:
                learner.shared.restart(ramp=True)  # as the daemon's alarm does
                self.daemon.active.pacer.start_surge(surge)

    return OracleLoop


def alarm_summary(alarms: list[int], n_events: int) -> tuple[list[int | None], int]:
    """How late the first alarm after each drift came (None: none in its first 5,000
    events), and how many alarms came at another time (false ones)."""
    late: list[int | None] = []
    for start in range(SEGMENT, n_events, SEGMENT):
        hits = [a - start for a in alarms if 0 <= a - start < 5000]
        late.append(min(hits) if hits else None)
    false = sum(1 for a in alarms if a < SEGMENT or a % SEGMENT >= 5000)
    return late, false


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--delays", default="0,500,1000,2000")
    ap.add_argument("--surge", type=int, default=2000, help="events at the maximum share")
    ap.add_argument("--budget", type=float, default=0.05)
    ap.add_argument("--policy", default="uncertainty")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    delays = [int(d) for d in args.delays.split(",")]
    pol, budget = args.policy, args.budget
    # (policy, budget, what, oracle: react / recall / delay, config overrides)
    Row = tuple[str, float, str, dict[str, Any], dict[str, Any]]
    rows: list[Row] = [
        ("random", 0.2, "-", {}, {}),
        (pol, budget, "none (own surges and recall off)", {}, OWN_OFF),
    ]
    rows += [
        (pol, budget, f"oracle react, {d} events late", {"react": True, "delay": d}, OWN_OFF)
        for d in delays
    ]
    rows.append(
        (pol, budget, "oracle recall, 0 events late", {"recall": True, "delay": 0}, OWN_OFF)
    )
    rows += [
        (
            pol,
            budget,
            f"oracle recall + react, {d} events late",
            {"react": True, "recall": True, "delay": d},
            OWN_OFF,
        )
        for d in delays[:2]
    ]
    rows.append((pol, budget, "own surges", {"delay": 0}, RECALL_OFF))
    rows.append((pol, budget, "own surges + recall (the defaults)", {"delay": 0}, {}))
    table: list[str] = []
    for policy, b, label, oracle, extra in tqdm(rows, desc="rows", file=sys.stderr):
        loop_class = None
        if oracle:
            loop_class = oracle_loop(
                react=oracle.get("react", False),
                recall=oracle.get("recall", False),
                delay=oracle["delay"],
                surge=args.surge,
            )
        runs = [
            run_one(
                "family100",
                policy,
                b,
                delay_events=100,
                seed=s,
                extra=extra,
                loop_class=loop_class,
            )
            for s in range(args.seeds)
        ]
        accs = [r["accuracy"] for r in runs]
        alarms = "-"
        if label.startswith("own"):
            parts = []
            for r in runs:
                late, false = alarm_summary(r["_loop"].alarms, r["n"])
                shown = ", ".join("-" if v is None else f"{v:,}" for v in late)
                parts.append(f"{shown} ({false} false)")
            alarms = "; ".join(parts)
        spent = statistics.median(r["labels"] for r in runs)
        table.append(
            f"| {policy} | {b:.0%} | {label} | {spent:,.0f} | {statistics.median(accs):.3f} | "
            f"{' '.join(f'{a:.3f}' for a in accs)} | {alarms} |"
        )
    print(
        f"family100, labels answered 100 events late (polls of 100 events: learned 100-200 "
        f"events after the query); drifts every {SEGMENT:,} events; median of "
        f"{args.seeds} seeds.\n"
    )
    print(
        "| policy | budget | drift reaction | labels spent | accuracy | seeds "
        "| first alarm after each drift, events (per seed) |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""JSON decoders for the events topic's records, measured before choosing (issue 9).

The same records (the wire contract's events from the default drifting family: id, key,
ts, 8 features, label) are parsed by the standard library's ``json``, ``orjson`` and
``msgspec`` (untyped, and into a typed ``Struct`` that also checks the field types), and
run through the daemon's whole decoder (``EventDecoder.decode``: parse, validate, build the
batch's arrays) with its msgspec fast path (:mod:`streamlearn.wire.fast_decode`) and without it
(orjson, then the checks in Python: the full path, which every record the fast path does
not take goes down), in polls of 2,000 records. Records per second, median over ``--repeats``,
as a ratio to ``json`` measured in the same run.

    .venv/bin/python -m bench.decoders --events 200000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import orjson

POLL = 2000


def _records(n: int) -> list[bytes]:
    from streamlearn.config import SyntheticSourceConfig
    from streamlearn.io.synthetic import build_family

    return [
        orjson.dumps(item.event)
        for item in build_family(SyntheticSourceConfig(max_events=n, n_keys=1000))
    ]


def _parsers() -> dict[str, Callable[[list[bytes]], object]]:
    from streamlearn.wire.messages import EventDecoder, Origin, RawRecord

    out: dict[str, Callable[[list[bytes]], object]] = {
        "json (stdlib)": lambda recs: [json.loads(r) for r in recs],
        "orjson": lambda recs: [orjson.loads(r) for r in recs],
    }
    try:
        import msgspec
    except ImportError:  # an optional peer: pip install '.[bench]'
        return out

    class Event(msgspec.Struct):
        id: str
        key: str
        x: list[float]
        ts: float = 0.0
        y: float | None = None

    untyped = msgspec.json.Decoder()
    typed = msgspec.json.Decoder(Event)
    out["msgspec"] = lambda recs: [untyped.decode(r) for r in recs]
    out["msgspec, typed Struct"] = lambda recs: [typed.decode(r) for r in recs]
    fast = EventDecoder(n_features=8)
    full = EventDecoder(n_features=8)
    object.__setattr__(full, "_fast", None)  # every record down the checked Python path

    def whole(dec: EventDecoder) -> Callable[[list[bytes]], object]:
        def run(recs: list[bytes]) -> object:
            return dec.decode([RawRecord(r, Origin("events", 0, i)) for i, r in enumerate(recs)])

        return run

    out["EventDecoder.decode, orjson + checks in Python"] = whole(full)
    out["EventDecoder.decode, msgspec fast path"] = whole(fast)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    records = _records(args.events)
    polls = [records[i : i + POLL] for i in range(0, len(records), POLL)]
    parsers = _parsers()
    speeds: dict[str, list[float]] = {name: [] for name in parsers}
    for _ in range(args.repeats):
        for name, parse in parsers.items():  # interleaved: drift in machine load hits all
            t0 = time.perf_counter()
            for poll in polls:
                parse(poll)
            speeds[name].append(len(records) / (time.perf_counter() - t0))
    base = statistics.median(speeds["json (stdlib)"])
    mean_len = statistics.mean(len(r) for r in records)
    print(
        f"\n{len(records):,} event records ({mean_len:.0f} bytes each), polls of {POLL:,}, "
        f"median of {args.repeats} runs\n"
    )
    print("| decoder | records/s (median) | min - max | x json |")
    print("|---|---|---|---|")
    for name, runs in speeds.items():
        med = statistics.median(runs)
        print(f"| {name} | {med:,.0f} | {min(runs):,.0f} - {max(runs):,.0f} | {med / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

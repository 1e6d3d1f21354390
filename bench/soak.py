"""Soak: the daemon in process for a fixed time at a fixed rate over many distinct keys;
does its memory stay flat once every key has been seen, and do its queues stay bounded?

    .venv/bin/python -m bench.soak --minutes 20 --rate 5000 --keys 100000 --max-keys 20000

The embedded synthetic family (drifting, recurring concepts) with half the labels withheld
and active learning on (nobody answers, so every query expires: the pending store must hold
its bound). With ``--max-keys`` below ``--keys``, keys are evicted to the spill store (in a
temporary checkpoint directory, checkpoints every 10 s) and restored all the time. RSS is
read from /proc every ``--every`` seconds; "warm-up" ends when the keys in memory reach
their bound (every key, or ``--max-keys``) or after a quarter of the run, whichever is
later; growth is the last sample against the first one after warm-up. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=5000.0, help="events per second")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--max-keys", type=int, default=0, help="learner.max_keys (0: no bound)")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    args = ap.parse_args(argv)
    import torch

    from streamlearn.config import load_config
    from streamlearn.service.daemon import Daemon
    from streamlearn.state.residency import SPILL_FILE

    torch.set_num_threads(1)
    ck_dir = tempfile.mkdtemp(prefix="soak-")
    cfg = load_config(
        overrides={
            "source": {
                "synthetic": {"n_keys": args.keys, "rate": args.rate, "label_fraction": 0.5}
            },
            "active": {"enabled": True, "budget": 0.05, "expiry_s": 60.0, "max_pending": 20_000},
            "learner": {"max_keys": args.max_keys},
            "checkpoint": {"dir": ck_dir, "every_seconds": 10.0, "every_events": 10**9},
        },
        env={},
    )
    daemon = Daemon(cfg, CollectorRegistry())
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not stop.wait(args.every):
            active = daemon.active
            samples.append(
                {
                    "t": time.monotonic() - started,
                    "rss": rss_mb(),
                    "events": daemon.events_seen,
                    "keys": daemon.learner.n_keys,
                    "pending": len(active.pending) if active is not None else 0,
                    "detectors": len(daemon.outcomes.drift._per_key),
                    "evicted": res.evicted if (res := daemon.residency) else 0,
                    "restored": res.restored if res else 0,
                    "spill_mb": _size_mb(Path(ck_dir) / SPILL_FILE),
                }
            )

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timer = threading.Timer(args.minutes * 60, daemon.request_stop)
    timer.start()
    daemon.run()
    stop.set()
    timer.cancel()
    quarter = args.minutes * 15
    bound = min(args.keys, args.max_keys or args.keys)
    warm = [s for s in samples if s["keys"] >= 0.9 * bound and s["t"] >= quarter]
    first, last = (warm[0], samples[-1]) if warm else (samples[0], samples[-1])
    peak = max(s["rss"] for s in samples)
    growth = (last["rss"] - first["rss"]) / first["rss"]
    print(
        f"\nsoak: {args.minutes:g} min at {args.rate:,.0f} events/s over {args.keys:,} keys; "
        f"{len(samples)} samples every {args.every:g} s\n"
    )
    print("| | after warm-up | end | peak |")
    print("|---|---|---|---|")
    print(f"| time (s) | {first['t']:.0f} | {last['t']:.0f} | - |")
    print(f"| events | {first['events']:,} | {last['events']:,} | - |")
    print(f"| keys in memory | {first['keys']:,} | {last['keys']:,} | - |")
    print(f"| keys evicted (total) | {first['evicted']:,} | {last['evicted']:,} | - |")
    print(f"| keys restored (total) | {first['restored']:,} | {last['restored']:,} | - |")
    print(f"| spill store (MB on disk) | {first['spill_mb']:.1f} | {last['spill_mb']:.1f} | - |")
    print(f"| per-key drift detectors | {first['detectors']:,} | {last['detectors']:,} | - |")
    print(
        f"| pending queries (bound {cfg.active.max_pending:,}) | {first['pending']:,} | "
        f"{last['pending']:,} | {max(s['pending'] for s in samples):,} |"
    )
    print(f"| RSS (MB) | {first['rss']:.0f} | {last['rss']:.0f} | {peak:.0f} |")
    print(f"\nRSS growth after warm-up: {growth:+.1%} (the bar: under 5%)")
    shutil.rmtree(ck_dir, ignore_errors=True)
    return 0


def _size_mb(path: Path) -> float:
    """The spill database with its write-ahead log."""
    files = [path, path.with_name(path.name + "-wal")]
    return sum(f.stat().st_size for f in files if f.exists()) / 2**20


if __name__ == "__main__":
    raise SystemExit(main())

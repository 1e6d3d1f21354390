"""A burst of scrapes while the loop runs: every one is answered (the listen backlog holds
the burst instead of dropping connections for the clients to retry into a timeout)."""

import subprocess
import threading
import time
import urllib.request

from prometheus_client import CollectorRegistry

from streamlearn.config import load_config
from streamlearn.ops.http import ServiceHTTP
from streamlearn.service.daemon import Daemon

SCRAPES = 200


def _listen_backlog(port: int) -> int:
    """The backlog of the socket listening on ``port`` (``ss`` shows it as Send-Q)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[2])


def test_200_concurrent_scrapes_while_the_loop_runs_are_all_answered():
    cfg = load_config(overrides={"source": {"synthetic": {"n_keys": 50}}}, env={})
    reg = CollectorRegistry()
    daemon = Daemon(cfg, reg)
    srv = ServiceHTTP(reg, "127.0.0.1", 0, daemon.ready)
    port = srv.start()
    loop = threading.Thread(target=daemon.run)
    loop.start()
    statuses: list[int] = []
    failures: list[str] = []
    start = threading.Barrier(SCRAPES)

    def scrape() -> None:
        start.wait()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                r.read()
                statuses.append(r.status)
        except OSError as exc:
            failures.append(repr(exc))

    try:
        assert _listen_backlog(port) >= SCRAPES
        while daemon.events_seen == 0:
            time.sleep(0.01)
        before = daemon.events_seen
        started = time.monotonic()
        clients = [threading.Thread(target=scrape) for _ in range(SCRAPES)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=60)
        took = time.monotonic() - started
        during = daemon.events_seen - before
    finally:
        daemon.request_stop()
        loop.join(timeout=60)
        srv.stop()
    print(
        f"{len(statuses)} of {SCRAPES} scrapes answered in {took:.1f}s; {during} events meanwhile"
    )
    assert not failures, failures[:3]
    assert statuses == [200] * SCRAPES
    assert during > 0

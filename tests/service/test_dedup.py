"""An event id seen again within the window is dropped before prediction and learning, and
the window survives a restart; ``source.dedup_window: 0`` learns every copy."""

from typing import Any

from prometheus_client import CollectorRegistry

from streamlearn.config import load_config
from streamlearn.io.memory import MemorySink, MemorySource
from streamlearn.service.daemon import Daemon
from tests.helpers import sample
from tests.io.test_kafka import _events


def _daemon(events, tmp_path, window=None, topic="events"):
    over: dict[str, Any] = {
        "source": {"batch_size": 100},
        "checkpoint": {"dir": str(tmp_path / "ck")},
    }
    if window is not None:
        over["source"]["dedup_window"] = window
    reg = CollectorRegistry()
    sink = MemorySink()
    cfg = load_config(overrides=over, env={})
    return Daemon(cfg, reg, source=MemorySource(iter(events), topic=topic), sink=sink), reg, sink


def test_a_repeated_id_is_learned_once_even_across_a_restart(tmp_path):
    events = _events(600)
    first, reg, sink = _daemon([*events[:400], *events[100:200]], tmp_path)
    first.run()
    assert sample(reg, "streamlearn_events_total") == 400
    assert sample(reg, "streamlearn_duplicate_events_total") == 100
    assert sink.n_predictions == 400
    labels = first.labels_seen
    # A producer's retry after the restart: the window came back with the checkpoint.
    # (Another topic: the checkpoint's position in the first does not skip these.)
    second, reg2, sink2 = _daemon([*events[300:600]], tmp_path, topic="retries")
    second.run()
    assert sample(reg2, "streamlearn_duplicate_events_total") == 100
    assert sink2.n_predictions == 200
    assert second.labels_seen == labels + sum("y" in e for e in events[400:600])


def test_the_window_is_bounded_and_can_be_turned_off(tmp_path):
    events = _events(300)
    bounded, reg, _ = _daemon([*events, *events[:50], *events[250:]], tmp_path / "a", window=100)
    bounded.run()
    # The first 50 fell out of a 100-id window; the last 50 are still in it.
    assert sample(reg, "streamlearn_duplicate_events_total") == 50
    assert len(bounded.recent_ids or ()) == 100
    off, reg_off, sink = _daemon([*events, *events], tmp_path / "b", window=0)
    off.run()
    assert sample(reg_off, "streamlearn_duplicate_events_total") == 0
    assert sink.n_predictions == 600

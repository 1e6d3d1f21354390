"""A checkpoint written by release 0.1.0 (before checksums and the package layout) still
loads, and the daemon resumes from it as if it had never stopped.

The fixture was written by 0.1.0's daemon: the embedded synthetic stream with
``source: {batch_size: 250, synthetic: {n_keys: 5, seed: 3, rate: 0}}``,
``checkpoint.every_events: 1000``, stopped after 2,000 events."""

import shutil
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from streamlearn.config import load_config
from streamlearn.service.daemon import Daemon
from streamlearn.state.checkpoint import CheckpointStore
from tests.helpers import with_linear

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoint-0.1.0.pt"


def _daemon(ck_dir: Path) -> Daemon:
    cfg = load_config(  # the configuration 0.1.0 wrote it under: its default, linear
        overrides=with_linear(
            {
                "source": {"batch_size": 250, "synthetic": {"n_keys": 5, "seed": 3, "rate": 0}},
                "checkpoint": {"dir": str(ck_dir), "every_events": 1000},
            }
        ),
        env={},
    )
    return Daemon(cfg, CollectorRegistry())


def test_a_0_1_0_checkpoint_loads_and_resumes_like_an_uninterrupted_run(tmp_path):
    ck_dir = tmp_path / "ck"
    ck_dir.mkdir()
    shutil.copy(FIXTURE, ck_dir / "checkpoint-00000002.pt")
    assert FIXTURE.read_bytes()[:2] == b"PK"  # the unsealed format of 0.1.0
    resumed = _daemon(ck_dir)
    assert resumed.resumed_from == 2
    assert (resumed.events_seen, resumed.labels_seen, resumed.learner.n_keys) == (2000, 2000, 5)
    resumed.run(max_events=3000)
    straight = _daemon(tmp_path / "straight")
    straight.run(max_events=3000)
    assert resumed.labels_seen == straight.labels_seen == 3000
    for key in straight.learner.keys.names():
        np.testing.assert_allclose(
            resumed.learner.params_of(key), straight.learner.params_of(key), rtol=1e-5, atol=1e-6
        )
    # What it writes now is sealed, and loads.
    latest = CheckpointStore(ck_dir).load_latest()
    assert latest is not None
    assert latest.path.read_bytes().startswith(b"streamlearn-sealed 1\n")

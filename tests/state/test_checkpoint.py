"""Checkpoints: atomic, versioned, safe to load, and a resumed run equals an uninterrupted one."""

import gc
import os
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from prometheus_client import CollectorRegistry

from streamlearn.config import Config, load_config
from streamlearn.service.daemon import Daemon
from streamlearn.state import checkpoint
from streamlearn.state.checkpoint import FORMAT_VERSION, CheckpointError, CheckpointStore
from tests.helpers import run_cli, sample


def test_save_keeps_the_newest_and_leaves_no_temp_files(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for i in range(5):
        store.save({"w": torch.full((3,), float(i))}, {"events:0": i * 10})
    assert [p.name for p in store.files()] == ["checkpoint-00000004.pt", "checkpoint-00000005.pt"]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    ck = store.load_latest()
    assert ck is not None
    assert ck.offsets == {"events:0": 40}
    assert ck.state["w"].tolist() == [4.0, 4.0, 4.0]
    # A new store in the same directory continues the numbering.
    assert CheckpointStore(tmp_path).save({}, {}).name == "checkpoint-00000006.pt"


def test_corrupt_newest_falls_back_to_previous(tmp_path, caplog):
    store = CheckpointStore(tmp_path, keep=3)
    store.save({"v": torch.tensor([1.0])}, {"e:0": 1})
    newest = store.save({"v": torch.tensor([2.0])}, {"e:0": 2})
    newest.write_bytes(newest.read_bytes()[:50])  # truncated, as by a full disk
    ck = store.load_latest()
    assert ck is not None
    assert ck.sequence == 1
    assert ck.state["v"].tolist() == [1.0]
    assert "skipping checkpoint checkpoint-00000002.pt" in caplog.text


def test_changed_tensor_bytes_are_caught_by_the_checksum(tmp_path, caplog):
    store = CheckpointStore(tmp_path, keep=3)
    store.save({"w": torch.full((4,), 0.25)}, {"e:0": 1})
    newest = store.save({"w": torch.full((4,), 0.5)}, {"e:0": 2})
    data = newest.read_bytes()
    weight = torch.tensor([0.5]).numpy().tobytes()
    assert data.count(weight * 4) == 1  # the tensor's storage
    big = torch.tensor([1e6]).numpy().tobytes()
    newest.write_bytes(data.replace(weight * 4, weight * 3 + big))
    ck = store.load_latest()
    assert ck is not None
    assert ck.sequence == 1
    assert ck.state["w"].tolist() == [0.25] * 4
    assert "skipping checkpoint checkpoint-00000002.pt" in caplog.text
    assert "checksum mismatch" in caplog.text


def test_any_changed_byte_is_caught(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    path = store.save({"w": torch.arange(64, dtype=torch.float32)}, {"e:0": 1})
    data = path.read_bytes()
    for pos in range(0, len(data), max(1, len(data) // 97)):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        path.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError, match="none of the 1 checkpoints"):
            store.load_latest()  # a change at any byte is noticed
    path.write_bytes(data)
    assert store.load_latest() is not None


def test_a_flipped_checkpoint_falls_back_to_the_previous_one_at_start(tmp_path):
    """64 bytes flipped in the middle of the newest checkpoint: the daemon names the file
    and the reason, resumes from the one before, and runs (it used to exit 2 every time)."""
    ck_dir = tmp_path / "ck"
    env = {
        "STREAMLEARN_CHECKPOINT__DIR": str(ck_dir),
        "STREAMLEARN_CHECKPOINT__EVERY_EVENTS": "1000",
        "STREAMLEARN_METRICS__ENABLED": "false",
    }
    first = run_cli("run", "--max-events", "5000", env=env)
    assert first.returncode == 0, first.stderr
    files = CheckpointStore(ck_dir).files()
    assert len(files) >= 2
    newest = files[-1]
    data = bytearray(newest.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    newest.write_bytes(bytes(data))
    again = run_cli("run", "--max-events", "6000", env=env)
    assert again.returncode == 0, again.stderr
    previous = int(files[-2].stem.split("-")[1])
    assert f"skipping checkpoint {newest.name}" in again.stderr
    assert "checksum mismatch" in again.stderr
    assert f"resumed from checkpoint {previous}" in again.stderr


def test_unsynced_checkpoints_are_kept_apart_and_not_trusted_after_a_reboot(
    tmp_path, monkeypatch, caplog
):
    fsynced: list[int] = []
    real_fsync = os.fsync

    def counted_fsync(fd: int) -> None:
        fsynced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counted_fsync)
    store = CheckpointStore(tmp_path, keep=2)
    store.save({"v": torch.tensor([1.0])}, {"e:0": 1})
    assert len(fsynced) == 2  # the file and its directory
    for i in range(2, 6):
        store.save({"v": torch.tensor([float(i)])}, {"e:0": i}, durable=False)
    assert len(fsynced) == 2
    # The newest two, and the newest durable one to fall back to.
    assert store.retained() == [1, 4, 5]
    ck = store.load_latest()
    assert ck is not None
    assert ck.sequence == 5  # the same boot: page cache and disk agree

    monkeypatch.setattr(checkpoint, "boot_id", lambda: "another-boot")
    ck = CheckpointStore(tmp_path, keep=2).load_latest()
    assert ck is not None
    assert ck.sequence == 1
    assert ck.state["v"].tolist() == [1.0]
    assert "written without fsync before the machine restarted" in caplog.text

    # Where the system gives no boot id, nothing tells a reboot: every save is fsynced.
    monkeypatch.setattr(checkpoint, "boot_id", lambda: None)
    store.save({"v": torch.tensor([6.0])}, {"e:0": 6}, durable=False)
    assert len(fsynced) == 4


def test_after_a_lost_machine_the_daemon_replays_from_the_fsynced_checkpoint(tmp_path, monkeypatch):
    """With ``checkpoint.fsync_every_s`` the checkpoints between fsyncs are not trusted
    after a reboot; the daemon resumes from the last fsynced one and replays the events
    after it from the source: the weights end as an uninterrupted run's."""
    off = {"global": False, "per_key": False}

    def cfg(directory: Path) -> Config:
        c = _cfg(directory, **off)
        ck = c.checkpoint.model_copy(update={"every_events": 500, "fsync_every_s": 3600.0})
        return c.model_copy(update={"checkpoint": ck})

    whole = Daemon(cfg(tmp_path / "a"), CollectorRegistry())
    whole.run(max_events=6000)
    killed = Daemon(cfg(tmp_path / "b"), CollectorRegistry())
    while killed.events_seen < 3500:  # no stop: the last checkpoint is not fsynced
        killed.step()
    saved = CheckpointStore(tmp_path / "b").retained()
    assert saved == [1, 5, 6, 7]  # the first (fsynced) and the newest three

    assert Daemon(cfg(tmp_path / "b"), CollectorRegistry()).events_seen == 3500
    monkeypatch.setattr(checkpoint, "boot_id", lambda: "another-boot")
    resumed = Daemon(cfg(tmp_path / "b"), CollectorRegistry())
    assert resumed.resumed_from == 1
    assert resumed.events_seen == 500
    resumed.run(max_events=6000)
    assert resumed.labels_seen == whole.labels_seen == 6000
    _same_weights(resumed, whole)


def _daemon_reporting_every_poll(tmp_path: Path) -> Daemon:
    cfg = _cfg(tmp_path)
    service = cfg.service.model_copy(update={"status_interval_s": 1e-9})
    return Daemon(cfg.model_copy(update={"service": service}), CollectorRegistry())


def test_the_loop_freezes_start_up_objects_and_gives_them_back(tmp_path):
    seen: list[int] = []
    daemon = _daemon_reporting_every_poll(tmp_path)
    ambient = gc.get_freeze_count()  # 375 in one pytest-xdist worker on the GPU machine's image
    if ambient:
        gc.unfreeze()
    try:
        daemon.run(max_events=1000, status=lambda _: seen.append(gc.get_freeze_count()))
        assert seen[0] > 10_000  # torch's and the libraries' objects, out of the collector's way
        assert gc.get_freeze_count() == 0
    finally:
        if ambient:
            gc.freeze()


def test_the_loop_leaves_an_embedding_process_s_own_freeze_alone(tmp_path):
    seen: list[int] = []
    daemon = _daemon_reporting_every_poll(tmp_path)
    ambient = gc.get_freeze_count()
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        assert before > ambient
        daemon.run(max_events=1000, status=lambda _: seen.append(gc.get_freeze_count()))
        assert set(seen) <= set(range(before + 1))  # never froze more, never unfroze
        assert 0 < gc.get_freeze_count() <= before
    finally:
        if not ambient:
            gc.unfreeze()


def test_refuses_pickles_and_foreign_versions(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "checkpoint-00000001.pt").write_bytes(b"")
    torch.save(
        {
            "format": "streamlearn-checkpoint",
            "format_version": FORMAT_VERSION,
            "sequence": 2,
            "offsets": {},
            "state": {"x": Evil()},
        },
        tmp_path / "checkpoint-00000002.pt",
    )
    torch.save(
        {
            "format": "streamlearn-checkpoint",
            "format_version": 999,
            "sequence": 3,
            "offsets": {},
            "state": {},
        },
        tmp_path / "checkpoint-00000003.pt",
    )
    with pytest.raises(CheckpointError, match="none of the 3 checkpoints"):
        CheckpointStore(tmp_path).load_latest()


def test_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        CheckpointStore(blocker / "sub").save({}, {})


def _cfg(directory: Path, **drift: object) -> Config:
    return load_config(
        overrides={
            "source": {"batch_size": 250, "synthetic": {"n_keys": 20, "rate": 0}},
            "checkpoint": {"dir": str(directory), "every_events": 1000},
            "drift": drift,
        },
        env={},
    )


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path):
    # Detection off here; with it on: test_resume_is_exact_with_drift_detection_on.
    off = {"global": False, "per_key": False}
    whole = Daemon(_cfg(tmp_path / "a", **off), CollectorRegistry())
    whole.run(max_events=6000)

    first = Daemon(_cfg(tmp_path / "b", **off), CollectorRegistry())
    first.run(max_events=3500)
    second = Daemon(_cfg(tmp_path / "b", **off), CollectorRegistry())
    assert second.resumed_from is not None
    assert second.events_seen == 3500
    second.run(max_events=6000)
    assert second.labels_seen == whole.labels_seen == 6000
    for key in whole.learner.keys.names():
        torch.testing.assert_close(second.learner.params_of(key), whole.learner.params_of(key))
    assert second.regret == pytest.approx(whole.regret, rel=1e-6)


def test_checkpoint_failure_is_not_ready_and_recovers(tmp_path):
    target = tmp_path / "ck"
    target.write_text("a file where the directory should be")
    daemon = Daemon(_cfg(target), CollectorRegistry())
    daemon._running = True
    daemon.step()
    assert not daemon.checkpoint()
    ok, why = daemon.ready()
    assert not ok
    assert "cannot write checkpoint" in why
    target.unlink()
    assert daemon.checkpoint()
    assert daemon.ready() == (True, "ready")


def test_quiet_source_still_checkpoints_its_tail_on_time(tmp_path):
    cfg = load_config(
        overrides={
            "source": {"batch_size": 100, "synthetic": {"n_keys": 5, "max_events": 150}},
            "checkpoint": {"dir": str(tmp_path), "every_events": 10_000, "every_seconds": 0.5},
        },
        env={},
    )
    daemon = Daemon(cfg, CollectorRegistry())
    daemon.step()
    daemon.step()
    assert CheckpointStore(tmp_path).load_latest() is None  # not due yet
    time.sleep(0.6)
    assert daemon.step() == 0  # nothing more to read, but the cadence is due
    ck = CheckpointStore(tmp_path).load_latest()
    assert ck is not None
    assert sum(ck.offsets.values()) == 150


def _whole_and_resumed(
    cfg: Callable[[Path], Config], tmp_path: Path, *, stop_at: int, end: int
) -> tuple[Daemon, Daemon]:
    """One uninterrupted run to ``end``, and one stopped at ``stop_at`` and resumed from its
    checkpoint by a fresh daemon."""
    whole = Daemon(cfg(tmp_path / "a"), CollectorRegistry())
    whole.run(max_events=end)
    Daemon(cfg(tmp_path / "b"), CollectorRegistry()).run(max_events=stop_at)
    resumed = Daemon(cfg(tmp_path / "b"), CollectorRegistry())
    assert resumed.events_seen == stop_at
    resumed.run(max_events=end)
    return whole, resumed


def _same_weights(a: Daemon, b: Daemon) -> None:
    for key in b.learner.keys.names():
        torch.testing.assert_close(a.learner.params_of(key), b.learner.params_of(key))
    torch.testing.assert_close(a.learner.theta0, b.learner.theta0)


def test_resume_is_exact_with_curvature_controller_and_lambda_tuning(tmp_path):
    """The step-size watch (its ring, cap and PI state), the tuned lambda with its per-key
    directions, and the shared model all come back from the checkpoint: stopping and
    resuming changes no weight."""

    def cfg(directory: Path) -> Config:
        return load_config(
            overrides={
                "source": {
                    "batch_size": 250,
                    "synthetic": {"n_keys": 20, "rate": 0, "label_fraction": 0.5},
                },
                "checkpoint": {"dir": str(directory), "every_events": 1000},
                "drift": {"global": False, "per_key": False},
                "learner": {
                    "curvature": {"enabled": True, "every_labels": 400, "window": 64},
                    "controller": {"enabled": True, "signal": "loss_trend"},
                },
                "active": {
                    "enabled": True,
                    "policy": "combined",
                    "sensitivity_every_labels": 100,
                    "sensitivity_min_interval_s": 0,  # by labels alone: no wall clock
                },
            },
            env={},
        )

    whole, second = _whole_and_resumed(cfg, tmp_path, stop_at=3500, end=6000)
    watch = whole.learner.sizer.watch
    assert watch is not None
    assert watch.refreshes >= 2
    assert watch.pi is not None
    assert whole.active is not None
    assert whole.active.watch is not None
    assert whole.active.watch.refreshes > 5
    assert second.learner.proximal_lambda == pytest.approx(whole.learner.proximal_lambda)
    assert second.learner.sizer.eta == pytest.approx(whole.learner.sizer.eta)
    _same_weights(second, whole)
    # The query policy (its random draws included) resumes too: the same events are asked.

    def asked(d: Daemon) -> list[str]:
        assert d.active is not None
        return [q["query_id"] for q in d.active.pending.state_dict()["open"]]  # type: ignore[attr-defined]

    assert asked(second) == asked(whole)
    assert len(asked(whole)) > 100


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley", "kswin"])
def test_resume_is_exact_with_drift_detection_on(tmp_path, detector):
    """Drift detectors (river's ADWIN through its own binary state, PageHinkley's and
    KSWIN's numbers, windows and random state) come back from the checkpoint: the resumed
    run detects the same drifts and ends with the same weights."""

    def cfg(directory: Path) -> Config:
        return load_config(
            overrides={
                "source": {
                    "batch_size": 250,
                    "synthetic": {"n_keys": 10, "rate": 0, "segment_length": 2000},
                },
                "checkpoint": {"dir": str(directory), "every_events": 1000},
                "drift": {"detector": detector, "ph_threshold": 20.0, "kswin_alpha": 0.05},
                # Without the shared model tracking the concept the keys' errors jump at
                # each drift, so every detector has drifts to carry across the restart.
                "learner": {"shared": {"enabled": False}},
            },
            env={},
        )

    whole, second = _whole_and_resumed(cfg, tmp_path, stop_at=4500, end=8000)
    drifts = whole.outcomes.drift
    assert drifts.n_global + drifts.n_key > 0
    assert (second.outcomes.drift.n_global, second.outcomes.drift.n_key) == (
        drifts.n_global,
        drifts.n_key,
    )
    _same_weights(second, whole)


def test_a_full_disk_is_not_ready_keeps_running_and_resumes_when_space_returns(tmp_path):
    """The kernel refuses the write (RLIMIT_FSIZE: writes past 1 KB fail with EFBIG, as a
    full disk fails them with ENOSPC): the checkpoint fails cleanly, nothing is committed,
    no temp file is left, the daemon says why it is not ready and keeps learning; with the
    limit lifted the next checkpoint succeeds."""
    ck = tmp_path / "ck"
    reg = CollectorRegistry()
    daemon = Daemon(_cfg(ck), reg)
    daemon._running = True
    daemon.step()
    assert daemon.checkpoint()
    saved = sample(reg, "streamlearn_checkpoints_total", {"outcome": "saved"})
    commits = sample(reg, "streamlearn_offset_commits_total", {"outcome": "ok"})
    daemon.step()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
        assert not daemon.checkpoint()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    ok, why = daemon.ready()
    assert not ok
    assert "cannot write checkpoint" in why
    assert "too large" in why.lower()
    assert sample(reg, "streamlearn_checkpoints_total", {"outcome": "failed"}) == 1
    assert sample(reg, "streamlearn_offset_commits_total", {"outcome": "ok"}) == commits
    assert not list(ck.glob(".*.tmp"))
    daemon.step()  # still learning
    assert daemon.checkpoint()
    assert daemon.ready() == (True, "ready")
    assert sample(reg, "streamlearn_checkpoints_total", {"outcome": "saved"}) == saved + 1
    latest = CheckpointStore(ck).load_latest()
    assert latest is not None
    assert latest.state["totals"]["events"] == daemon.events_seen

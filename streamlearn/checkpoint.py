"""Atomic, versioned checkpoints tied to source offsets (design §7).

A checkpoint is one ``torch.save`` file holding only tensors, strings, numbers, lists and
dicts, loaded back with ``torch.load(weights_only=True)``: nothing is unpickled. It is
written to a temporary file in the same directory, flushed and fsynced, then renamed over
its final name, so a crash leaves either the old or the new checkpoint, never half of one.
Files are numbered (``checkpoint-00000042.pt``); the newest ``keep`` are retained, and a
checkpoint that fails to load or validate is skipped (with a warning) for the one before it.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import torch

FORMAT = "streamlearn-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")

log = logging.getLogger("streamlearn.checkpoint")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or none usable could be read."""


@dataclass(frozen=True)
class Checkpoint:
    """One loaded checkpoint: its sequence number, offsets and the rest of the state."""

    sequence: int
    offsets: dict[str, int]
    state: dict[str, Any]
    path: Path


class CheckpointStore:
    """Numbered checkpoint files in one directory.

    >>> import tempfile
    >>> store = CheckpointStore(tempfile.mkdtemp(), keep=2)
    >>> for i in range(3):
    ...     _ = store.save({"x": torch.tensor([float(i)])}, offsets={"events:0": i})
    >>> ck = store.load_latest()
    >>> ck.sequence, ck.offsets, ck.state["x"].tolist(), len(store.files())
    (3, {'events:0': 2}, [2.0], 2)
    """

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"checkpoint.keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self._sequence = 0
        self._durable: Path | None = None  # the newest fsynced file, kept through rotation
        self._listing: list[Path] | None = None

    def files(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=lambda p: p.name)

    def _kept(self) -> list[Path]:
        """:meth:`files` as this store last left them (listed once: a listing cost about
        as much as writing the state, three times per checkpoint when checkpoints come
        every poll)."""
        if self._listing is None:
            self._listing = self.files()
        return self._listing

    def retained(self) -> list[int]:
        """Sequence numbers of the checkpoint files kept, oldest first."""
        return [int(m.group(1)) for p in self._kept() if (m := _NAME.match(p.name))]

    def save(
        self,
        state: dict[str, Any],
        offsets: dict[str, int],
        *,
        durable: bool = True,
        before_rename: Callable[[], None] | None = None,
    ) -> Path:
        """Write a new checkpoint atomically; returns its path. Raises CheckpointError.

        ``durable=False`` skips the fsyncs: the file survives a killed process but maybe not
        a lost machine. It records the machine's boot id, and is not trusted after another
        boot (torch.load does not check its bytes: a torn file could load); rotation keeps
        the newest durable file besides the ``keep`` newest, for loading to fall back to.
        Where there is no boot id to record, every checkpoint is durable.

        ``before_rename`` runs once the file is written and before it takes its name (the
        daemon waits there for its outputs' acks: the wait overlaps the write, and no
        checkpoint is visible before the outputs it covers are delivered); when it raises,
        the file is removed and the error goes on."""
        existing = self._kept()
        last = int(_NAME.match(existing[-1].name).group(1)) if existing else 0  # type: ignore[union-attr]
        seq = max(self._sequence, last) + 1
        boot = boot_id()
        durable = durable or boot is None
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "sequence": seq,
            "created_at": time.time(),
            "offsets": dict(offsets),
            "durable": durable,
            "boot_id": boot or "",
            "state": state,
        }
        final = self.directory / f"checkpoint-{seq:08d}.pt"
        try:
            atomic_save(payload, final, fsync=durable, before_rename=before_rename)
        except OSError as exc:
            raise CheckpointError(
                f"cannot write checkpoint in {str(self.directory)!r}: {exc.strerror or exc}"
            ) from exc
        self._sequence = seq
        if durable:
            self._durable = final
        existing.append(final)
        for old in existing[: -self.keep]:
            if old != self._durable:
                old.unlink(missing_ok=True)
                existing.remove(old)
        return final

    def load_latest(self) -> Checkpoint | None:
        """The newest checkpoint that loads and validates; None when there is none at all."""
        files = self._listing = self.files()
        for path in reversed(files):
            try:
                ck = self._load(path)
            except CheckpointError as exc:
                log.warning("skipping checkpoint %s: %s", path.name, exc)
                continue
            self._sequence = max(self._sequence, ck.sequence)
            return ck
        if files:
            raise CheckpointError(
                f"none of the {len(files)} checkpoints in {str(self.directory)!r} is usable"
            )
        return None

    @staticmethod
    def _load(path: Path) -> Checkpoint:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for damaged files
            raise CheckpointError(f"unreadable ({type(exc).__name__}: {exc})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise CheckpointError("not a streamlearn checkpoint")
        if payload.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"format version {payload.get('format_version')!r}, this build reads "
                f"{FORMAT_VERSION}"
            )
        offsets = payload.get("offsets")
        if not isinstance(offsets, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in offsets.items()
        ):
            raise CheckpointError("offsets are malformed")
        if payload.get("durable") is False and payload.get("boot_id") != boot_id():
            raise CheckpointError("written without fsync before the machine restarted")
        return Checkpoint(int(payload["sequence"]), offsets, payload["state"], path)


def json_tensor(value: Any) -> torch.Tensor:
    """Plain data (str keys; no NaN or infinity: JSON has none) as one uint8 tensor of its
    orjson text. ``torch.save`` writes a tensor's bytes as they are, while it pickles a list
    or dict object by object through a Python hook: 1,000 key names cost more than all the
    weights.

    >>> from_json_tensor(json_tensor({"k": [1, "a"]}))
    {'k': [1, 'a']}
    """
    return torch.frombuffer(bytearray(orjson.dumps(value)), dtype=torch.uint8)


def from_json_tensor(tensor: torch.Tensor) -> Any:
    return orjson.loads(tensor.numpy().tobytes())


@functools.cache
def boot_id() -> str | None:
    """This boot of the machine (Linux), None where the system does not say."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def atomic_save(
    payload: dict[str, Any],
    path: Path,
    *,
    fsync: bool = True,
    before_rename: Callable[[], None] | None = None,
) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, rename, fsync the folder:
    readers see the old file or the new one, never a torn one (without ``fsync``: as long
    as the machine stays up). Raises OSError."""
    # Serialised in memory first: torch.save writing straight to a file turns a failed write
    # (disk full, quota) into an opaque RuntimeError; a plain write raises OSError with errno.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getbuffer())
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

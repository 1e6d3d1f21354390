"""Atomic, versioned, checksummed checkpoints tied to source offsets (design §7).

A checkpoint is one ``torch.save`` payload holding only tensors, strings, numbers, lists and
dicts, loaded back with ``torch.load(weights_only=True)``: nothing is unpickled. The file is
*sealed*: a header line, a line with the SHA-256 and size of the payload, then the payload.
Every byte is verified before anything is loaded, so a flipped bit anywhere (a weight, a
key name, the zip directory) fails the check instead of loading a wrong state. It is
written to a temporary file in the same directory, flushed and fsynced, then renamed over
its final name, so a crash leaves either the old or the new checkpoint, never half of one.
Files are numbered (``checkpoint-00000042.pt``); the newest ``keep`` are retained, and a
checkpoint that fails any check is skipped (its name and reason logged) for the one before
it. Files written before checksums (a bare ``torch.save`` zip) still load.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import torch

from streamlearn.state.atomic import atomic_write

FORMAT = "streamlearn-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")
SEAL = b"streamlearn-sealed 1\n"
_MAX_SEAL_LINE = 200

log = logging.getLogger("streamlearn.state.checkpoint")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or none usable could be read."""


@dataclass(frozen=True)
class Checkpoint:
    """One loaded checkpoint: its sequence number, offsets and the rest of the state."""

    sequence: int
    offsets: dict[str, int]
    state: dict[str, Any]
    path: Path
    created_at: float = 0.0  # seconds since the epoch (0: not recorded)


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
        return next(iter(self.loadable()), None)

    def loadable(self) -> Iterator[Checkpoint]:
        """Checkpoints that pass every check, newest first; each one that fails is skipped
        with its name and reason. Raises CheckpointError once files exist but none passed."""
        files = self._listing = self.files()
        found = False
        for path in reversed(files):
            try:
                ck = self._load(path)
            except CheckpointError as exc:
                log.warning("skipping checkpoint %s: %s", path.name, exc)
                continue
            found = True
            self._sequence = max(self._sequence, ck.sequence)
            yield ck
        if files and not found:
            raise CheckpointError(
                f"none of the {len(files)} checkpoints in {str(self.directory)!r} is usable"
            )

    @staticmethod
    def _load(path: Path) -> Checkpoint:
        payload = load_sealed(path)
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
        state = payload.get("state")
        if not isinstance(state, dict):
            raise CheckpointError("state is malformed")
        created = payload.get("created_at")
        created_at = float(created) if isinstance(created, (int, float)) else 0.0
        return Checkpoint(int(payload["sequence"]), offsets, state, path, created_at)


def seal(body: bytes | memoryview) -> bytes:
    """The header that :func:`unseal` checks ``body`` against.

    >>> data = seal(b"payload") + b"payload"
    >>> unseal(data)
    b'payload'
    >>> unseal(data[:-1] + b"X")
    Traceback (most recent call last):
    ...
    streamlearn.state.checkpoint.CheckpointError: checksum mismatch (changed after it was written)
    """
    digest = hashlib.sha256(body).hexdigest()
    return SEAL + orjson.dumps({"sha256": digest, "size": len(body)}) + b"\n"


def unseal(data: bytes) -> bytes:
    """The payload of a sealed file after checking its size and SHA-256; a file without a
    seal (written before checksums) is returned as it is. Raises CheckpointError."""
    if not data.startswith(SEAL):
        if data.startswith(b"PK"):  # a bare torch.save zip: from before checksums
            return data
        raise CheckpointError("not a sealed streamlearn file (no header)")
    end = data.find(b"\n", len(SEAL), len(SEAL) + _MAX_SEAL_LINE)
    if end < 0:
        raise CheckpointError("seal header is damaged")
    try:
        header = orjson.loads(data[len(SEAL) : end])
        digest, size = str(header["sha256"]), int(header["size"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise CheckpointError("seal header is damaged") from None
    body = data[end + 1 :]
    if len(body) != size:
        raise CheckpointError(f"truncated or extended: {len(body)} bytes, the seal says {size}")
    if hashlib.sha256(body).hexdigest() != digest:
        raise CheckpointError("checksum mismatch (changed after it was written)")
    return body


def load_sealed(path: Path) -> Any:
    """A sealed ``torch.save`` payload, verified, then loaded with ``weights_only=True``.
    Raises CheckpointError naming what failed (never another exception type)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"unreadable ({exc.strerror or exc})") from None
    body = unseal(data)
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise CheckpointError(f"unreadable ({type(exc).__name__}: {exc})") from None


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
    """``torch.save`` sealed with its checksum (:func:`seal`), written atomically
    (:func:`atomic_write`). Raises OSError."""
    # Serialised in memory first: torch.save writing straight to a file turns a failed write
    # (disk full, quota) into an opaque RuntimeError; a plain write raises OSError with errno.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getbuffer()
    atomic_write(path, [seal(body), body], fsync=fsync, before_rename=before_rename)

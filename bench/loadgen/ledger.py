"""The producer's ledger: every acknowledged event id, compact and on disk.

Format (version 1). A ledger is a directory of append-only files, one pair
per writer (load generator process)::

    <dir>/acked-<writer>.ids     ids the gateway answered 2xx for (a promise: G1)
    <dir>/unknown-<writer>.ids   ids whose outcome is unknown (gave up after
                                 timeouts/5xx): they may or may not be delivered

Each file starts with the 8-byte header ``CRLEDG01`` and is followed by
16-byte records, one per event id: the id's UUID bytes when the id is a
canonical lower-case UUID (what the load generator and the SDK produce),
else the MD5 digest of its UTF-8 text (see :func:`id_key`).

Durability: records of a batch are written with one unbuffered ``write`` right
after its 2xx, so they survive a crash of the load generator process (they
are in the kernel); the files are fsync'd at :meth:`Ledger.close`, or after
every batch with ``fsync_every_batch=True`` (survives power loss, slower).
A torn final record (a crash mid-write) is ignored by the reader.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = b"CRLEDG01"
RECORD_BYTES = 16
KEY_DTYPE = np.dtype("S16")
ACKED = "acked"
UNKNOWN = "unknown"


def id_key(event_id: str) -> bytes:
    """The 16-byte ledger key of an id: UUID bytes if canonical lower-case, else MD5."""
    if len(event_id) == 36 and event_id == event_id.lower():
        try:
            u = uuid.UUID(event_id)
        except ValueError:
            pass
        else:
            if str(u) == event_id:
                return u.bytes
    return hashlib.md5(event_id.encode(), usedforsecurity=False).digest()


class Ledger:
    """Appends the keys of acknowledged (and unknown-outcome) events of one writer."""

    def __init__(self, directory: Path, writer: str, *, fsync_every_batch: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.writer = writer
        self.fsync_every_batch = fsync_every_batch
        self._fds: dict[str, int] = {}
        self.counts = {ACKED: 0, UNKNOWN: 0}

    def _fd(self, kind: str) -> int:
        fd = self._fds.get(kind)
        if fd is None:
            path = self.directory / f"{kind}-{self.writer}.ids"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if os.fstat(fd).st_size == 0:
                os.write(fd, HEADER)
            self._fds[kind] = fd
        return fd

    def _append(self, kind: str, keys: bytes) -> None:
        if len(keys) % RECORD_BYTES:
            raise ValueError(f"ledger keys must be {RECORD_BYTES}-byte records")
        if not keys:
            return
        fd = self._fd(kind)
        view = memoryview(keys)
        while view:
            view = view[os.write(fd, view) :]
        if self.fsync_every_batch:
            os.fsync(fd)
        self.counts[kind] += len(keys) // RECORD_BYTES

    def acked_keys(self, keys: bytes) -> None:
        """Record acknowledged events by their concatenated 16-byte keys."""
        self._append(ACKED, keys)

    def acked(self, ids: Iterable[str]) -> None:
        """Record acknowledged events by id."""
        self._append(ACKED, b"".join(id_key(i) for i in ids))

    def unknown_keys(self, keys: bytes) -> None:
        """Record events whose outcome is unknown (maybe stored, never acknowledged)."""
        self._append(UNKNOWN, keys)

    def close(self) -> None:
        """fsync and close the files."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_keys(path: Path) -> np.ndarray:
    """The keys of one ledger file (a torn final record is left out)."""
    raw = path.read_bytes()
    if not raw.startswith(HEADER):
        raise ValueError(f"{path} is not a Courier ledger file (no {HEADER!r} header)")
    body = raw[len(HEADER) :]
    whole = len(body) - len(body) % RECORD_BYTES
    return np.frombuffer(body[:whole], dtype=KEY_DTYPE)


@dataclass(frozen=True)
class LedgerContents:
    """Sorted, distinct keys of a ledger directory."""

    acked: np.ndarray
    unknown: np.ndarray
    #: Acked records written more than once (the same id acked twice: a client retry).
    acked_repeats: int


def read_ledger(directory: Path) -> LedgerContents:
    """Every writer's records of ``directory``, merged."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"ledger directory {directory} does not exist")

    def merged(kind: str) -> tuple[np.ndarray, int]:
        parts = [read_keys(p) for p in sorted(directory.glob(f"{kind}-*.ids"))]
        allk = np.concatenate(parts) if parts else np.empty(0, dtype=KEY_DTYPE)
        uniq = np.unique(allk)
        return uniq, len(allk) - len(uniq)

    acked, repeats = merged(ACKED)
    unknown, _ = merged(UNKNOWN)
    return LedgerContents(acked, unknown, repeats)

"""The producer's crash-safe disk spool: an append-only log of events plus an ack ledger.

Invariants
----------
S1. Every record has a record id; ids increase by exactly one per append,
    across segments and restarts (they never go back, even after every
    segment was deleted: the ledger remembers the last acknowledged id).
S2. The ledger says "every record with id <= ``acked_through`` is done"
    (delivered, or rejected and written to the rejected log). It only moves
    forward, and only after the gateway answered 2xx for those records.
S3. A segment file is deleted only when its last record id <= ``acked_through``
    and the ledger saying so is durable.
S4. Recovery never hands out bytes that fail their CRC: a torn or corrupt
    record ends its segment (the file is truncated there), and so does a
    record whose id does not follow its predecessor's.

On-disk format (version 1)
--------------------------
``<dir>/seg-<first record id, 20 digits>.log`` — records back to back, each::

    u32 payload length | u32 crc32(id, written_ms, payload) | u64 id | u64 written_ms | payload

little-endian; the payload is one event as JSON (``{"type", "id", "time"?, "data"}``),
ready to be joined into a request body. ``<dir>/ledger.json`` —
``{"format": 1, "acked_through": N}``, written atomically (temp, fsync, rename,
fsync dir). ``<dir>/.lock`` is held (flock) by the one process using the spool.

Appending (``append``), under the spool lock
--------------------------------------------
1. encode header + payload, ``os.write`` them in one call to the active
   segment (the kernel has them now: a ``kill -9`` of the process loses nothing);
2. roll to a new segment when the active one passed ``segment_bytes``
   (the old one is fsynced first, the new one's directory entry is fsynced);
3. durability by policy: ``always`` — wait for an fsync that covers the record
   (group commit: one waiter fsyncs for everyone who appended before it);
   ``interval`` — a background thread fsyncs every ``fsync_interval_ms``;
   ``never`` — the OS decides. Loss window on power failure / OS crash:
   none / up to ``fsync_interval_ms`` / unbounded (typically ~30 s).

Acknowledging (``commit``), one commit at a time, the spool lock only for step 2
--------------------------------------------------------------------------------
1. write the ledger with the new ``acked_through`` (atomic protocol above);
2. delete the segments it fully covers (S3). A crash between 1 and 2 leaves
   covered segments behind; the next open deletes them.

Recovery (``open``)
-------------------
1. read the ledger (absent: nothing acknowledged yet);
2. scan every segment in id order, stop a segment at its first bad record and
   truncate the file there (S4), counting what was cut;
3. delete segments fully covered by the ledger; the next id is one past the
   largest of ``acked_through`` and the last good record id;
4. the read cursor starts at the first record after ``acked_through``: every
   record not acknowledged before the crash is sent again (same event ids,
   so the closer's dedup removes the copies the gateway had already stored).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from courier.errors import ConfigError, CourierError, StorageError
from courier.storage.atomic import fsync_dir, write_bytes_atomic

log = logging.getLogger("courier.sdk.spool")

FORMAT_VERSION = 1
FsyncPolicy = Literal["always", "interval", "never"]
_HEADER = struct.Struct("<IIQQ")
HEADER_BYTES = _HEADER.size
_ID_TIME = struct.Struct("<QQ")
_LEDGER = "ledger.json"
_SEG_PREFIX, _SEG_SUFFIX = "seg-", ".log"
_READ_CHUNK_BYTES = 1024 * 1024


class SpoolFull(CourierError):
    """The spool holds ``max_spool_bytes`` of unacknowledged events; nothing was appended."""


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled event: its record id, when it was appended (epoch ms) and its JSON."""

    id: int
    written_ms: int
    payload: bytes

    @property
    def size(self) -> int:
        return HEADER_BYTES + len(self.payload)


def encode_record(record_id: int, written_ms: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_ID_TIME.pack(record_id, written_ms)))
    return _HEADER.pack(len(payload), crc, record_id, written_ms) + payload


def scan_segment(path: Path, after_id: int = 0) -> tuple[list[tuple[int, int, int]], int]:
    """The good records of a segment as (id, offset, size), and the offset where they end.

    Stops at the first torn, corrupt or out-of-sequence record (S4).
    """
    out: list[tuple[int, int, int]] = []
    with open(path, "rb") as f:
        data = f.read()
    pos, prev = 0, after_id
    while pos + HEADER_BYTES <= len(data):
        length, crc, rid, ms = _HEADER.unpack_from(data, pos)
        end = pos + HEADER_BYTES + length
        if end > len(data) or (prev and rid != prev + 1):
            break
        payload = data[pos + HEADER_BYTES : end]
        if zlib.crc32(payload, zlib.crc32(_ID_TIME.pack(rid, ms))) != crc:
            break
        out.append((rid, pos, end - pos))
        prev, pos = rid, end
    return out, pos


def _datasync(fd: int) -> None:
    """fdatasync where there is one: the record bytes and the file size, not the mtime."""
    getattr(os, "fdatasync", os.fsync)(fd)


def _segment_name(first_id: int) -> str:
    return f"{_SEG_PREFIX}{first_id:020d}{_SEG_SUFFIX}"


@dataclass(slots=True)
class _Segment:
    path: Path
    first_id: int
    last_id: int  # 0 while empty
    size: int


class Spool:
    """An append-only, crash-safe event log in ``directory``. Thread-safe.

    One process at a time: ``open`` takes an exclusive lock on the directory.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        fsync: FsyncPolicy = "interval",
        fsync_interval_ms: int = 1000,
        segment_bytes: int = 16 * 1024 * 1024,
        max_spool_bytes: int = 1024 * 1024 * 1024,
    ) -> None:
        if fsync not in ("always", "interval", "never"):
            raise ConfigError(f"fsync policy {fsync!r} is not one of always, interval, never")
        self.directory = Path(directory)
        self.fsync_policy: FsyncPolicy = fsync
        self._interval_secs = fsync_interval_ms / 1000
        self._segment_bytes = segment_bytes
        self.max_spool_bytes = max_spool_bytes
        self._cond = threading.Condition()
        self._commit_lock = threading.Lock()  # taken before _cond, never inside it
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._acked_through = 0
        self._next_id = 1
        self._unacked_bytes = 0
        self._durable_id = 0
        self._syncing = False
        self._closed = False
        self._woken = False
        self._lock_fd: int | None = None
        self._sync_thread: threading.Thread | None = None
        self._cursor = (0, 0)  # (segment index, offset) of the next record to read
        self._head_ms = 0
        self.recovered_torn_bytes = 0
        self._open()

    # -- recovery ---------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StorageError(
                f"spool {self.directory} is in use by another producer; give each one its own"
            ) from exc
        except OSError as exc:
            raise StorageError(f"cannot open spool {self.directory}: {exc}") from exc
        # 1. the ledger
        self._acked_through = self._read_ledger()
        # 2. scan segments, truncating each at its first bad record
        prev = 0
        for path in sorted(self.directory.glob(f"{_SEG_PREFIX}*{_SEG_SUFFIX}")):
            records, good_end = scan_segment(path, prev)
            size = path.stat().st_size
            if good_end < size:
                log.warning(
                    "spool segment %s: %d bytes after offset %d are torn or corrupt; truncated",
                    path,
                    size - good_end,
                    good_end,
                )
                self.recovered_torn_bytes += size - good_end
                with open(path, "r+b") as f:
                    f.truncate(good_end)
                    os.fsync(f.fileno())
            if not records:
                path.unlink()
                continue
            first, last = records[0][0], records[-1][0]
            prev = last
            self._segments.append(_Segment(path, first, last, good_end))
            for rid, _, rsize in records:
                if rid > self._acked_through:
                    self._unacked_bytes += rsize
        # 3. drop covered segments; next id
        last_id = self._segments[-1].last_id if self._segments else 0
        self._next_id = max(self._acked_through, last_id) + 1
        self._durable_id = self._next_id - 1
        self._delete_covered()
        if self._segments and self._segments[-1].size < self._segment_bytes:
            seg = self._segments[-1]
            self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
        # 4. the read cursor starts at the first unacknowledged record
        self._cursor = (0, 0)
        self._seek_unacked()
        if self.fsync_policy == "interval":
            self._sync_thread = threading.Thread(
                target=self._sync_loop, name="courier-spool-fsync", daemon=True
            )
            self._sync_thread.start()

    def _read_ledger(self) -> int:
        path = self.directory / _LEDGER
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            raise StorageError(f"spool ledger {path} is unreadable: {exc}") from exc
        if doc.get("format") != FORMAT_VERSION:
            raise StorageError(
                f"spool ledger {path} has format {doc.get('format')!r}; this SDK reads "
                f"format {FORMAT_VERSION}"
            )
        return int(doc["acked_through"])

    def _seek_unacked(self) -> None:
        """Point the cursor at the first record after ``acked_through``."""
        for i, seg in enumerate(self._segments):
            if seg.last_id > self._acked_through:
                offset = 0
                if seg.first_id <= self._acked_through:
                    records, _ = scan_segment(seg.path)
                    offset = next(o for rid, o, _ in records if rid > self._acked_through)
                self._cursor = (i, offset)
                return
        self._cursor = (len(self._segments), 0)

    def _delete_covered(self) -> None:
        while self._segments and self._segments[0].last_id <= self._acked_through:
            seg = self._segments[0]
            if seg is self._segments[-1] and self._fd is not None:
                break  # the active segment stays until it rolls
            self._segments.pop(0)
            # The cursor is never before an acknowledged record, so a cursor in
            # the deleted segment was at its end: the start of the next one.
            idx, offset = self._cursor
            self._cursor = (0, 0) if idx == 0 else (idx - 1, offset)
            with contextlib.suppress(FileNotFoundError):
                seg.path.unlink()

    # -- appending --------------------------------------------------------------

    def append(self, payload: bytes, *, timeout_secs: float | None = 0.0) -> int:
        """Append one event; returns its record id once the fsync policy is met.

        When the spool is full, waits up to ``timeout_secs`` (None: forever) for
        acknowledgements to make room, then raises :class:`SpoolFull`.
        """
        size = HEADER_BYTES + len(payload)
        with self._cond:
            # 1. room (bounded spool) — one record always fits into an empty spool
            if self._unacked_bytes + size > self.max_spool_bytes and self._unacked_bytes > 0:
                deadline = None if timeout_secs is None else time.monotonic() + timeout_secs
                while self._unacked_bytes + size > self.max_spool_bytes and self._unacked_bytes:
                    left = None if deadline is None else deadline - time.monotonic()
                    if self._closed or (left is not None and left <= 0):
                        raise SpoolFull(
                            f"spool {self.directory} holds {self._unacked_bytes} bytes of "
                            f"unacknowledged events (limit {self.max_spool_bytes}); the event "
                            "was not spooled: retry later or raise max_spool_bytes"
                        )
                    self._cond.wait(left)
            if self._closed:
                raise StorageError(f"spool {self.directory} is closed")
            rid = self._next_id
            data = encode_record(rid, time.time_ns() // 1_000_000, payload)
            try:
                # 2. the bytes go to the kernel in one write
                if self._fd is None:
                    self._new_segment(rid)
                assert self._fd is not None
                os.write(self._fd, data)
            except OSError as exc:
                raise StorageError(
                    f"cannot append to spool {self.directory}: {exc}; the event was not spooled"
                ) from exc
            self._next_id += 1
            seg = self._segments[-1]
            seg.last_id = rid
            seg.size += len(data)
            self._unacked_bytes += len(data)
            if seg.size >= self._segment_bytes:
                self._roll()
            self._cond.notify_all()
            # 3. durability by policy
            if self.fsync_policy == "always":
                self._wait_durable(rid)
        return rid

    def _new_segment(self, first_id: int) -> None:
        path = self.directory / _segment_name(first_id)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self.fsync_policy != "never":
            fsync_dir(self.directory)
        self._segments.append(_Segment(path, first_id, 0, 0))

    def _roll(self) -> None:
        """Close the active segment (fsynced unless policy ``never``); the next append opens one."""
        while self._syncing:  # a group-commit leader uses the fd outside the lock
            self._cond.wait()
        assert self._fd is not None
        if self.fsync_policy != "never":
            os.fsync(self._fd)
            self._durable_id = self._next_id - 1
        os.close(self._fd)
        self._fd = None
        self._delete_covered()

    def _wait_durable(self, rid: int) -> None:
        """Group commit: the first waiter fsyncs for all appended so far; others wait."""
        while self._durable_id < rid:
            if self._syncing:
                self._cond.wait()
                continue
            self._fsync_locked()

    def _fsync_locked(self) -> None:
        fd, target = self._fd, self._next_id - 1
        if fd is None:
            self._durable_id = target  # rolled: the roll fsynced it
            return
        self._syncing = True
        self._cond.release()
        try:
            _datasync(fd)
        finally:
            self._cond.acquire()
            self._syncing = False
            self._cond.notify_all()
        self._durable_id = max(self._durable_id, target)

    def _sync_loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                self._cond.wait(self._interval_secs)
                if self._closed:
                    return
                if self._durable_id < self._next_id - 1 and not self._syncing:
                    with contextlib.suppress(OSError):
                        self._fsync_locked()

    # -- reading and acknowledging ----------------------------------------------

    def read(self, max_records: int, max_bytes: int) -> list[Record]:
        """The next unread records after the cursor (at least one if any), advancing it."""
        out: list[Record] = []
        total = 0
        with self._cond:
            idx, offset = self._cursor
            while idx < len(self._segments) and len(out) < max_records:
                seg = self._segments[idx]
                if offset >= seg.size:
                    if seg is self._segments[-1]:
                        break
                    idx, offset = idx + 1, 0
                    continue
                with open(seg.path, "rb") as f:
                    f.seek(offset)
                    data = f.read(min(seg.size - offset, max(max_bytes - total, _READ_CHUNK_BYTES)))
                    if len(data) >= HEADER_BYTES:  # a record larger than one chunk
                        need = HEADER_BYTES + _HEADER.unpack_from(data, 0)[0]
                        if need > len(data):
                            data += f.read(need - len(data))
                pos = 0
                while pos + HEADER_BYTES <= len(data) and len(out) < max_records:
                    length, _crc, rid, ms = _HEADER.unpack_from(data, pos)
                    end = pos + HEADER_BYTES + length
                    if end > len(data) or (out and total + end - pos > max_bytes):
                        break
                    out.append(Record(rid, ms, data[pos + HEADER_BYTES : end]))
                    total += end - pos
                    pos = end
                offset += pos
                if pos == 0 or total >= max_bytes:
                    break
            self._cursor = (idx, offset)
            if out and out[0].id == self._acked_through + 1:
                self._head_ms = out[0].written_ms
        return out

    def rewind(self) -> None:
        """Forget what was read but not committed: the next read starts after the ledger."""
        with self._cond:
            self._seek_unacked()

    def commit(self, through_id: int, released_bytes: int) -> None:
        """Acknowledge every record id <= ``through_id`` (ledger first, then deletions).

        The ledger's fsyncs run outside the spool lock, so ``append`` (``send``)
        does not stall behind them; ``_commit_lock`` keeps ledger writes in order.
        """
        with self._commit_lock:
            with self._cond:
                if self._closed or through_id <= self._acked_through:
                    return
            # 1. the ledger, atomically (appends go on meanwhile: they never read it)
            write_bytes_atomic(
                self.directory / _LEDGER,
                json.dumps({"format": FORMAT_VERSION, "acked_through": through_id}).encode(),
            )
            with self._cond:
                self._acknowledged(through_id, released_bytes)

    def _acknowledged(self, through_id: int, released_bytes: int) -> None:
        """Step 2 of ``commit``, under the spool lock: the ledger is durable now."""
        if self._closed:
            return  # the next open deletes what the durable ledger covers
        self._acked_through = through_id
        self._unacked_bytes = max(0, self._unacked_bytes - released_bytes)
        self._head_ms = 0
        # 2. segments fully covered
        self._delete_covered()
        self._cond.notify_all()

    # -- state ------------------------------------------------------------------

    @property
    def acked_through(self) -> int:
        return self._acked_through

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    @property
    def pending_records(self) -> int:
        return self._next_id - 1 - self._acked_through

    @property
    def pending_bytes(self) -> int:
        return self._unacked_bytes

    @property
    def disk_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def oldest_pending_ms(self) -> int | None:
        """Append time of the oldest unacknowledged record (None if none or not read yet)."""
        if self.pending_records == 0:
            return None
        return self._head_ms or None

    def wait_acked(self, through_id: int, timeout_secs: float | None) -> bool:
        """Wait until every record id <= ``through_id`` is acknowledged; False on timeout."""
        with self._cond:
            return (
                self._cond.wait_for(
                    lambda: self._acked_through >= through_id or self._closed, timeout_secs
                )
                and self._acked_through >= through_id
            )

    def has_unread(self) -> bool:
        with self._cond:
            idx, offset = self._cursor
            if idx >= len(self._segments):
                return False
            return idx < len(self._segments) - 1 or offset < self._segments[idx].size

    def wait_unread(self, timeout_secs: float) -> bool:
        """Wait until there is something to read (or :meth:`wake` was called)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self.has_unread() or self._closed or self._woken, timeout_secs
            )

    def wake(self) -> None:
        """Make every current and future :meth:`wait_unread` return at once (shutdown)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def segments(self) -> Iterator[Path]:
        return iter([s.path for s in self._segments])

    def close(self) -> None:
        """Fsync and release the spool; records not acknowledged stay on disk for the next open."""
        with self._commit_lock, self._cond:  # a ledger write in flight finishes first
            if self._closed:
                return
            while self._syncing:
                self._cond.wait()
            self._closed = True
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            self._cond.notify_all()
        if self._sync_thread is not None:
            self._sync_thread.join()
        self._release_lock()

    def abandon(self) -> None:
        """Drop the spool as a crash would (no fsync, no ledger write); for tests."""
        with self._cond:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._cond.notify_all()
        if self._sync_thread is not None:
            self._sync_thread.join()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

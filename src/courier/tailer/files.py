"""One followed file: identity, fingerprint, and reading complete lines with bounded memory.

A file is known by its **fingerprint**: a hash of its first line (at most
``FINGERPRINT_BYTES``). Content keeps its fingerprint across a rename (same
inode) and across copytruncate (the copy starts with the same bytes), so the
position stored for a fingerprint resumes reading wherever that content now
lives. (device, inode) tells whether a path still points at the file we hold
open. A file whose first line is not complete yet has no fingerprint and is
not read (there is no complete line to read anyway).

Known limit: two files that start with the very same line share a
fingerprint. Ids then still differ only if the lines carry their own ``id``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from dataclasses import dataclass

FINGERPRINT_BYTES = 1024


def fingerprint(fd: int) -> str | None:
    """Hex hash of the first line of an open file (or its first KiB); None if not complete."""
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    newline = head.find(b"\n")
    if newline >= 0:
        head = head[: newline + 1]
    elif len(head) < FINGERPRINT_BYTES:
        return None
    return hashlib.sha256(head).hexdigest()[:32]


def line_id(file_fingerprint: str, offset: int) -> str:
    """The deterministic event id of an id-less line: the same after any replay."""
    return f"tail-{file_fingerprint}-{offset}"


@dataclass(slots=True)
class Line:
    offset: int
    data: bytes


@dataclass(slots=True)
class Overlong:
    """A line longer than the limit: rejected by position, never buffered whole."""

    offset: int
    length: int


@dataclass(slots=True)
class TailedFile:
    """An open file being followed; ``offset`` is the next byte to read."""

    path: str
    fd: int
    dev: int
    ino: int
    fp: str
    offset: int
    #: Set while inside an over-long line: where that line started.
    skipping_from: int | None = None
    #: When the path stopped pointing at this file (renamed away or deleted).
    detached_at: float | None = None
    at_eof: bool = False

    @property
    def resume_offset(self) -> int:
        """Where a restart must read from: the start of a line being skipped, else ``offset``."""
        return self.offset if self.skipping_from is None else self.skipping_from

    @classmethod
    def open(cls, path: str, positions: dict[str, int]) -> TailedFile | None:
        """Open ``path`` at the stored position of its fingerprint (0 for new content)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            fp = fingerprint(fd)
        except OSError:
            os.close(fd)
            return None
        if fp is None:
            os.close(fd)
            return None
        offset = positions.get(fp, 0)
        if offset > st.st_size:
            offset = 0  # not the content we knew (same first line, shorter): read it all
        return cls(path, fd, st.st_dev, st.st_ino, fp, offset)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def replaced(self) -> bool:
        """True when this inode was truncated or rewritten under us (copytruncate)."""
        try:
            size = os.fstat(self.fd).st_size
            return size < self.offset or fingerprint(self.fd) != self.fp
        except OSError:
            return True

    def read(self, max_bytes: int, max_line_bytes: int) -> list[Line | Overlong]:
        """Complete lines from ``offset`` on (advancing it), at most about ``max_bytes``.

        A partial last line stays unread until its newline arrives. A line
        longer than ``max_line_bytes`` becomes an :class:`Overlong` and is
        skipped in chunks, so memory stays bounded by one chunk.
        """
        chunk_bytes = max(max_bytes, max_line_bytes + 1)
        out: list[Line | Overlong] = []
        while True:
            chunk = os.pread(self.fd, chunk_bytes, self.offset)
            if not chunk:
                self.at_eof = True
                return out
            end = chunk.rfind(b"\n")
            if self.skipping_from is not None:
                first = chunk.find(b"\n")
                if first < 0:
                    self.offset += len(chunk)
                    continue
                out.append(Overlong(self.skipping_from, self.offset + first - self.skipping_from))
                self.offset += first + 1
                self.skipping_from = None
                continue
            if end < 0:
                if len(chunk) > max_line_bytes:
                    self.skipping_from = self.offset
                    self.offset += len(chunk)
                    continue
                self.at_eof = True  # a partial line: wait for its newline
                return out
            pos = self.offset
            for raw in chunk[:end].split(b"\n"):
                if len(raw) > max_line_bytes:
                    out.append(Overlong(pos, len(raw)))
                elif raw.strip():
                    out.append(Line(pos, raw))
                pos += len(raw) + 1
            self.offset = pos
            self.at_eof = len(chunk) < chunk_bytes and end == len(chunk) - 1
            if len(chunk) - (end + 1) > max_line_bytes:
                continue  # the tail is already too long: deal with it now
            return out


def stat_key(path: str) -> tuple[int, int] | None:
    """(device, inode) of a regular file at ``path``, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_dev, st.st_ino

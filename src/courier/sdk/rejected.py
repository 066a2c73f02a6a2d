"""The local rejected log: events refused for good, one JSON object per line, with the reason.

Each line carries ``"format": 1``, the time it was written and whatever the
caller describes the event with (SDK: event id, type, the event's JSON; tailer:
file, byte offset and line). Lines are fsynced before the caller moves its
acknowledgement past them, so a rejection is never lost either.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from courier.errors import StorageError

FORMAT_VERSION = 1
_encode = msgspec.json.Encoder().encode


class RejectedLog:
    """Append-only JSONL file of rejections. Thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Append entries durably (write + fsync); returns how many were written."""
        now = time.time()
        lines = [_encode({"format": FORMAT_VERSION, "at": now, **e}) + b"\n" for e in entries]
        if not lines:
            return 0
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, b"".join(lines))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise StorageError(
                    f"cannot write the rejected log {self.path}: {exc}; the events stay "
                    "unacknowledged and are retried"
                ) from exc
        return len(lines)

    def read(self) -> list[dict[str, Any]]:
        """Every entry written so far (for tests and tools)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return [msgspec.json.decode(line) for line in data.splitlines() if line.strip()]

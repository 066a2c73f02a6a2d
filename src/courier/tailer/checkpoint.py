"""The tailer's positions: how far each file content (by fingerprint) is acknowledged.

Format (version 1), ``<state_dir>/positions.json``, written atomically (temp,
fsync, rename, fsync dir)::

    {"format": 1, "files": {"<fingerprint>": {"offset": 1234, "path": "/var/log/a.log",
                                              "updated_at": 1795676700.1}}}

``offset`` is the byte after the last line the gateway acknowledged (or that
was rejected and written to the rejected log). It is only ever written after
that acknowledgement, so a crash replays lines, never skips them; replayed
lines carry the same ids and the closer drops the copies.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from courier.errors import StorageError
from courier.storage.atomic import write_bytes_atomic

FORMAT_VERSION = 1
FILE_NAME = "positions.json"


@dataclass(slots=True)
class Position:
    offset: int
    path: str
    updated_at: float


class Checkpoint:
    """Positions in memory plus their durable copy in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self.positions: dict[str, Position] = self._load()

    def _load(self) -> dict[str, Position]:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StorageError(f"tailer positions {self.path} are unreadable: {exc}") from exc
        if doc.get("format") != FORMAT_VERSION:
            raise StorageError(
                f"tailer positions {self.path} have format {doc.get('format')!r}; "
                f"this tailer reads format {FORMAT_VERSION}"
            )
        return {
            fp: Position(int(p["offset"]), str(p.get("path", "")), float(p.get("updated_at", 0)))
            for fp, p in doc["files"].items()
        }

    def offsets(self) -> dict[str, int]:
        return {fp: p.offset for fp, p in self.positions.items()}

    def advance(self, fp: str, offset: int, path: str) -> None:
        """Record an acknowledged offset in memory (positions never move backwards)."""
        current = self.positions.get(fp)
        if current is None or offset > current.offset or path != current.path:
            best = offset if current is None else max(offset, current.offset)
            self.positions[fp] = Position(best, path, time.time())

    def forget_older_than(self, cutoff: float, keep: set[str]) -> None:
        for fp in [fp for fp, p in self.positions.items() if p.updated_at < cutoff]:
            if fp not in keep:
                del self.positions[fp]

    def save(self) -> None:
        doc = {
            "format": FORMAT_VERSION,
            "files": {
                fp: {"offset": p.offset, "path": p.path, "updated_at": p.updated_at}
                for fp, p in sorted(self.positions.items())
            },
        }
        write_bytes_atomic(self.path, json.dumps(doc, indent=1).encode())

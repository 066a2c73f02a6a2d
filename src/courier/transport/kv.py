"""Key-value seam used by the schema registry and the bucket catalog.

:class:`KeyValue` is the protocol; :class:`MemoryKeyValue` is the in-memory
implementation for unit tests of code above it. The JetStream implementation
lives in :mod:`courier.transport.client` (``Transport.key_value``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from courier.errors import ConcurrentUpdateError, KeyExistsError


@dataclass(frozen=True, slots=True)
class KVEntry:
    key: str
    value: bytes
    revision: int


class KeyValue(Protocol):
    """A bucket of keys with compare-and-set updates (revision numbers)."""

    async def get(self, key: str) -> KVEntry | None:
        """The current entry, or None when the key does not exist (or was deleted)."""
        ...

    async def put(self, key: str, value: bytes) -> int:
        """Unconditional write; returns the new revision."""
        ...

    async def create(self, key: str, value: bytes) -> int:
        """Write only if absent; raises :class:`KeyExistsError` otherwise."""
        ...

    async def update(self, key: str, value: bytes, last_revision: int) -> int:
        """Write only if the current revision is ``last_revision``; raises
        :class:`ConcurrentUpdateError` otherwise."""
        ...

    async def delete(self, key: str) -> None: ...

    async def keys(self) -> list[str]:
        """All keys (empty list when there are none); a key deleted concurrently may
        still be listed, so callers treat ``get() is None`` as absent."""
        ...


class MemoryKeyValue:
    """In-memory :class:`KeyValue` with the same revision semantics as JetStream KV."""

    def __init__(self) -> None:
        self._data: dict[str, KVEntry] = {}
        self._revision = 0

    async def get(self, key: str) -> KVEntry | None:
        return self._data.get(key)

    def _write(self, key: str, value: bytes) -> int:
        self._revision += 1
        self._data[key] = KVEntry(key, bytes(value), self._revision)
        return self._revision

    async def put(self, key: str, value: bytes) -> int:
        return self._write(key, value)

    async def create(self, key: str, value: bytes) -> int:
        if key in self._data:
            raise KeyExistsError(f"KV key {key!r} already exists")
        return self._write(key, value)

    async def update(self, key: str, value: bytes, last_revision: int) -> int:
        cur = self._data.get(key)
        if cur is None or cur.revision != last_revision:
            raise ConcurrentUpdateError(
                f"KV key {key!r} changed since revision {last_revision}; re-read and retry"
            )
        return self._write(key, value)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def keys(self) -> list[str]:
        return sorted(self._data)

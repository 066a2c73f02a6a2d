"""The bucket catalog: one KV entry per bucket (claim → closed) and a cursor per type.

Entries are JSON with ``format_version``. Claims are compare-and-set, so one
closer wins a bucket; a claim whose lease expired (its closer crashed) can be
taken over, and the taker reuses the claim's ``claimed_at`` and watermark so
the resumed close produces the same manifest.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from courier.errors import ConcurrentUpdateError, KeyExistsError
from courier.model import BucketKey
from courier.transport.kv import KeyValue

FORMAT_VERSION = 1


@dataclass(frozen=True)
class CatalogEntry:
    state: Literal["claimed", "closed"]
    closer: str
    claimed_at: float
    watermark: float
    #: Staging files (relative to the data root) this close consumes; fixed at step 2.
    staging_files: list[str] | None = None
    #: The subset of ``staging_files`` that came from already-closed buckets.
    skewed_files: list[str] = field(default_factory=list)
    events: int | None = None
    lease_until: float = 0.0
    format_version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> CatalogEntry:
        return cls(**json.loads(raw))


class Catalog:
    """Typed access to the bucket catalog KV bucket."""

    def __init__(self, kv: KeyValue, closer_id: str, lease_secs: float) -> None:
        self.kv = kv
        self.closer_id = closer_id
        self.lease_secs = lease_secs

    async def get(self, key: BucketKey) -> tuple[CatalogEntry, int] | None:
        e = await self.kv.get(key.label())
        return None if e is None else (CatalogEntry.decode(e.value), e.revision)

    async def claim(self, key: BucketKey, watermark: float) -> tuple[CatalogEntry, int] | None:
        """Step 1. Our claim (new, resumed or taken over), or None if another closer holds it.

        A closed entry is returned as is (the caller resumes at step 7).
        """
        now = time.time()
        current = await self.get(key)
        if current is None:
            entry = CatalogEntry(
                "claimed", self.closer_id, now, watermark, lease_until=now + self.lease_secs
            )
            try:
                rev = await self.kv.create(key.label(), entry.encode())
            except KeyExistsError:
                return None
            return entry, rev
        entry, rev = current
        if entry.state == "closed":
            return entry, rev
        if entry.closer != self.closer_id and entry.lease_until > now:
            return None
        taken = replace(entry, closer=self.closer_id, lease_until=now + self.lease_secs)
        return await self.update(key, taken, rev)

    async def update(
        self, key: BucketKey, entry: CatalogEntry, revision: int
    ) -> tuple[CatalogEntry, int] | None:
        try:
            rev = await self.kv.update(key.label(), entry.encode(), revision)
        except ConcurrentUpdateError:
            return None
        return entry, rev

    async def cursor(self, event_type: str) -> int | None:
        e = await self.kv.get(f"cursor.{event_type}")
        return None if e is None else int(json.loads(e.value)["next_start"])

    async def set_cursor(self, event_type: str, next_start: int) -> None:
        await self.kv.put(
            f"cursor.{event_type}",
            json.dumps({"format_version": FORMAT_VERSION, "next_start": next_start}).encode(),
        )

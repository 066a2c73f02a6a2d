"""Headroom in the NATS store for Courier's own records.

The streams of all event types share the store limit (``nats.store_max_bytes``), and
so do the KV buckets and the close stream that the closer, auditor and admin routes
write: schema registry, bucket catalog, audit counts, close notifications. nats-server
refuses *every* write once the store is over its limit (10023 "insufficient
resources"), so if events filled the store, no bucket would close until old events
aged out of the streams (G4). The gateway therefore refuses events — 503 with
``Retry-After``, nothing accepted (G8) — once the store holds the limit minus
``nats.store_headroom_bytes``, and leaves that room to Courier's own records.

The usage is read every ``gateway.store_check_interval_secs``, and between two reads
this gateway adds what it stored itself, so it alone cannot overshoot by more than
the requests it has in flight, however slow a read is. Other gateways' events show
at the next read; the headroom covers what they store meanwhile. The server's own
limit stays the backstop: a publish over it is refused the same way.
Without a known store limit (an external NATS and no ``nats.store_max_bytes``) there
is no guard, only that backstop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from courier.errors import StreamFullError, TransportError
from courier.settings import Settings

log = logging.getLogger("courier.gateway.store")


class StoreUsage(Protocol):
    """What the guard needs of the transport (:class:`courier.transport.Transport`)."""

    async def store_used_bytes(self) -> int:
        """Bytes all streams hold on disk, summed over replicas."""
        ...


def _mib(n: int) -> str:
    return f"{n / 1024**2:.0f} MiB"


class StoreGuard:
    """Refuses events while the store holds more than its limit minus the headroom."""

    def __init__(
        self, usage: StoreUsage, *, limit_bytes: int, headroom_bytes: int, replicas: int = 1
    ) -> None:
        self._usage = usage
        self._replicas = max(1, replicas)
        #: A headroom larger than a quarter of a (small) store would leave events little.
        self.headroom_bytes = min(headroom_bytes, limit_bytes // 4)
        self.limit_bytes = limit_bytes
        self.events_limit_bytes = limit_bytes - self.headroom_bytes
        #: Bytes one server's store held at the last read (None before the first).
        self._read_bytes: int | None = None
        #: What this gateway stored since the last read began.
        self._stored_since_bytes = 0
        self._reading_failed = False

    @classmethod
    def from_settings(cls, settings: Settings, usage: StoreUsage) -> StoreGuard | None:
        """The guard of a gateway, or None when the store limit is not known."""
        n = settings.nats
        if n.store_max_bytes is None:
            return None
        return cls(
            usage,
            limit_bytes=n.store_max_bytes,
            headroom_bytes=n.store_headroom_bytes,
            replicas=n.replicas,
        )

    @property
    def used_bytes(self) -> int | None:
        """The store's usage: the last read plus what this gateway stored since."""
        if self._read_bytes is None:
            return None
        return self._read_bytes + self._stored_since_bytes

    @property
    def full(self) -> bool:
        used = self.used_bytes
        return used is not None and used >= self.events_limit_bytes

    def note_stored(self, nbytes: int) -> None:
        """This gateway stored a message of ``nbytes`` (counted until the next read)."""
        self._stored_since_bytes += nbytes

    def check(self) -> None:
        """Raise StreamFullError while events would eat into the headroom."""
        if self.full:
            raise StreamFullError(
                f"no room to store events: the NATS store holds {_mib(self.used_bytes or 0)} "
                f"of its {_mib(self.limit_bytes)} limit, and the last "
                f"{_mib(self.headroom_bytes)} are kept for Courier's own records "
                "(nats.store_headroom_bytes). Nothing stored is dropped; events are accepted "
                "again as old ones age out (nats.stream_max_age_secs) or the limit is raised"
            )

    async def refresh(self) -> None:
        """Read the store's usage now (a failed read keeps the last one)."""
        was_full = self.full
        # What is stored while the read is under way may or may not be in it: keep
        # counting it, so the estimate errs on the full side.
        stored_before = self._stored_since_bytes
        try:
            read = await self._usage.store_used_bytes() // self._replicas
        except TransportError as exc:
            if not self._reading_failed:
                log.warning("cannot read the NATS store's usage (%s); keeping the last", exc)
            self._reading_failed = True
            return
        self._read_bytes = read
        self._stored_since_bytes -= stored_before
        self._reading_failed = False
        if self.full and not was_full:
            log.warning(
                "NATS store holds %s of %s: refusing events (503) to keep %s for "
                "Courier's own records",
                _mib(self.used_bytes or 0),
                _mib(self.limit_bytes),
                _mib(self.headroom_bytes),
            )
        elif was_full and not self.full:
            log.info("NATS store has room again (%s used): accepting events", _mib(read))

    async def run(self, interval_secs: float) -> None:
        """Refresh every ``interval_secs`` until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval_secs)

"""The gateway's side of the audit: accepted and rejected events per (type, bucket).

Counting happens in memory on the request path (a dict update, no I/O); a
background task adds the counts to the audit KV every
``audit.gateway_flush_interval_secs`` with compare-and-set. Flush protocol:

1. take the pending counts of every type and give them a new serial;
2. per type, add them to ``gateway.<Type>`` unless that gateway's serial is
   already recorded there (:meth:`AuditStore.add_gateway_counts`);
3. a type whose write failed keeps its snapshot and serial and is retried
   first on the next flush, so an attempt whose outcome was unknown is
   recognised and never added twice.

A gateway crash loses at most one interval of counts: the audit then shows
fewer accepted events than stored ones, never a false loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

from courier.audit.store import AuditStore
from courier.errors import CourierError
from courier.model import bucket_start

log = logging.getLogger("courier.audit.gateway")

#: Type under which rejections of unregistered types are counted (bounded keys).
UNKNOWN_TYPE = "_unknown"


def default_gateway_id() -> str:
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


class GatewayTally:
    """In-memory accepted/rejected counts of one gateway, flushed to the audit KV."""

    def __init__(self, bucket_width_secs: int, gateway_id: str | None = None) -> None:
        self.width = bucket_width_secs
        self.gateway_id = gateway_id or default_gateway_id()
        self._pending: dict[str, dict[int, list[int]]] = {}
        #: type -> (serial, deltas) of a flush whose outcome is unknown.
        self._retry: dict[str, tuple[int, dict[int, tuple[int, int]]]] = {}
        self._serial = 0

    def add(
        self, event_type: str, received_at: float, *, accepted: int = 0, rejected: int = 0
    ) -> None:
        if not accepted and not rejected:
            return
        row = self._pending.setdefault(event_type, {}).setdefault(
            bucket_start(received_at, self.width), [0, 0]
        )
        row[0] += accepted
        row[1] += rejected

    @property
    def unflushed(self) -> bool:
        return bool(self._pending or self._retry)

    async def flush(self, store: AuditStore, *, retention_secs: int) -> None:
        """Add everything counted so far to the KV (see the module docstring)."""
        now = time.time()
        prune_before = bucket_start(now - retention_secs, self.width)

        async def attempt(event_type: str, serial: int, deltas: dict[int, tuple[int, int]]) -> bool:
            try:  # step 2
                await store.add_gateway_counts(
                    event_type, self.gateway_id, serial, deltas, now=now, prune_before=prune_before
                )
            except CourierError as exc:
                self._retry[event_type] = (serial, deltas)  # step 3
                log.warning("cannot add audit counts of %s (%s); retrying", event_type, exc)
                return False
            return True

        blocked = set()
        for event_type, (serial, deltas) in list(self._retry.items()):
            del self._retry[event_type]
            if not await attempt(event_type, serial, deltas):
                # Newer counts of this type wait: a higher serial stored first
                # would make the retried one look applied.
                blocked.add(event_type)
        ready = {t: rows for t, rows in self._pending.items() if t not in blocked}
        if not ready:
            return
        self._serial += 1  # step 1
        serial = self._serial
        for event_type, rows in ready.items():
            del self._pending[event_type]
            await attempt(event_type, serial, {s: (r[0], r[1]) for s, r in rows.items()})

    async def run(
        self,
        store: AuditStore,
        *,
        interval_secs: float,
        retention_secs: int,
        stop: asyncio.Event,
        connected: Callable[[], bool] = lambda: True,
    ) -> None:
        """Flush every ``interval_secs`` until ``stop``; then one last flush.

        While ``connected()`` is False nothing is sent (a request queued in a
        disconnected client would only time out); counts keep accumulating.
        """
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_secs)
            if connected():
                await self.flush(store, retention_secs=retention_secs)
            elif stop.is_set() and self.unflushed:
                log.warning(
                    "stopping while disconnected from NATS: this gateway's latest audit counts "
                    "are not stored (the audit will show fewer accepted events, not a loss)"
                )

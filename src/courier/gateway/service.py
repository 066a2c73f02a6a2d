"""The Event Service without HTTP: validate a batch, stamp it, store it, report.

Protocol of :meth:`EventService.ingest` (the 2xx promise of DESIGN G1):

1. validate the whole batch against one registry snapshot; the caller's
   ``admit`` check may then refuse it whole (API key types, rate limit);
2. fill missing ids, encode each type's valid events in the stored form
   (all stamped with the one ``received_at`` of the request) and the
   rejected ones as events of ``_invalid``;
3. submit every type's events to the coalescer and wait for all of them;
4. only then count them as accepted and return.

If any publish fails, the whole call fails: the client is told nothing was
accepted and retries the batch. Events of the batch that were stored anyway
carry the same ids on the retry, so the closer keeps one copy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from courier.audit.gateway import UNKNOWN_TYPE, GatewayTally
from courier.errors import TransportUnavailableError
from courier.gateway.body import BodyFormat
from courier.gateway.ingest import DecodedBatch, Rejection, Validator
from courier.gateway.metrics import UNKNOWN_TYPE_LABEL, GatewayMetrics
from courier.gateway.publisher import Coalescer, EventSink
from courier.gateway.storeguard import StoreGuard
from courier.model import INVALID_TYPE, uuid7
from courier.schema import INVALID_RAW_MAX_BYTES, CompiledType, Registry, invalid_type
from courier.settings import Settings

log = logging.getLogger("courier.gateway.service")


_NO_TYPES: Mapping[str, CompiledType] = {}


@dataclass(frozen=True)
class _Snapshot:
    key: frozenset[tuple[str, int]]
    types: dict[str, CompiledType]
    validator: Validator


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    rejections: list[Rejection]


class EventService:
    """Validates, stamps and stores batches; owns the registry snapshot and the coalescer."""

    def __init__(
        self,
        settings: Settings,
        sink: EventSink,
        registry: Registry,
        metrics: GatewayMetrics,
        *,
        tally: GatewayTally | None = None,
        store: StoreGuard | None = None,
    ) -> None:
        self.settings = settings
        #: Refuses events before the NATS store is full (None: no known store limit).
        self.store = store
        #: Accepted/rejected counts per (type, bucket) for the auditor (in memory;
        #: the app's lifespan flushes them to KV).
        self.tally = tally
        self.sink = sink
        self.registry = registry
        self.metrics = metrics
        self.coalescer = Coalescer.from_settings(sink, settings, metrics)
        self._snapshot: _Snapshot | None = None

    @property
    def types(self) -> Mapping[str, CompiledType]:
        """The registered types of the current snapshot (the same object until one changes)."""
        return self._snapshot.types if self._snapshot is not None else _NO_TYPES

    @property
    def registry_loaded(self) -> bool:
        return self._snapshot is not None

    def check_available(self) -> None:
        """Raise TransportUnavailableError (or StreamFullError) when a batch cannot be
        stored right now."""
        if self._snapshot is None:
            raise TransportUnavailableError("the schema registry has not been loaded yet")
        if not self.sink.is_connected:
            raise TransportUnavailableError("the gateway is not connected to the transport")
        if self.store is not None:
            self.store.check()

    async def refresh(self) -> bool:
        """Re-read the registry; rebuild the decoders only when a type or version changed.

        Returns True when the snapshot changed.
        """
        types = await self.registry.compiled()
        key = frozenset((name, t.version) for name, t in types.items())
        if self._snapshot is not None and self._snapshot.key == key:
            return False
        self._snapshot = _Snapshot(key, types, Validator(types, self.settings.gateway))
        log.info(
            "event types loaded: %s",
            ", ".join(f"{n} v{v}" for n, v in sorted(key) if n != INVALID_TYPE) or "none",
        )
        return True

    async def ingest(
        self,
        body: bytes,
        fmt: BodyFormat,
        received_at: dt.datetime,
        admit: Callable[[DecodedBatch], None] | None = None,
    ) -> IngestResult:
        """Store a batch; return once every event (valid or rejected) is stored.

        ``admit`` sees the validated batch before anything is stored and may
        refuse it whole by raising (a RequestError: 403 for a type the API key
        may not send, 429 over its rate limit).
        """
        return await self.ingest_with(lambda v: v.decode(body, fmt), received_at, admit)

    async def ingest_with(
        self,
        decode: Callable[[Validator], DecodedBatch],
        received_at: dt.datetime,
        admit: Callable[[DecodedBatch], None] | None = None,
    ) -> IngestResult:
        """:meth:`ingest` for another wire format: ``decode`` builds the validated batch
        with the current registry snapshot's :class:`Validator` (e.g. by translating
        the body into Courier's and adding its own rejections; gateway/segment/)."""
        self.check_available()
        snapshot = self._snapshot
        assert snapshot is not None
        metrics = self.metrics
        started = time.perf_counter()
        batch = decode(snapshot.validator)  # step 1
        if admit is not None:
            admit(batch)
        validated = time.perf_counter()
        metrics.validated(validated - started)
        submissions, counts, rejections = self._encode(batch, snapshot, received_at)
        # The decoded events are dropped here, before the wait for the store, while they
        # are still in the CPU's cache: held until the ack (~20 ms, dozens of requests
        # later) their deallocation and the allocator's reuse of their memory missed the
        # cache, and malloc plus dealloc took ~20 % of the gateway's CPU under load
        # (perf; issue 13). Only the stored bytes, the ids and the counts live on.
        del batch
        submitted = time.perf_counter()
        metrics.encoded(submitted - validated)
        try:
            if len(submissions) == 1:  # one type, nothing rejected: no task per submission
                await submissions[0]  # step 3
            else:
                results = await asyncio.gather(*submissions, return_exceptions=True)  # step 3
                for r in results:
                    if isinstance(r, BaseException):
                        raise r
        finally:
            metrics.store_waited(time.perf_counter() - submitted)
        self._count(counts, rejections, snapshot, received_at.timestamp())  # step 4
        return IngestResult(sum(counts.values()), rejections)

    def _encode(
        self, batch: DecodedBatch, snapshot: _Snapshot, received_at: dt.datetime
    ) -> tuple[list[Coroutine[Any, Any, None]], dict[str, int], list[Rejection]]:
        """Step 2: the stored form of each type's events, submitted to the group commit
        (coroutines not yet awaited); the number of valid events per type; the rejections."""
        submissions = []
        counts: dict[str, int] = {}
        for name, events in batch.valid.items():
            compiled = snapshot.types[name]
            ids = [e.id or uuid7() for e in events]  # type: ignore[attr-defined]
            stored = compiled.encode_stored(events, ids, batch.sent_at, received_at)
            submissions.append(self.coalescer.submit(name, compiled.version, stored, ids))
            counts[name] = len(events)
        if batch.rejections:
            invalid = snapshot.types.get(INVALID_TYPE) or invalid_type()
            ids, events = _invalid_events(invalid, batch.rejections)
            stored = invalid.encode_stored(events, ids, batch.sent_at, received_at)
            submissions.append(self.coalescer.submit(INVALID_TYPE, invalid.version, stored, ids))
        return submissions, counts, batch.rejections

    def _count(
        self,
        counts: dict[str, int],
        rejections: list[Rejection],
        snapshot: _Snapshot,
        received_at: float,
    ) -> None:
        tally = self.tally
        for name, n in counts.items():
            self.metrics.accept(name, n)
            if tally is not None:
                tally.add(name, received_at, accepted=n)
        for r in rejections:
            known = r.event_type in snapshot.types and r.event_type != INVALID_TYPE
            self.metrics.reject(r.event_type if known else UNKNOWN_TYPE_LABEL, r.reason)  # type: ignore[arg-type]
            if tally is not None:
                tally.add(r.event_type if known else UNKNOWN_TYPE, received_at, rejected=1)  # type: ignore[arg-type]
        if tally is not None and rejections:
            # Rejected events are stored as events of ``_invalid``: accepted there.
            tally.add(INVALID_TYPE, received_at, accepted=len(rejections))

    async def close(self) -> None:
        await self.coalescer.close()


def _invalid_events(
    invalid: CompiledType, rejections: list[Rejection]
) -> tuple[list[str], list[msgspec.Struct]]:
    """The ``_invalid`` events recording rejections (rare: plain Python is fine here)."""
    ids = []
    events = []
    for r in rejections:
        event_id = r.id or uuid7()
        raw = r.raw[:INVALID_RAW_MAX_BYTES].decode("utf-8", errors="replace")
        doc = {
            "type": INVALID_TYPE,
            "id": event_id,
            "data": {"event_type": r.event_type, "error": r.error, "index": r.index, "raw": raw},
        }
        ids.append(event_id)
        events.append(msgspec.convert(doc, invalid.event_struct))
    return ids, events

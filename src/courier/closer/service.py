"""The closer service: per-type watermarks decide when a bucket closes.

Watermark of a type: the ``published_at`` of the oldest message the
``writer`` consumer has not acked; when nothing is pending or unacked, "now"
minus the allowed clock skew. Bucket H of type T is closable when the
watermark >= end(H) + grace. Types are independent: a stalled type never
delays another (each is handled in its own step, failures are contained).
Buckets of a type close in order, from the bucket containing the moment the
type was registered, empty ones included. A type whose close fails on storage
(disk full, read-only) is retried with exponential backoff, up to
``closer.backoff_max_secs``, while the other types keep closing.

With ``tables.enabled``, every closed bucket is then handed to a
:class:`courier.tables.TableSync` that commits it to the type's Iceberg table in
the background; the close never waits for it, nor fails with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

import pyarrow as pa

from courier.closer.catalog import Catalog
from courier.closer.metrics import CloserMetrics
from courier.closer.protocol import BucketCloser, CloseResult
from courier.errors import ConfigError, CourierError, StorageError
from courier.model import INVALID_TYPE, BucketKey, bucket_start
from courier.schema import CompiledType, Registry
from courier.service.faults import FaultHooks
from courier.settings import Settings
from courier.storage.layout import open_layout
from courier.tables import TableMetrics, TableSync
from courier.transport import WRITER_CONSUMER, Transport

log = logging.getLogger("courier.closer")


def default_closer_id() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


class Closer:
    """Closes every type's buckets as their watermark passes; run with :meth:`run`."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        registry: Registry,
        catalog: Catalog,
        *,
        metrics: CloserMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.width = settings.bucket_width_secs
        self.transport = transport
        self.registry = registry
        self.catalog = catalog
        self.metrics = metrics or CloserMetrics()
        # A store call gives up within half a claim lease, so a stalled close fails
        # (and backs off) rather than outlive its claim.
        self.layout = open_layout(
            settings, retry_deadline_secs=settings.closer.claim_lease_secs / 2
        )
        if settings.tables.enabled and self.layout.local_root is None:
            raise ConfigError(
                f"tables.enabled commits bucket files in place, which needs a local bucket "
                f"store, but the store is {self.layout.store.url}; set tables.enabled = false "
                "(COURIER_TABLES__ENABLED=false) to close buckets on an object store"
            )
        self.faults = FaultHooks.from_env()
        self.bucket_closer = BucketCloser(
            self.layout,
            catalog,
            settings.closer,
            self._publish_closed,
            scratch_dir=settings.resolved_scratch_dir,
            after_step=self.faults.closer_after_step,
        )
        self.tables = (
            TableSync(settings, self.layout, metrics=TableMetrics(self.metrics.registry))
            if settings.tables.enabled
            else None
        )
        self._backoff_secs: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}

    def _now(self) -> float:
        """This host's wall clock (with the fault suite's offset, if any)."""
        return time.time() + self.faults.clock_offset_secs

    async def _publish_closed(self, key: BucketKey, body: bytes) -> None:
        await self.transport.publish_closed(key.event_type, body, msg_id=f"closed.{key.label()}")

    async def run(self, stop: asyncio.Event) -> None:
        log.info("closer %s starting on %s", self.catalog.closer_id, self.layout.store.url)
        tables = asyncio.create_task(self.tables.run(stop, self._schemas)) if self.tables else None
        while not stop.is_set():
            try:
                await self.run_once()
            except CourierError as exc:
                log.error("close pass failed: %s; retrying", exc)
            except Exception:
                # Closes are resumable at every step, so a retry is always safe.
                log.exception("close pass failed unexpectedly; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.closer.poll_interval_secs)
        if tables is not None:
            await tables  # it returns once stopped (a commit in flight finishes first)
        log.info("closer %s stopped", self.catalog.closer_id)

    async def _schemas(self) -> dict[str, pa.Schema]:
        """Every type's current Arrow schema, for the table sync."""
        return {name: c.arrow_schema for name, c in (await self.registry.compiled()).items()}

    async def run_once(self) -> list[CloseResult]:
        """One pass over every type; returns the buckets closed."""
        try:
            compiled = await self.registry.compiled()
            records = {r.name: r for r in await self.registry.list()}
        except CourierError as exc:
            log.warning("cannot read the schema registry (%s); retrying", exc)
            return []
        if not records:
            return []
        first_enabled = min(r.enabled_at for r in records.values())
        done: list[CloseResult] = []
        for name, ctype in sorted(compiled.items()):
            enabled_at = records[name].enabled_at if name in records else first_enabled
            if self._retry_at.get(name, 0.0) > time.monotonic():
                continue  # backing off after a storage error
            try:
                done += await self._close_type(ctype, enabled_at)
            except StorageError as exc:
                # A full or read-only disk fails every attempt the same way, and each one
                # re-reads and re-deduplicates the bucket: back off, per type (G5).
                self.metrics.close_failures.labels(name).inc()
                delay = self._back_off(name)
                log.error("closing %s failed: %s; retrying in %.1fs", name, exc, delay)
            except CourierError as exc:
                self.metrics.close_failures.labels(name).inc()
                log.error("closing %s failed: %s; retrying next pass", name, exc)
            else:
                self._backoff_secs.pop(name, None)
                self._retry_at.pop(name, None)
        return done

    def _back_off(self, event_type: str) -> float:
        """Exponential backoff of a type after a storage error: from the poll interval, doubling."""
        cfg = self.settings.closer
        prev = self._backoff_secs.get(event_type, 0.0)
        delay = min(cfg.backoff_max_secs, max(cfg.poll_interval_secs, prev * 2))
        self._backoff_secs[event_type] = delay
        self._retry_at[event_type] = time.monotonic() + delay
        return delay

    async def watermark(self, event_type: str) -> tuple[float, float | None]:
        """(watermark, oldest unacked published_at or None)."""
        progress = await self.transport.progress(event_type)
        self.metrics.pending.labels(event_type, WRITER_CONSUMER).set(
            progress.num_pending + progress.num_ack_pending
        )
        now_floor = self._now() - self.settings.max_clock_skew_secs
        oldest = progress.oldest_unacked_at
        return (now_floor if oldest is None else min(oldest, now_floor)), oldest

    def grace_secs(self, ctype: CompiledType) -> int:
        g = ctype.settings.grace_secs
        return self.settings.closer.default_grace_secs if g is None else g

    async def _close_type(self, ctype: CompiledType, enabled_at: float) -> list[CloseResult]:
        name = ctype.name
        cursor = await self.catalog.cursor(name)
        if cursor is None:
            cursor = bucket_start(enabled_at, self.width)
        wm, oldest = await self.watermark(name)
        now = self._now()
        self.metrics.oldest_unacked_age.labels(name).set(0 if oldest is None else now - oldest)
        self.metrics.watermark_lag.labels(name).set(now - wm)
        grace = self.grace_secs(ctype)
        done: list[CloseResult] = []
        while cursor + self.width + grace <= wm:
            key = BucketKey(name, cursor)
            result = await self.bucket_closer.close(key, ctype, wm)
            if result is None:
                return done  # another closer holds it; it will advance the cursor
            cursor += self.width
            await self.catalog.set_cursor(name, cursor)
            m = result.manifest
            self.metrics.closed.labels(name).inc()
            self.metrics.close_delay.labels(name).observe(m.close_delay_secs)
            self.metrics.duplicates_dropped.labels(name).inc(m.duplicates_dropped)
            if m.events or name != INVALID_TYPE:
                log.info(
                    "closed %s %s: %d events (%d duplicates dropped, %d skewed), delay %.1fs",
                    name,
                    m.bucket_start,
                    m.events,
                    m.duplicates_dropped,
                    m.skewed_in,
                    m.close_delay_secs,
                )
            done.append(result)
            if self.tables is not None and m.files:  # an empty bucket adds nothing to a table
                self.tables.submit(key, ctype.arrow_schema)  # never blocks, never raises
        return done

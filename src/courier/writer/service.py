"""The writer: consume every type's stream into durable staging files.

The protocol, per (type, bucket) buffer (DESIGN §6):

1. fetch a batch from the type's ``writer`` durable consumer;
2. buffer the messages per (type, bucket, schema version) and decode them
   into Arrow in bulk, many messages per call (once a buffer holds
   ``_DECODE_BATCH_BYTES`` of bodies, and at its flush), adding
   ``published_at`` (the transport's timestamp), ``received_dc`` (the DC that
   accepted each message, from its source header: exact, set by NATS, never by
   a producer), ``_seq`` and ``_idx``;
3. flush a buffer on rows, bytes, age
   or memory pressure: write ``_staging/<type>/<bucket>/<writer>-<first>-<last>-<flush>.parquet``
   as one ``put`` to the bucket store (atomic: on a local store temp, fsync, rename,
   fsync dir; on S3/GCS a single PUT, never visible half-written); ``<flush>`` is
   unique per flush, so a range redelivered by a repair never reuses a name a closed
   bucket consumed;
4. only then ack every message in that file, and wait until the server has
   applied the acks.

A crash between 3 and 4 means the messages are redelivered and written again
into another staging file; the closer removes the duplicates. Nothing is
acked before it is durable, so nothing acknowledged is lost.

Storage errors: no ack, exponential backoff, no busy loop; buffers are kept and
fetching pauses while memory is at its bound. Long buffering sends progress
acks so the server does not redeliver. Undecodable messages are retried and,
after ``max_deliveries``, quarantined raw with the reason and terminated.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field

import pyarrow as pa

from courier.errors import CourierError, StorageError, TransportError
from courier.model import BucketKey, bucket_start
from courier.schema import CompiledType, Registry
from courier.schema.jsonread import BulkJsonReader
from courier.schema.stored import (
    EVENTS_HEADER,
    UndecodableError,
    decode_batch,
    schema_version_of,
)
from courier.service.faults import FaultHooks
from courier.service.pertype import PerTypeTasks
from courier.settings import Settings
from courier.storage.atomic import write_parquet
from courier.storage.layout import open_layout
from courier.transport import Delivery, PullConsumer, Transport
from courier.transport.sources import AcceptingDc
from courier.transport.tasks import cancel_and_wait
from courier.writer.metrics import WriterMetrics

log = logging.getLogger("courier.writer")

#: Bodies a buffer collects before they are decoded in one call. pyarrow's JSON
#: reader costs about twice the CPU per row on one 100-event message as on a few
#: MB of them (issue 13); a bound keeps each decode short and finds poison early.
_DECODE_BATCH_BYTES = 8 * 1024 * 1024


@dataclass(eq=False)
class _Buffer:
    key: BucketKey
    compiled: CompiledType
    tables: list[pa.Table] = field(default_factory=list)
    #: Every message whose rows go into this buffer's file, decoded or not (acked at flush).
    deliveries: list[Delivery] = field(default_factory=list)
    #: The messages not decoded yet (the last ones of ``deliveries``).
    pending: list[Delivery] = field(default_factory=list)
    pending_bytes: int = 0
    rows: int = 0
    nbytes: int = 0
    created: float = field(default_factory=time.monotonic)
    last_progress: float = field(default_factory=time.monotonic)
    #: Held while messages are out of ``pending`` but not yet in ``tables``: a flush
    #: waits for it, so it never acks a message whose rows are still being decoded.
    decoding: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def version(self) -> int:
        return self.compiled.version

    def add_pending(self, deliveries: list[Delivery]) -> None:
        size = sum(len(d.data) for d in deliveries)
        self.deliveries.extend(deliveries)
        self.pending.extend(deliveries)
        self.pending_bytes += size
        self.nbytes += size
        self.rows += sum(_header_rows(d) for d in deliveries)

    def take_pending(self) -> list[Delivery]:
        """The undecoded messages, no longer counted as pending."""
        taken, self.pending = self.pending, []
        self.nbytes -= self.pending_bytes
        self.rows -= sum(_header_rows(d) for d in taken)
        self.pending_bytes = 0
        return taken

    def add_decoded(self, table: pa.Table, poisoned: list[Delivery]) -> None:
        """Rows of messages taken with :meth:`take_pending`, minus the poisoned ones."""
        if poisoned:
            gone = {id(d) for d in poisoned}
            self.deliveries = [d for d in self.deliveries if id(d) not in gone]
        if table.num_rows:
            self.tables.append(table)
        self.rows += table.num_rows
        self.nbytes += table.nbytes


def _header_rows(d: Delivery) -> int:
    """Rows of an undecoded message, from the gateway's header (0 when absent)."""
    try:
        return max(0, int(d.headers.get(EVENTS_HEADER, "0")))
    except ValueError:
        return 0


def default_writer_id() -> str:
    return f"{socket.gethostname().replace('-', '_')}_{os.getpid()}"


class Writer:
    """Consumes all registered types; run with :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        registry: Registry,
        *,
        metrics: WriterMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.writer
        self.width = settings.bucket_width_secs
        self.transport = transport
        self.registry = registry
        # A store call gives up well before the messages' ack_wait runs out, so a slow
        # store means a failed flush (no ack, backoff), never a redelivery mid-flush.
        self.layout = open_layout(settings, retry_deadline_secs=self.cfg.ack_wait_secs / 3)
        self.store = self.layout.store
        self.writer_id = self.cfg.writer_id or default_writer_id()
        self.metrics = metrics or WriterMetrics()
        self._compiled: dict[str, CompiledType] = {}
        self._buffers: dict[tuple[str, int, int], _Buffer] = {}
        self._tasks = PerTypeTasks(settings, transport, self._consume, label="consuming", log=log)
        self._backoff_secs = 0.0
        self._retry_at = 0.0
        self._flush_lock = asyncio.Lock()
        self._fetch_slots = asyncio.Semaphore(max(1, self.cfg.max_concurrent_fetches))
        self._avg_message_bytes: dict[str, float] = {}
        self._accepting_dc: dict[str, AcceptingDc] = {}
        #: Reads large gateway-built buffers (issue 13); opened by :meth:`run`.
        self._bulk: BulkJsonReader | None = None
        self._bulk_counted = 0
        self.faults = FaultHooks.from_env()

    # -- lifecycle ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then flush what is buffered (best effort)."""
        log.info("writer %s starting on %s", self.writer_id, self.store.url)
        self._bulk = BulkJsonReader()
        self._bulk_counted = 0
        maintenance = asyncio.create_task(self._maintain(stop), name="writer-maintain")
        try:
            while not stop.is_set():
                await self._refresh_types()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.cfg.registry_refresh_secs)
        finally:
            await self._tasks.stop()
            await cancel_and_wait([maintenance])
            await self.flush_all()
            self._bulk.close()
            self._bulk = None
            log.info("writer %s stopped", self.writer_id)

    async def _refresh_types(self) -> None:
        try:
            compiled = await self.registry.compiled()
        except CourierError as exc:
            log.warning("cannot read the schema registry (%s); retrying", exc)
            return
        self._compiled = compiled
        await self._tasks.ensure(compiled)

    # -- consuming ----------------------------------------------------------------

    async def _consume(self, event_type: str) -> None:
        consumer: PullConsumer | None = None
        while True:
            try:
                if consumer is None:
                    consumer = await self.transport.pull_consumer(event_type)
                    log.info("consuming %s", event_type)
                while self._buffered_bytes() >= self.cfg.max_buffer_bytes:
                    # Memory bound reached: stop fetching until flushes free it.
                    await asyncio.sleep(0.05)
                async with self._fetch_slots:
                    want = self._batch_size(event_type)
                    got = await consumer.fetch(want, self.cfg.fetch_wait_secs)
                    if got:
                        self._observe_sizes(event_type, got)
                        await self._accept(event_type, got)
                if got and len(got) < want:
                    # The stream is drained: let the trickle gather for one fetch wait
                    # rather than pay a fetch (and a decode) per message.
                    await asyncio.sleep(self.cfg.fetch_wait_secs)
            except asyncio.CancelledError:
                raise
            except TransportError as exc:
                log.warning("consuming %s: %s; retrying in 1s", event_type, exc)
                await asyncio.sleep(1.0)
            except Exception:
                # Nothing was acked for the batch in hand: it will be redelivered.
                log.exception("consuming %s failed unexpectedly; retrying in 5s", event_type)
                await asyncio.sleep(5.0)

    def _batch_size(self, event_type: str) -> int:
        """Messages per fetch, so that one fetch brings about ``fetch_max_bytes`` at most."""
        avg = self._avg_message_bytes.get(event_type)
        if avg is None:
            return 1  # size unknown: one message, so one fetch cannot overshoot the bounds
        return max(1, min(self.cfg.fetch_batch_messages, int(self.cfg.fetch_max_bytes / avg)))

    def _observe_sizes(self, event_type: str, got: list[Delivery]) -> None:
        size = max(len(d.data) for d in got)
        prev = self._avg_message_bytes.get(event_type, size)
        self._avg_message_bytes[event_type] = max(size, 0.8 * prev + 0.2 * size)

    async def _accept(self, event_type: str, deliveries: list[Delivery]) -> None:
        compiled = self._compiled[event_type]
        newer = [d for d in deliveries if schema_version_of(d) > compiled.version]
        if newer:
            self._compiled = await self.registry.compiled()
            compiled = self._compiled[event_type]
        ok: list[Delivery] = []
        for d in deliveries:
            if schema_version_of(d) > compiled.version:
                log.warning(
                    "%s seq %d uses schema version %d unknown here; retrying later",
                    event_type,
                    d.seq,
                    schema_version_of(d),
                )
                await d.nak(delay_secs=self.cfg.registry_refresh_secs)
            else:
                ok.append(d)
        for run in self._runs_by_bucket(ok):
            buf = self._buffer_of(compiled, run[0])
            buf.add_pending(run)
            if buf.pending_bytes >= _DECODE_BATCH_BYTES:
                await self._decode_pending(buf)

    def _runs_by_bucket(self, deliveries: list[Delivery]) -> list[list[Delivery]]:
        """Consecutive deliveries split where their bucket changes."""
        runs: list[list[Delivery]] = []
        last = None
        for d in deliveries:
            b = bucket_start(d.published_at, self.width)
            if b != last:
                runs.append([])
                last = b
            runs[-1].append(d)
        return runs

    def _buffer_of(self, compiled: CompiledType, first: Delivery) -> _Buffer:
        key = BucketKey(compiled.name, bucket_start(first.published_at, self.width))
        bkey = (key.event_type, key.start, compiled.version)
        buf = self._buffers.get(bkey)
        if buf is None:
            buf = self._buffers[bkey] = _Buffer(key, compiled)
        return buf

    async def _decode_pending(self, buf: _Buffer) -> None:
        """Decode the buffer's undecoded messages in one call; poison ones are isolated
        (decoded one by one), retried or quarantined, and leave the buffer."""
        async with buf.decoding:
            run = buf.take_pending()
            if run:
                await self._decode_taken(buf, run)

    def _dc_of(self, event_type: str) -> AcceptingDc:
        dc_of = self._accepting_dc.get(event_type)
        if dc_of is None:
            dc_of = self._accepting_dc[event_type] = AcceptingDc(self.settings, event_type)
        return dc_of

    async def _decode_taken(self, buf: _Buffer, run: list[Delivery]) -> None:
        compiled = buf.compiled
        dc_of = self._dc_of(compiled.name)
        poisoned: list[Delivery] = []
        try:
            table = await asyncio.to_thread(decode_batch, compiled, run, dc_of, self._bulk)
        except UndecodableError:
            tables = []
            for d in run:
                try:
                    tables.append(await asyncio.to_thread(decode_batch, compiled, [d], dc_of))
                except UndecodableError as exc:
                    poisoned.append(d)
                    await self._poison(compiled.name, d, str(exc))
            table = pa.concat_tables(tables) if tables else compiled.arrow_schema.empty_table()
        buf.add_decoded(table, poisoned)
        for d in run:  # the rows are in ``table`` now; only the acks need the deliveries
            d.release_body()
        self.metrics.rows_received.labels(compiled.name).inc(table.num_rows)
        if self._bulk is not None and (read := self._bulk.rows - self._bulk_counted):
            self.metrics.rows_bulk_decoded.inc(read)  # every type's: one reader for all
            self._bulk_counted += read

    async def _poison(self, event_type: str, d: Delivery, reason: str) -> None:
        if d.num_delivered < self.cfg.max_deliveries:
            log.warning(
                "%s seq %d undecodable (delivery %d of %d): %s; will retry",
                event_type,
                d.seq,
                d.num_delivered,
                self.cfg.max_deliveries,
                reason,
            )
            await d.nak(delay_secs=min(30.0, 2.0**d.num_delivered))
            return
        qkey = self.layout.quarantine_key(event_type, d.seq)
        record = {
            "format_version": 1,
            "event_type": event_type,
            "stream_seq": d.seq,
            "published_at": d.published_at,
            "num_delivered": d.num_delivered,
            "reason": reason,
            "headers": d.headers,
            "body_base64": base64.b64encode(d.data).decode(),
        }
        try:
            await asyncio.to_thread(self.store.put, qkey, json.dumps(record).encode())
        except StorageError as exc:
            log.error(
                "cannot quarantine %s seq %d (%s); it will be redelivered", event_type, d.seq, exc
            )
            await d.nak(delay_secs=5.0)
            return
        await d.term()
        self.metrics.quarantined.labels(event_type).inc()
        log.error(
            "quarantined %s seq %d to %s: %s", event_type, d.seq, self.layout.where(qkey), reason
        )

    # -- flushing -----------------------------------------------------------------

    def _buffered_bytes(self) -> int:
        return sum(b.nbytes for b in self._buffers.values())

    async def _maintain(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.1)
            try:
                await self._flush_due()
                await self._progress_acks()
            except asyncio.CancelledError:
                raise
            except TransportError as exc:
                log.warning("writer maintenance: %s", exc)
            self.metrics.buffered_bytes.set(self._buffered_bytes())

    def _due(self, now: float) -> list[_Buffer]:
        c = self.cfg
        due = [
            b
            for b in self._buffers.values()
            if b.rows >= c.flush_max_rows
            or b.nbytes >= c.flush_max_bytes
            or now - b.created >= c.flush_interval_secs
        ]
        total = self._buffered_bytes()
        if total >= c.max_buffer_bytes * 0.8:
            # Memory pressure: flush the largest buffers until well below the bound.
            for b in sorted(self._buffers.values(), key=lambda b: b.nbytes, reverse=True):
                if total < c.max_buffer_bytes * 0.5:
                    break
                if b not in due:
                    due.append(b)
                total -= b.nbytes
        return due

    async def _flush_due(self) -> None:
        now = time.monotonic()
        if now < self._retry_at:
            return
        for buf in self._due(now):
            if not await self._flush(buf):
                return

    async def flush_all(self) -> None:
        """Flush every buffer now (shutdown, tests)."""
        for buf in list(self._buffers.values()):
            await self._flush(buf)

    async def _flush(self, buf: _Buffer) -> bool:
        """Steps 3-4 for one buffer. Returns False (and backs off) on a storage error."""
        async with self._flush_lock:
            bkey = (buf.key.event_type, buf.key.start, buf.version)
            if self._buffers.get(bkey) is not buf:
                return True
            del self._buffers[bkey]  # new rows go to a fresh buffer meanwhile
            await self._decode_pending(buf)
            if not buf.deliveries:
                return True  # every message in it was poison: retried or quarantined
            seqs = [d.seq for d in buf.deliveries]
            skey = self.layout.staging_key(
                buf.key, self.writer_id, min(seqs), max(seqs), flush_id=secrets.token_hex(4)
            )
            path = self.layout.where(skey)
            table = pa.concat_tables(buf.tables)
            try:
                # Step 3: durable staging object, one put.
                await asyncio.to_thread(self._stage, skey, table)
            except StorageError as exc:
                self._requeue(bkey, buf)
                self._backoff_secs = min(
                    self.cfg.backoff_max_secs,
                    max(self.cfg.backoff_initial_secs, self._backoff_secs * 2),
                )
                self._retry_at = time.monotonic() + self._backoff_secs
                self.metrics.storage_errors.labels(buf.key.event_type).inc()
                log.error(
                    "writing staging file %s failed: %s; nothing acked, retrying in %.1fs",
                    path,
                    exc,
                    self._backoff_secs,
                )
                return False
            self._backoff_secs = 0.0
            self.faults.writer_staged(str(path))
            # Step 4: ack only now that the rows are durable.
            try:
                await self.transport.ack(buf.deliveries)
            except TransportError as exc:
                log.warning("%s; staging file %s stays, the closer removes duplicates", exc, path)
            self.metrics.flushes.labels(buf.key.event_type).inc()
            self.metrics.rows_flushed.labels(buf.key.event_type).inc(table.num_rows)
            log.debug("flushed %d rows to %s", table.num_rows, path)
            return True

    def _stage(self, skey: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        try:
            # No column statistics: nothing prunes staging files by them (the closer and
            # the reader read every row), and leaving them out saves ~0.13 core-s per
            # million rows at the same bytes (issue 13).
            write_parquet(buf, table, statistics=False)
        except pa.ArrowException as exc:
            raise StorageError(f"could not encode staging file {skey}: {exc}") from exc
        self.store.put(skey, buf.getvalue())

    def _requeue(self, bkey: tuple[str, int, int], buf: _Buffer) -> None:
        newer = self._buffers.get(bkey)
        if newer is not None:
            buf.tables.extend(newer.tables)
            buf.deliveries.extend(newer.deliveries)
            buf.pending.extend(newer.pending)
            buf.pending_bytes += newer.pending_bytes
            buf.rows += newer.rows
            buf.nbytes += newer.nbytes
        self._buffers[bkey] = buf

    async def _progress_acks(self) -> None:
        now = time.monotonic()
        interval = self.cfg.ack_wait_secs / 3
        touched = False
        for buf in list(self._buffers.values()):
            if now - buf.last_progress >= interval:
                for d in buf.deliveries:
                    await d.in_progress()
                buf.last_progress = now
                touched = True
        if touched:
            await self.transport.flush()

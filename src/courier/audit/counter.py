"""The auditor: counts every type's stream through the ``audit`` consumer, exactly once.

It trusts neither the writer nor the closer: it reads the stream on its own
durable consumer and counts lines, by the transport's timestamp. Counting
protocol, per type (DESIGN §10):

1. load ``stream.<Type>`` (counts + ``last_seq``) and its revision;
2. fetch a batch from the ``audit`` consumer (headers only: the consumer is
   provisioned with ``headers_only``, so bodies never travel to the auditor),
   gathering fetches for up to ``fetch_wait_secs`` or ``fetch_batch_messages``;
3. count each message with ``seq > last_seq`` into the bucket of its
   ``published_at``: the ``Courier-Events`` header the gateway sets, or, for a
   message without it (older data), the newlines of its body, read from the
   stream by sequence; messages with ``seq <= last_seq`` were counted before
   a crash or a lost ack and are skipped;
4. write counts and the new ``last_seq`` in ONE compare-and-set;
5. only then ack the batch (and wait until the server applied the acks).

A crash before 4 redelivers the batch, which is counted then; a crash
between 4 and 5 redelivers it and step 3 skips it. So counts are never lost
or doubled. A lost compare-and-set (another writer: a recount) reloads the
state and counts the batch again against it.

One auditor per type: ``last_seq`` assumes the messages arrive in stream
order, which holds for one consumer client (``courier up`` runs one).

:func:`recount` rebuilds the counts from the data still retained in the
stream, without touching the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import zstandard

from courier.audit.dc import DcAuditor
from courier.audit.metrics import AuditorMetrics
from courier.audit.report import BucketAudit, DeliveredScanner, build_report, gather_types
from courier.audit.store import AuditStore, StreamCounts
from courier.errors import ConcurrentUpdateError, CourierError, TransportError
from courier.model import bucket_start
from courier.schema import Registry
from courier.service.pertype import PerTypeTasks
from courier.settings import Settings
from courier.storage.layout import PARQUET_SUFFIX, STAGING_DIR, open_layout
from courier.transport import (
    AUDIT_CONSUMER,
    Delivery,
    MessageLike,
    PullConsumer,
    StoredMessage,
    Transport,
)

log = logging.getLogger("courier.audit")

#: A recount adds the scanned messages in chunks of this many (memory stays bounded).
_RECOUNT_BATCH_MESSAGES = 10_000

EVENTS_HEADER = "Courier-Events"
#: Set by the server on a headers-only delivery: the size of the body left out.
_BODY_SIZE_HEADER = "Nats-Msg-Size"


def header_count(headers: dict[str, str]) -> int | None:
    """The gateway's event count of a message, or None when it has no valid one."""
    value = headers.get(EVENTS_HEADER)
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 0 else None


def body_left_out(m: MessageLike) -> bool:
    """True for a headers-only delivery whose count needs the body (no count header)."""
    if m.data or header_count(m.headers) is not None:
        return False
    try:
        return int(m.headers.get(_BODY_SIZE_HEADER, "0")) > 0
    except ValueError:
        return False


def count_events(headers: dict[str, str], data: bytes) -> int:
    """Events in one message: the gateway's header, else the lines of the body."""
    n = header_count(headers)
    if n is not None:
        return n
    if headers.get("Content-Encoding") == "zstd":
        data = zstandard.ZstdDecompressor().decompress(data)
    data = data.strip(b"\n")
    return data.count(b"\n") + 1 if data else 0


def add_messages(
    counts: StreamCounts, messages: Sequence[MessageLike], width: int, spill_secs: float
) -> tuple[int, int, int]:
    """Step 3: add messages after ``counts.last_seq``; returns (messages, events, skipped)."""
    added_msgs = added_events = skipped = 0
    for m in messages:
        if m.seq <= counts.last_seq:
            skipped += 1
            continue
        start = bucket_start(m.published_at, width)
        n = count_events(m.headers, m.data)
        counts.add(start, n, head=m.published_at < start + spill_secs)
        counts.last_seq = m.seq
        added_msgs += 1
        added_events += n
    counts.spill_secs = spill_secs
    return added_msgs, added_events, skipped


class Auditor:
    """Counts every type's stream and checks recent buckets; run with :meth:`run`."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        registry: Registry,
        store: AuditStore,
        *,
        metrics: AuditorMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.audit
        self.width = settings.bucket_width_secs
        self.transport = transport
        self.registry = registry
        self.store = store
        self.metrics = metrics or AuditorMetrics()
        self.layout = open_layout(settings)
        self.scanner = DeliveredScanner(self.layout, scratch_dir=settings.resolved_scratch_dir)
        self._tasks = PerTypeTasks(settings, transport, self._count, label="auditing", log=log)
        #: (type, bucket, kind) already reported, so each breach is logged once.
        self._reported: set[tuple[str, int, str]] = set()
        #: Several DCs: exact completeness and transfer delay per DC (``audit/dc.py``).
        self.dcs = (
            DcAuditor(settings, transport, self.metrics.registry) if settings.dc.domains else None
        )

    async def run(self, stop: asyncio.Event) -> None:
        log.info("auditor starting")
        try:
            while not stop.is_set():
                await self._refresh_types()
                try:
                    await self.check()
                except CourierError as exc:
                    log.warning("audit check failed (%s); retrying", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.cfg.check_interval_secs)
        finally:
            await self._tasks.stop()
            if self.dcs is not None:
                await self.dcs.close()
            log.info("auditor stopped")

    async def _refresh_types(self) -> None:
        try:
            names = sorted(await self.registry.compiled())
        except CourierError as exc:
            log.warning("cannot read the schema registry (%s); retrying", exc)
            return
        await self._tasks.ensure(names)

    # -- counting ---------------------------------------------------------------------

    async def _count(self, event_type: str) -> None:
        consumer: PullConsumer | None = None
        counts: StreamCounts | None = None
        revision: int | None = None
        # Step 2 gathers up to fetch_batch_messages for up to fetch_wait_secs, so a
        # trickle of messages costs two fetches, one compare-and-set and one ack round
        # trip per batch, not per message.
        batch, wait = self.cfg.fetch_batch_messages, self.cfg.fetch_wait_secs
        pending: list[Delivery] = []
        first_at = 0.0
        while True:
            try:
                if consumer is None:
                    consumer = await self.transport.pull_consumer(event_type, AUDIT_CONSUMER)
                    log.info("auditing %s", event_type)
                if counts is None:
                    counts, revision = await self.store.stream_counts(event_type)  # step 1
                got = await consumer.fetch(batch - len(pending), wait)  # step 2
                if got:
                    if not pending:
                        first_at = time.monotonic()
                    pending.extend(got)
                    left = first_at + wait - time.monotonic()
                    if len(pending) < batch and left > 0:
                        # A trickle: let it gather in the stream, one fetch then brings it.
                        await asyncio.sleep(left)
                        continue
                if pending:
                    taken, pending = pending, []
                    counts, revision = await self.count_batch(event_type, taken, counts, revision)
            except asyncio.CancelledError:
                raise
            except ConcurrentUpdateError:
                counts = None  # reload and count again against what the other writer stored
                pending = []  # unacked: redelivered
            except (TransportError, ValueError) as exc:
                log.warning("auditing %s: %s; retrying in 1s", event_type, exc)
                counts = None
                pending = []
                await asyncio.sleep(1.0)

    async def count_batch(
        self,
        event_type: str,
        deliveries: Sequence[MessageLike],
        counts: StreamCounts,
        revision: int | None,
    ) -> tuple[StreamCounts, int | None]:
        """Steps 3-5 for one fetched batch; returns the stored counts and revision."""
        updated = StreamCounts(
            counts.last_seq, counts.spill_secs, {k: list(v) for k, v in counts.buckets.items()}
        )
        readable = await self._with_bodies(event_type, deliveries, counts.last_seq)
        msgs, events, skipped = add_messages(updated, readable, self.width, self.cfg.spill_secs)
        if msgs:
            updated.prune(bucket_start(time.time() - self.cfg.retention_secs, self.width))
            revision = await self.store.save_stream_counts(event_type, updated, revision)  # step 4
        await self.transport.ack(deliveries)  # type: ignore[arg-type]  # step 5
        self.metrics.stream_messages.labels(event_type).inc(msgs)
        self.metrics.stream_events.labels(event_type).inc(events)
        if skipped:
            self.metrics.redeliveries_skipped.labels(event_type).inc(skipped)
        return (updated if msgs else counts), revision

    async def _with_bodies(
        self, event_type: str, deliveries: Sequence[MessageLike], last_seq: int
    ) -> Sequence[MessageLike]:
        """``deliveries``, where a headers-only one without a count header (a message
        older than that header) is replaced by the stored message, read by sequence."""
        if not any(m.seq > last_seq and body_left_out(m) for m in deliveries):
            return deliveries
        out: list[MessageLike] = []
        for m in deliveries:
            if m.seq > last_seq and body_left_out(m):
                stored = await self.transport.message_at_or_after(event_type, m.seq)
                if stored is None or stored.seq != m.seq:
                    # Expired between its delivery and this read: its events cannot be
                    # counted any more; the bucket's audit shows the difference.
                    log.warning(
                        "%s seq %d expired before it was counted; counting 0 events",
                        event_type,
                        m.seq,
                    )
                    stored = StoredMessage(m.seq, m.published_at, m.headers, b"")
                out.append(StoredMessage(m.seq, m.published_at, stored.headers, stored.data))
            else:
                out.append(m)
        return out

    # -- checking ---------------------------------------------------------------------

    async def check(self) -> list[BucketAudit]:
        """Reconcile each type's recent buckets; raise metrics and log new breaches."""
        views = await gather_types(self.settings, self.transport, self.registry, self.store)
        if self.dcs is not None:
            await self.dcs.check([v.name for v in views])
        now = time.time()
        window = self.cfg.check_buckets * self.width
        report = await asyncio.to_thread(
            build_report,
            views,
            self.scanner,
            self.settings,
            start=now - window,
            end=now + self.width,
            now=now,
            limit=self.cfg.check_buckets,
        )
        for v in views:
            uncounted = 0.0 if v.audit_pending <= 0 else max(0.0, now - v.audit_watermark)
            self.metrics.oldest_uncounted_age.labels(v.name).set(uncounted)
            self.metrics.pending.labels(v.name, AUDIT_CONSUMER).set(max(0, v.audit_pending))
            self.metrics.staging_bytes.labels(v.name).set(self._staging_bytes(v.name))
        late: dict[str, int] = {v.name: 0 for v in views}
        mismatched: dict[str, int] = {v.name: 0 for v in views}
        for b in report.buckets:
            if any(p.kind == "late" for p in b.problems):
                late[b.event_type] += 1
            if b.mismatch:
                mismatched[b.event_type] += 1
            self._report_new(b)
        for name in late:
            self.metrics.late_buckets.labels(name).set(late[name])
            self.metrics.mismatched_buckets.labels(name).set(mismatched[name])
        return report.buckets

    def _report_new(self, b: BucketAudit) -> None:
        for p in b.problems:
            # An open bucket grows later every check: report it once when it
            # breaches, and again once it closes (the final delay).
            marker = (b.event_type, b.bucket_start, f"{p.kind}:{b.closed}")
            if marker in self._reported:
                continue
            self._reported.add(marker)
            if p.kind == "late":
                self.metrics.slo_breaches.labels(b.event_type, "timeliness").inc()
                log.warning(
                    "SLO breach: %s bucket %s is late by %.1fs: %s",
                    b.event_type,
                    b.bucket_start_iso,
                    p.amount,
                    p.message,
                )
            elif p.kind in ("incomplete", "skewed"):
                slo = "completeness" if p.kind == "incomplete" else "skewness"
                self.metrics.slo_breaches.labels(b.event_type, slo).inc()
                log.warning(
                    "SLO breach (%s): %s bucket %s: %s",
                    slo,
                    b.event_type,
                    b.bucket_start_iso,
                    p.message,
                )
            else:
                self.metrics.mismatches.labels(b.event_type).inc()
                log.error(
                    "audit mismatch (%s): %s bucket %s: %s",
                    p.kind,
                    b.event_type,
                    b.bucket_start_iso,
                    p.message,
                )
        if len(self._reported) > 100_000:
            self._reported.clear()

    def _staging_bytes(self, event_type: str) -> int:
        prefix = f"{STAGING_DIR}/{event_type}"
        return sum(
            o.size_bytes
            for o in self.layout.store.list_objects(prefix)
            if o.key.endswith(PARQUET_SUFFIX)
        )


async def recount(
    settings: Settings, transport: Transport, store: AuditStore, event_type: str
) -> StreamCounts:
    """Rebuild ``stream.<Type>`` from the messages still retained in the stream.

    Buckets older than the first retained message keep their stored counts
    (their messages expired); the bucket of the first retained message keeps
    the larger of the two when older messages of it expired. Converges with a
    running auditor: if it stored a later ``last_seq`` meanwhile, the scan
    continues up to it before the compare-and-set.
    """
    width = settings.bucket_width_secs
    spill = settings.audit.spill_secs
    fresh = StreamCounts(spill_secs=spill)
    first_seq, last_seq = await transport.stream_bounds(event_type)
    scanned_to = 0
    while True:
        if last_seq > scanned_to:
            batch: list[StoredMessage] = []
            async for m in transport.scan(event_type, scanned_to + 1, last_seq):
                batch.append(m)
                if len(batch) >= _RECOUNT_BATCH_MESSAGES:  # bounded memory on long streams
                    add_messages(fresh, batch, width, spill)
                    batch.clear()
            add_messages(fresh, batch, width, spill)
            scanned_to = last_seq
        fresh.last_seq = max(fresh.last_seq, scanned_to)
        old, revision = await store.stream_counts(event_type)
        if old.last_seq > scanned_to:
            last_seq = old.last_seq
            continue
        merged = StreamCounts(fresh.last_seq, spill, {k: list(v) for k, v in fresh.buckets.items()})
        first_bucket = min(fresh.buckets, default=None)
        for start, row in old.buckets.items():
            if first_bucket is None or start < first_bucket:
                if first_seq > 1 or first_bucket is None:
                    merged.buckets[start] = list(row)
            elif start == first_bucket and first_seq > 1 and row[1] > merged.events(start):
                merged.buckets[start] = list(row)
        try:
            await store.save_stream_counts(event_type, merged, revision)
        except ConcurrentUpdateError:
            continue
        log.info(
            "recounted %s up to seq %d: %d events in %d buckets",
            event_type,
            merged.last_seq,
            sum(r[1] for r in merged.buckets.values()),
            len(merged.buckets),
        )
        return merged

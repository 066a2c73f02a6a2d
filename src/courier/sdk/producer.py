"""``Producer``: send events through a disk spool and a background sender thread.

The sender loop, one batch at a time:

1. read the next records from the spool (up to ``batch_max_events`` /
   ``batch_max_bytes``, waiting up to ``linger_ms`` for a batch to fill);
2. post them with :class:`~courier.sdk.delivery.GatewayClient` until the
   gateway has answered for every one (retries, backoff, bisection of
   refused batches all happen there);
3. write the rejected ones to the rejected log (fsynced) and call ``on_rejected``;
4. only then commit the spool ledger up to the batch's last record.

A crash before step 4 sends the batch again after restart: same event ids,
so the closer keeps one copy of each. Nothing is committed for a batch the
gateway did not answer 2xx for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time as _time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx
import msgspec
from pydantic import BaseModel, ConfigDict

from courier.errors import CourierError
from courier.model import TYPE_NAME_PATTERN, is_valid_type_name, iso_utc, uuid7
from courier.sdk.delivery import (
    Compression,
    DeliveryPolicy,
    DeliveryStopped,
    EventRejection,
    GatewayClient,
)
from courier.sdk.rejected import RejectedLog
from courier.sdk.spool import FsyncPolicy, Record, Spool, SpoolFull

log = logging.getLogger("courier.sdk")

MIB = 1024 * 1024
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class ProducerSettings(BaseModel):
    """Everything a producer needs; every duration and size has its unit in its name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spool_dir: Path
    gateway_url: str = "http://127.0.0.1:8080"
    #: ``always``: fsync before ``send`` returns (group commit); ``interval``: every
    #: ``fsync_interval_ms`` (a power failure loses at most that); ``never``: the OS decides.
    fsync: FsyncPolicy = "interval"
    fsync_interval_ms: int = 1000
    max_spool_bytes: int = 1024 * MIB
    segment_bytes: int = 16 * MIB
    #: When the spool is full: ``block`` up to ``full_timeout_secs`` then raise, or ``raise`` at once.
    when_full: Literal["block", "raise"] = "block"
    full_timeout_secs: float = 30.0
    batch_max_events: int = 1000
    batch_max_bytes: int = 1 * MIB
    linger_ms: int = 20
    compression: Compression = "zstd"
    request_timeout_secs: float = 30.0
    backoff_initial_secs: float = 0.1
    backoff_max_secs: float = 30.0
    api_key: str | None = None
    #: How long ``close()`` waits for the spool to drain before leaving the rest on disk.
    close_timeout_secs: float = 10.0

    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            gateway_url=self.gateway_url,
            compression=self.compression,
            request_timeout_secs=self.request_timeout_secs,
            backoff_initial_secs=self.backoff_initial_secs,
            backoff_max_secs=self.backoff_max_secs,
            api_key=self.api_key,
        )


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """An event the gateway refused for good (it is in the rejected log too)."""

    id: str | None
    type: str | None
    reason: str
    status: int
    event: bytes


@dataclass(frozen=True, slots=True)
class ProducerStats:
    """A snapshot of a producer's spool and sender."""

    spool_records: int
    spool_bytes: int
    spool_disk_bytes: int
    #: Age of the oldest event not yet acknowledged by the gateway (0 when none).
    oldest_unsent_age_secs: float
    sent: int
    rejected: int
    retries: int
    batches: int


class _NowText:
    """RFC 3339 text of "now", formatting the seconds part once per second (hot path)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        now = _time.time()
        second = int(now)
        if second != self._second:
            self._prefix = iso_utc(second)[:-5]  # "YYYY-MM-DDTHH:MM:SS"
            self._second = second
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"


_now_text = _NowText()


def _time_text(value: float | dt.datetime | str | None) -> str:
    if value is None:
        return _now_text()
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return iso_utc(value.timestamp())
    return iso_utc(float(value))


class Producer:
    """Sends events to a Courier gateway without ever losing one it accepted into its spool.

    ``send`` appends to the disk spool and returns; a background thread
    delivers. Thread-safe. Use as a context manager, or call :meth:`close`.
    Events that survive a crash (``kill -9``) are sent on the next start with
    the same spool directory.
    """

    def __init__(
        self,
        settings: ProducerSettings | None = None,
        *,
        on_rejected: Callable[[RejectedEvent], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        **fields: Any,
    ) -> None:
        if settings is None:
            settings = ProducerSettings(**fields)
        elif fields:
            settings = settings.model_copy(update=fields)
        self.settings = settings
        self._on_rejected = on_rejected
        self._spool = Spool(
            settings.spool_dir,
            fsync=settings.fsync,
            fsync_interval_ms=settings.fsync_interval_ms,
            segment_bytes=min(settings.segment_bytes, max(settings.max_spool_bytes // 4, 4096)),
            max_spool_bytes=settings.max_spool_bytes,
        )
        self.rejected_log = RejectedLog(Path(settings.spool_dir) / "rejected.jsonl")
        self._stop = threading.Event()
        self._sent = self._rejected = self._retries = self._batches = 0
        self._client = GatewayClient(
            settings.delivery_policy(),
            stop=self._stop,
            transport=transport,
            on_retry=self._count_retry,
        )
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="courier-producer", daemon=True)
        self._thread.start()

    # -- the public API -----------------------------------------------------------

    def send(
        self,
        type: str,
        data: Mapping[str, Any] | Any,
        id: str | None = None,
        time: float | dt.datetime | str | None = None,
    ) -> str:
        """Spool one event and return its id (a UUIDv7 unless given).

        ``time`` is the client event time (epoch seconds, datetime or RFC 3339;
        default now). Raises :class:`SpoolFull` when the spool stays full.
        """
        return self._send(type, data, id, time, self._full_timeout())

    def _full_timeout(self) -> float:
        return self.settings.full_timeout_secs if self.settings.when_full == "block" else 0.0

    def _send(self, type: str, data: Any, id: str | None, time: Any, timeout_secs: float) -> str:
        if self._closed:
            raise CourierError("the producer is closed; create a new one to send events")
        if not is_valid_type_name(type):
            raise ValueError(f"{type!r} is not an event type name ({TYPE_NAME_PATTERN})")
        event_id = id or uuid7()
        payload = _encode({"type": type, "id": event_id, "time": _time_text(time), "data": data})
        self._spool.append(payload, timeout_secs=timeout_secs)
        return event_id

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event sent so far is acknowledged; False on timeout."""
        return self._spool.wait_acked(self._spool.last_id, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Drain for up to ``timeout`` (default ``close_timeout_secs``), then stop.

        Returns True if everything was delivered; what was not stays in the
        spool and is sent by the next producer on the same directory.
        """
        if self._closed:
            return self._spool.pending_records == 0
        budget = self.settings.close_timeout_secs if timeout is None else timeout
        deadline = _time.monotonic() + budget
        drained = self.flush(budget)
        self._closed = True
        self._stop.set()
        self._spool.wake()
        self._thread.join(max(0.0, deadline - _time.monotonic()) + 1.0)
        if not self._thread.is_alive():
            self._client.close()
        self._spool.close()
        if not drained:
            log.info(
                "producer closed with %d events left in the spool %s; they are sent on the "
                "next start",
                self._spool.pending_records,
                self.settings.spool_dir,
            )
        return drained

    def stats(self) -> ProducerStats:
        oldest = self._spool.oldest_pending_ms()
        age = 0.0 if oldest is None else max(0.0, _time.time() - oldest / 1000)
        return ProducerStats(
            spool_records=self._spool.pending_records,
            spool_bytes=self._spool.pending_bytes,
            spool_disk_bytes=self._spool.disk_bytes,
            oldest_unsent_age_secs=age,
            sent=self._sent,
            rejected=self._rejected,
            retries=self._retries,
            batches=self._batches,
        )

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the sender thread --------------------------------------------------------

    def _count_retry(self, problem: str) -> None:
        self._retries += 1

    def _next_batch(self) -> list[Record]:
        s = self.settings
        records = self._spool.read(s.batch_max_events, s.batch_max_bytes)
        if not records:
            return records
        size = sum(r.size for r in records)
        deadline = _time.monotonic() + s.linger_ms / 1000
        while len(records) < s.batch_max_events and size < s.batch_max_bytes:
            left = deadline - _time.monotonic()
            if left <= 0 or self._stop.is_set() or not self._spool.wait_unread(left):
                break
            more = self._spool.read(s.batch_max_events - len(records), s.batch_max_bytes - size)
            records += more
            size += sum(r.size for r in more)
        return records

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                records = self._next_batch()
                if not records:
                    self._spool.wait_unread(0.5)
                    continue
                # 2. post until answered
                rejections = self._client.deliver([r.payload for r in records])
                # 3. rejections to the log, before the ledger moves past them
                if rejections:
                    self._record_rejections(records, rejections)
                # 4. commit
                self._spool.commit(records[-1].id, sum(r.size for r in records))
            except DeliveryStopped:
                break
            except CourierError as exc:  # the rejected log or the ledger cannot be written
                attempt += 1
                delay = min(self.settings.backoff_max_secs, 0.1 * 2 ** min(attempt, 10))
                log.error("producer cannot record delivery (%s); retrying in %.1fs", exc, delay)
                self._spool.rewind()
                self._stop.wait(delay)
                continue
            attempt = 0
            self._batches += 1
            self._sent += len(records) - len(rejections)
            self._rejected += len(rejections)

    def _record_rejections(self, records: list[Record], rejections: list[EventRejection]) -> None:
        events: list[RejectedEvent] = []
        for r in rejections:
            payload = records[r.index].payload
            try:
                doc = _decode(payload)
            except msgspec.DecodeError:
                doc = {}
            events.append(
                RejectedEvent(doc.get("id"), doc.get("type"), r.reason, r.status, payload)
            )
        self.rejected_log.write(
            {
                "id": e.id,
                "type": e.type,
                "reason": e.reason,
                "status": e.status,
                "event": msgspec.Raw(e.event),
            }
            for e in events
        )
        if self._on_rejected is not None:
            for e in events:
                try:
                    self._on_rejected(e)
                except Exception:  # a user callback must not stop delivery
                    log.exception("on_rejected callback failed for event %s", e.id)


class AsyncProducer:
    """The asyncio face of :class:`Producer`: same spool and sender thread, awaitable calls.

    ``send`` does not block the event loop: it appends directly when that is
    instant and moves to a worker thread when it has to wait (``fsync="always"``
    or a full spool).
    """

    def __init__(
        self,
        settings: ProducerSettings | None = None,
        *,
        on_rejected: Callable[[RejectedEvent], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        **fields: Any,
    ) -> None:
        self.producer = Producer(settings, on_rejected=on_rejected, transport=transport, **fields)

    async def send(
        self,
        type: str,
        data: Mapping[str, Any] | Any,
        id: str | None = None,
        time: float | dt.datetime | str | None = None,
    ) -> str:
        p = self.producer
        if p.settings.fsync != "always":
            try:
                return p._send(type, data, id, time, 0.0)
            except SpoolFull:
                if p.settings.when_full == "raise":
                    raise
        return await asyncio.to_thread(p._send, type, data, id, time, p._full_timeout())

    async def flush(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.producer.flush, timeout)

    async def close(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.producer.close, timeout)

    def stats(self) -> ProducerStats:
        return self.producer.stats()

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

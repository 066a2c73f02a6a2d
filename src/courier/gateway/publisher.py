"""Group commit: many requests' events of one type travel in one transport message.

An fsync'd stream stores a few thousand messages per second whatever their
size (DESIGN §5), so throughput comes from packing events. Protocol of
:meth:`Coalescer.submit`:

1. The request's stored NDJSON for one (type, schema version) is cut into
   pieces of at most ``max_message_bytes`` (on line boundaries) and appended
   to that key's queue, each with a future.
2. Up to ``publishes_in_flight_per_type`` flusher tasks per key each take
   everything queued, up to ``max_message_bytes``, and publish it as ONE
   message whose ``Nats-Msg-Id`` is derived from its events' ids.
3. The futures of every piece in that message resolve only after the
   transport acknowledged the stored message; a failure fails every request
   in the message. The request answers 2xx only when all its futures resolved.

A crash (or failure) between steps 2 and 3 never loses an acknowledged event:
the client got no 2xx and retries with the same ids; a message that was in
fact stored is then either dropped by the server's duplicate window (same
message id) or its events are deduplicated by the closer.

Message headers (the contract with the writer):

* ``Nats-Msg-Id``: ``<type>:<blake2b-128 hex of the JSON array of event ids>``;
* ``Courier-Schema-Version``: the schema version every line was encoded with;
* ``Courier-Events``: the number of lines (events) in the body.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from courier.errors import (
    PublishOutcomeUnknownError,
    StreamFullError,
    TransportError,
    TransportUnavailableError,
)
from courier.gateway.metrics import GatewayMetrics, PublishFailure
from courier.settings import Settings
from courier.transport.client import Transport

log = logging.getLogger("courier.gateway.publisher")

SCHEMA_VERSION_HEADER = "Courier-Schema-Version"
EVENTS_HEADER = "Courier-Events"
MSG_ID_HEADER = "Nats-Msg-Id"


class EventSink(Protocol):
    """Where the gateway stores messages of events; publish returns once stored."""

    @property
    def is_connected(self) -> bool:
        """False when a publish now would certainly fail (the gateway answers 503)."""
        ...

    async def publish(
        self, event_type: str, body: bytes, *, msg_id: str, headers: dict[str, str]
    ) -> None:
        """Store one message durably or raise a :class:`TransportError`."""
        ...


class NatsSink:
    """:class:`EventSink` over JetStream: one stream per type, ack after fsync."""

    def __init__(
        self,
        transport: Transport,
        publish_timeout_secs: float,
        *,
        on_stored: Callable[[int], None] | None = None,
    ) -> None:
        self._transport = transport
        self._timeout_secs = publish_timeout_secs
        #: Told the bytes of each message stored (the store guard's running estimate).
        self._on_stored = on_stored

    @property
    def is_connected(self) -> bool:
        return self._transport.is_connected

    async def publish(
        self, event_type: str, body: bytes, *, msg_id: str, headers: dict[str, str]
    ) -> None:
        result = await self._transport.publish_events(
            event_type, body, msg_id=msg_id, headers=headers, timeout_secs=self._timeout_secs
        )
        if result.duplicate:
            log.debug("message %s of %s was a duplicate; already stored", msg_id, event_type)
        elif self._on_stored is not None:
            self._on_stored(len(body) + sum(len(k) + len(v) for k, v in headers.items()))


@dataclass(frozen=True, slots=True)
class SinkMessage:
    event_type: str
    body: bytes
    msg_id: str
    headers: dict[str, str]


class MemorySink:
    """In-memory :class:`EventSink` for unit tests.

    Records every stored message, drops a repeated ``msg_id`` like the server's
    duplicate window does, can be slowed down (``delay_secs``) and told to fail
    (``fail_with``, an exception raised by every publish until reset).
    """

    def __init__(self, *, delay_secs: float = 0.0) -> None:
        self.messages: list[SinkMessage] = []
        self.duplicates = 0
        self.delay_secs = delay_secs
        self.fail_with: Exception | None = None
        self.connected = True
        self._seen: set[str] = set()

    @property
    def is_connected(self) -> bool:
        return self.connected

    async def publish(
        self, event_type: str, body: bytes, *, msg_id: str, headers: dict[str, str]
    ) -> None:
        if self.delay_secs:
            await asyncio.sleep(self.delay_secs)
        if self.fail_with is not None:
            raise self.fail_with
        if not self.connected:
            raise TransportUnavailableError(f"publish to {event_type}: sink is disconnected")
        if msg_id in self._seen:
            self.duplicates += 1
            return
        self._seen.add(msg_id)
        self.messages.append(SinkMessage(event_type, body, msg_id, dict(headers)))

    def events_of(self, event_type: str) -> list[bytes]:
        """Every stored line of one type, in publish order."""
        return [
            line
            for m in self.messages
            if m.event_type == event_type
            for line in m.body.splitlines()
        ]


def message_id(event_type: str, ids: list[str]) -> str:
    """The ``Nats-Msg-Id`` of a message holding events with these ids (in order)."""
    digest = hashlib.blake2b(msgspec.json.encode(ids), digest_size=16).hexdigest()
    return f"{event_type}:{digest}"


@dataclass(slots=True)
class _Piece:
    body: bytes
    ids: list[str]
    future: asyncio.Future[None]
    #: ``time.perf_counter()`` when it was queued (the group wait metric).
    queued_at: float


@dataclass(slots=True)
class _Queue:
    pieces: deque[_Piece] = field(default_factory=deque)
    flushers: int = 0
    #: Flushers created that have not taken their first message yet: each will take
    #: up to ``max_message_bytes`` of what is queued, so a new one is needed only
    #: for what those cannot carry.
    starting: int = 0


class Coalescer:
    """Group commit of stored events per (type, schema version); see the module doc."""

    def __init__(
        self,
        sink: EventSink,
        *,
        max_message_bytes: int,
        flushers_per_type: int,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._sink = sink
        self._max_bytes = max_message_bytes
        self._max_flushers = max(1, flushers_per_type)
        self._metrics = metrics
        self._queues: dict[tuple[str, int], _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def from_settings(
        cls, sink: EventSink, settings: Settings, metrics: GatewayMetrics | None = None
    ) -> Coalescer:
        g = settings.gateway
        return cls(
            sink,
            max_message_bytes=g.max_message_bytes,
            flushers_per_type=g.publishes_in_flight_per_type,
            metrics=metrics,
        )

    async def submit(
        self, event_type: str, schema_version: int, body: bytes, ids: list[str]
    ) -> None:
        """Store ``body`` (NDJSON, one line per id) and return once every line is stored.

        Raises the transport's error when any message carrying these events failed.
        """
        if self._closed:
            raise TransportUnavailableError("the gateway is shutting down; retry on another one")
        loop = asyncio.get_running_loop()
        key = (event_type, schema_version)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        futures = []
        now = time.perf_counter()
        for piece_body, piece_ids in self._split(body, ids):  # step 1
            fut: asyncio.Future[None] = loop.create_future()
            queue.pieces.append(_Piece(piece_body, piece_ids, fut, now))
            futures.append(fut)
        # Step 2. Not one flusher per free slot: the flushers that have not started
        # would find the queue empty and exit, a task each per request (issue 13).
        queued = sum(len(p.body) for p in queue.pieces)
        while queue.flushers < self._max_flushers and queue.starting * self._max_bytes < queued:
            queue.flushers += 1
            queue.starting += 1
            task = asyncio.create_task(self._flush(key, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if len(futures) == 1:  # the usual request: one piece, no gather to build
            await futures[0]  # step 3
            return
        results = await asyncio.gather(*futures, return_exceptions=True)  # step 3
        for r in results:
            if isinstance(r, BaseException):
                raise r

    def _split(self, body: bytes, ids: list[str]) -> list[tuple[bytes, list[str]]]:
        if len(body) <= self._max_bytes:
            return [(body, ids)]
        out = []
        start = 0
        first_id = 0
        while start < len(body):
            end = start + self._max_bytes
            if end >= len(body):
                end = len(body)
            else:
                cut = body.rfind(b"\n", start, end)
                # One line longer than a message travels alone.
                end = cut + 1 if cut >= 0 else body.index(b"\n", end) + 1
            n = body.count(b"\n", start, end)
            out.append((body[start:end], ids[first_id : first_id + n]))
            first_id += n
            start = end
        return out

    async def _flush(self, key: tuple[str, int], queue: _Queue) -> None:
        event_type, version = key
        queue.starting -= 1  # it takes its first message now, without awaiting first
        try:
            while queue.pieces:
                taken = [queue.pieces.popleft()]
                size = len(taken[0].body)
                while queue.pieces and size + len(queue.pieces[0].body) <= self._max_bytes:
                    piece = queue.pieces.popleft()
                    size += len(piece.body)
                    taken.append(piece)
                if self._metrics is not None:
                    now = time.perf_counter()
                    for p in taken:
                        self._metrics.group_waited(now - p.queued_at)
                await self._publish(event_type, version, taken)
        finally:
            queue.flushers -= 1
            if not queue.pieces and not queue.flushers:
                self._queues.pop(key, None)

    async def _publish(self, event_type: str, version: int, taken: list[_Piece]) -> None:
        body = b"".join(p.body for p in taken)
        ids = [i for p in taken for i in p.ids]
        headers = {SCHEMA_VERSION_HEADER: str(version), EVENTS_HEADER: str(len(ids))}
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await self._sink.publish(
                event_type, body, msg_id=message_id(event_type, ids), headers=headers
            )
        except asyncio.CancelledError:
            for p in taken:
                if not p.future.done():
                    p.future.set_exception(
                        PublishOutcomeUnknownError(
                            f"publish to {event_type} was cancelled by shutdown; "
                            "it may have been stored"
                        )
                    )
            raise
        except Exception as exc:  # handed to every waiting request, which answers 503
            error = exc
            log.warning(
                "publish of %d events (%d bytes) of %s failed: %s",
                len(ids),
                len(body),
                event_type,
                exc,
            )
        if self._metrics is not None:
            if error is None:
                self._metrics.published(time.perf_counter() - started, len(ids))
            else:
                self._metrics.publish_failed(_failure_reason(error))
        for p in taken:
            if p.future.done():
                continue
            if error is None:
                p.future.set_result(None)
            else:
                p.future.set_exception(error)

    async def close(self) -> None:
        """Refuse new submissions and wait for the messages in flight."""
        self._closed = True
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _failure_reason(exc: BaseException) -> PublishFailure:
    if isinstance(exc, PublishOutcomeUnknownError):
        return "timeout"
    if isinstance(exc, StreamFullError):
        return "stream_full"
    if isinstance(exc, TransportUnavailableError):
        return "unavailable"
    if isinstance(exc, TransportError):
        return "refused"
    return "error"

"""The JetStream client adapter: connect, provision, publish, fetch, ack, watermark, KV.

nats-py pitfalls owned here (DESIGN §5):

* ``Msg.ack()`` is fire-and-forget. :meth:`Transport.ack` sends the acks and
  then flushes the connection (PING/PONG): the server processes a connection's
  messages in order, so once the PONG is back every ack has been applied.
* An empty fetch means "idle": :meth:`PullConsumer.fetch` returns an empty
  list. A publish timeout instead means "outcome unknown" and becomes
  :class:`PublishOutcomeUnknownError`.
* Reconnect attempts are finite by default; services connect with unlimited
  reconnects (``max_reconnect_attempts=-1``).
* ``JetStreamContext.publish`` spends more Python per message than the
  exchange needs; :meth:`Transport.publish` goes through
  :class:`courier.transport.publish.AckedPublisher` (one reply subscription,
  msgspec PubAck) and maps the same nats-py errors as before.
* ``pull_subscribe`` silently creates or keeps a consumer with another
  config; services never use it. They fetch from the provisioned durable
  consumer with :class:`courier.transport.pull.LeanPull` (the pull API, without
  nats-py's per-message task and ``wait_for``) after verifying the live
  configuration (see :mod:`courier.transport.provision`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamState
from nats.js.kv import KeyValue as NatsKV

from courier.errors import (
    ConcurrentUpdateError,
    KeyExistsError,
    PublishOutcomeUnknownError,
    StreamFullError,
    TransportError,
    TransportUnavailableError,
)
from courier.transport.kv import KVEntry
from courier.transport.names import (
    WRITER_CONSUMER,
    closed_subject,
    events_subject,
    stream_name,
)
from courier.transport.publish import AckedPublisher
from courier.transport.pull import LeanPull, PullStatusError
from courier.transport.tasks import cancel_and_wait

log = logging.getLogger("courier.transport")

#: About this many bytes of messages per fetch of :meth:`Transport.scan`: a batch of
#: large messages (several requests grouped in one) must not outgrow what the server
#: will buffer for a client (a slow consumer is disconnected, and its messages are
#: gone for a consumer without acks).
SCAN_BATCH_BYTES = 8 * 1024 * 1024

#: JetStream API error codes of a publish refused for want of room, nothing stored:
#: the stream's own cap (10077 "maximum bytes exceeded", discard=new), the server's
#: store limit (10023 "insufficient resources") or the account's (10002), as measured
#: against nats-server 2.15 (tests/transport/test_transport_store_limit.py).
_STREAM_FULL_CODES = {10077, 10023, 10002}


@dataclass(frozen=True, slots=True)
class PublishResult:
    stream: str
    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class ConsumerProgress:
    """Where a durable consumer stands on its stream."""

    stream_last_seq: int
    ack_floor_seq: int
    num_pending: int
    num_ack_pending: int
    #: ``published_at`` (epoch secs) of the oldest message not yet acked, or
    #: None when the consumer has acked everything in the stream.
    oldest_unacked_at: float | None


class MessageLike(Protocol):
    """What code reading stored messages needs of one: a :class:`Delivery` from a
    consumer, or a :class:`StoredMessage` read directly from the stream."""

    @property
    def seq(self) -> int: ...
    @property
    def published_at(self) -> float: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def data(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message read directly from a stream (not through a consumer)."""

    seq: int
    published_at: float
    headers: dict[str, str]
    data: bytes


class Delivery:
    """One message fetched from a pull consumer."""

    __slots__ = ("_msg", "data", "headers", "num_delivered", "published_at", "seq")

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.data: bytes = msg.data
        self.headers: dict[str, str] = msg.headers or {}
        self.seq, self.num_delivered, self.published_at = _ack_metadata(msg)

    def release_body(self) -> None:
        """Drop the body once it is decoded; the delivery can still be acked, nacked,
        terminated and reported on. A writer holds each delivery until the rows it
        carried are durable: kept, the bodies of every buffered message stayed in
        memory beside their decoded rows, outside the buffer bound (issue 13)."""
        self.data = b""
        self._msg.data = b""

    async def nak(self, delay_secs: float | None = None) -> None:
        await self._msg.nak(delay=delay_secs)

    async def term(self) -> None:
        await self._msg.term()

    async def in_progress(self) -> None:
        await self._msg.in_progress()


def _ack_metadata(msg: Msg) -> tuple[int, int, float]:
    """``(stream seq, times delivered, published_at)`` from a delivery's ack subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts ns>.<pending>``, or
    the form with ``<domain>.<account hash>`` after ``$JS.ACK`` and a trailing token
    (ADR-15). nats-py's ``Msg.metadata`` parses the same into objects and a datetime
    at several times the cost per message; anything else is left to it.
    """
    tokens = msg.reply.split(".")
    n = len(tokens)
    if n == 9:
        return int(tokens[5]), int(tokens[4]), _timestamp(tokens[7])
    if n >= 11:
        return int(tokens[7]), int(tokens[6]), _timestamp(tokens[9])
    md = msg.metadata
    return md.sequence.stream, md.num_delivered, md.timestamp.timestamp()


def _timestamp(ns: str) -> float:
    """Epoch seconds as nats-py gives them (a datetime, so rounded to the microsecond):
    the writer and the auditor bucket by this value and must agree with every other
    reader of it, to the last digit."""
    return dt.datetime.fromtimestamp(int(ns) / 1_000_000_000.0, dt.UTC).timestamp()


class PullConsumer:
    """One durable pull consumer, fetched through :class:`courier.transport.pull.LeanPull`."""

    def __init__(self, transport: Transport, event_type: str, pull: LeanPull) -> None:
        self.event_type = event_type
        self._transport = transport
        self._pull = pull

    async def fetch(self, batch: int, wait_secs: float) -> list[Delivery]:
        """Up to ``batch`` messages; an empty list when none arrived within ``wait_secs``."""
        try:
            msgs = await self._pull.fetch(batch, wait_secs)
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
            raise TransportUnavailableError(
                f"fetch from {self.event_type}: not connected to NATS; retrying after reconnect"
            ) from exc
        except (PullStatusError, nats.errors.Error) as exc:
            raise TransportError(f"fetch from {self.event_type} failed: {exc}") from exc
        return [Delivery(m) for m in msgs]

    async def unsubscribe(self) -> None:
        try:
            await self._pull.close()
        except nats.errors.Error:
            pass


class Transport:
    """A connection to NATS JetStream. Create with :meth:`connect`; close with :meth:`close`."""

    def __init__(self, nc: NatsClient, request_timeout_secs: float) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=request_timeout_secs)
        self.request_timeout_secs = request_timeout_secs
        self._kvs: dict[str, NatsKV] = {}
        self._publisher = AckedPublisher(nc)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str = "courier",
        connect_timeout_secs: float = 5.0,
        request_timeout_secs: float = 5.0,
        wait_for_server_secs: float = 0.0,
    ) -> Transport:
        """Connect with unlimited reconnects (services must outlive NATS restarts).

        ``url`` may list several servers separated by commas (the nodes of a
        cluster): the client connects to any of them and reconnects to the
        others when its server goes away.

        The first connection is retried for ``wait_for_server_secs`` (services
        started before NATS wait for it), at least one connect timeout; after that,
        TransportUnavailableError.
        """
        servers = [u.strip() for u in url.split(",") if u.strip()]

        errors: list[Exception] = []

        async def _on_error(exc: Exception) -> None:
            errors.append(exc)
            log.warning("NATS connection error: %s", exc)

        async def _on_disconnect() -> None:
            if nc_ref and nc_ref[0].is_closed:
                return
            log.warning("disconnected from NATS at %s; reconnecting", url)

        async def _on_reconnect() -> None:
            where = nc_ref[0].connected_url if nc_ref else None
            log.info("reconnected to NATS at %s", where.netloc if where else url)

        nc_ref: list[NatsClient] = []
        # nats-py retries a first connection forever when reconnects are unlimited (it
        # never raises): bound it by the wait, and by at least one connect timeout.
        budget_secs = max(float(max(1, connect_timeout_secs)), wait_for_server_secs)
        try:
            nc = await asyncio.wait_for(
                nats.connect(
                    servers=servers,
                    name=name,
                    connect_timeout=int(max(1, connect_timeout_secs)),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    allow_reconnect=True,
                    error_cb=_on_error,
                    disconnected_cb=_on_disconnect,
                    reconnected_cb=_on_reconnect,
                ),
                budget_secs,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            last = errors[-1] if errors else exc
            raise TransportUnavailableError(
                f"cannot connect to NATS at {url} within {budget_secs:g}s: {last or 'timed out'}; "
                "is nats-server running there (courier nats / courier up)?"
            ) from exc
        nc_ref.append(nc)
        return cls(nc, request_timeout_secs)

    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def close(self) -> None:
        if self.nc.is_closed:
            return
        try:
            if self.nc.is_connected:
                await self.nc.flush(timeout=2)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning(
                "flushing before close failed: %s; unacked messages will be redelivered", exc
            )
        try:
            await self.nc.close()
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            # nats-py can raise while closing a connection that is reconnecting with
            # requests queued; the connection is gone either way.
            log.warning("closing the NATS connection: %s", exc)
        await self._stop_reconnecting()

    async def _stop_reconnecting(self) -> None:
        """End nats-py's reconnect loop, which can outlive ``close()``: it connects under
        ``asyncio.wait_for``, and against a stopped server the connect is refused at once,
        so the loop can lose the cancel of ``close()`` and try again for ever (a CI run
        hung 300 s on it at teardown). See :func:`~courier.transport.tasks.cancel_and_wait`.
        """
        task: asyncio.Task[None] | None = getattr(self.nc, "_reconnection_task", None)
        if task is not None:
            await cancel_and_wait([task], every_secs=0.1)

    # -- publishing -------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        body: bytes,
        *,
        msg_id: str | None,
        headers: dict[str, str] | None = None,
        timeout_secs: float,
    ) -> PublishResult:
        """Publish to JetStream and wait for the stored (fsync'd) ack.

        Raises TransportUnavailableError (not connected: nothing stored),
        StreamFullError (refused: nothing stored), PublishOutcomeUnknownError
        (timed out: maybe stored; retry is safe) or TransportError.
        """
        if not self.nc.is_connected:
            raise TransportUnavailableError(f"publish to {subject}: not connected to NATS")
        hdrs = dict(headers or {})
        if msg_id is not None:
            hdrs["Nats-Msg-Id"] = msg_id
        try:
            stream, seq, duplicate = await self._publisher.publish(
                subject, body, hdrs or None, timeout_secs
            )
        except nats.js.errors.NoStreamResponseError as exc:
            raise TransportUnavailableError(
                f"publish to {subject}: no stream answered (stream missing or NATS down)"
            ) from exc
        except nats.errors.TimeoutError as exc:
            raise PublishOutcomeUnknownError(
                f"publish to {subject} timed out after {timeout_secs}s; it may have been stored"
            ) from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code in _STREAM_FULL_CODES:
                raise StreamFullError(
                    f"no room to store {subject}: {exc.description} (the stream or the NATS "
                    "store is full; nothing was stored, and nothing stored is dropped)"
                ) from exc
            raise TransportError(f"publish to {subject} refused: {exc}") from exc
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
            raise TransportUnavailableError(f"publish to {subject}: connection lost") from exc
        except nats.errors.Error as exc:
            raise PublishOutcomeUnknownError(f"publish to {subject} failed: {exc}") from exc
        return PublishResult(stream, seq, duplicate)

    async def publish_events(
        self,
        event_type: str,
        body: bytes,
        *,
        msg_id: str,
        headers: dict[str, str],
        timeout_secs: float,
    ) -> PublishResult:
        return await self.publish(
            events_subject(event_type),
            body,
            msg_id=msg_id,
            headers=headers,
            timeout_secs=timeout_secs,
        )

    async def publish_closed(self, event_type: str, body: bytes, *, msg_id: str) -> PublishResult:
        return await self.publish(
            closed_subject(event_type), body, msg_id=msg_id, timeout_secs=self.request_timeout_secs
        )

    # -- consuming --------------------------------------------------------------

    async def pull_consumer(self, event_type: str, durable: str = WRITER_CONSUMER) -> PullConsumer:
        """Fetch from an existing durable consumer (never creates or changes it).

        Nothing is asked of the server until the first fetch; a consumer that does
        not exist then fails that fetch with TransportError (the services verify
        their consumers' configuration at start, :mod:`courier.transport.provision`).
        """
        stream = stream_name(event_type)
        return PullConsumer(self, event_type, LeanPull(self.nc, stream, durable))

    async def flush(self) -> None:
        """Send everything buffered (in-progress signals, acks) to the server now."""
        try:
            await self.nc.flush(timeout=int(self.request_timeout_secs) or 1)
        except (TimeoutError, nats.errors.Error) as exc:
            raise TransportError(f"flushing to NATS failed ({exc})") from exc

    async def ack(
        self, deliveries: Sequence[Delivery], *, timeout_secs: float | None = None
    ) -> None:
        """Ack every delivery and wait until the server has applied them all.

        A consumer applies acks from its queue in arrival order, so one confirmed ack
        (AckAck with a reply) sent after the others means every earlier one is applied
        too: one round trip per call, not per message. A bare flush would only show
        that the server read the acks, not that the consumer applied them.
        """
        if not deliveries:
            return
        try:
            for d in deliveries[:-1]:
                await d._msg.ack()
            await deliveries[-1]._msg.ack_sync(timeout=timeout_secs or self.request_timeout_secs)
        except nats.errors.MsgAlreadyAckdError:
            return
        except (TimeoutError, nats.errors.Error) as exc:
            raise TransportError(
                f"acking {len(deliveries)} messages failed ({exc}); they will be redelivered"
            ) from exc

    async def progress(self, event_type: str, durable: str = WRITER_CONSUMER) -> ConsumerProgress:
        """The consumer's ack floor and the ``published_at`` of its oldest unacked message."""
        stream = stream_name(event_type)
        try:
            info = await self.js.consumer_info(stream, durable)
        except nats.errors.Error as exc:
            raise TransportError(f"consumer info {stream}/{durable}: {exc}") from exc
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        pending = info.num_pending or 0
        ack_pending = info.num_ack_pending or 0
        last_seq = (info.delivered.stream_seq if info.delivered else 0) + pending
        oldest: float | None = None
        if pending or ack_pending:
            try:
                raw = await self.js.get_msg(
                    stream, seq=floor + 1, subject=events_subject(event_type), next=True
                )
            except nats.js.errors.NotFoundError:
                raw = None
            except nats.errors.Error as exc:
                raise TransportError(f"reading {stream} seq {floor + 1}: {exc}") from exc
            if raw is not None and raw.time is not None:
                oldest = raw.time.timestamp()
        return ConsumerProgress(last_seq, floor, pending, ack_pending, oldest)

    async def stream_bounds(self, event_type: str) -> tuple[int, int]:
        """(first, last) sequence retained in the type's stream; (0, 0) when it never held one."""
        state = await self._stream_state(event_type)
        return int(state.first_seq or 0), int(state.last_seq or 0)

    async def _stream_state(self, event_type: str) -> StreamState:
        """The live state of a type's stream."""
        stream = stream_name(event_type)
        try:
            return (await self.js.stream_info(stream)).state
        except nats.errors.Error as exc:
            raise TransportError(f"stream info {stream}: {exc}") from exc

    async def message_at_or_after(self, event_type: str, seq: int) -> StoredMessage | None:
        """The first retained message of a type with sequence ``>= seq`` (one direct get),
        or None when there is none."""
        stream = stream_name(event_type)
        try:
            raw = await self.js.get_msg(
                stream, seq=max(1, seq), subject=events_subject(event_type), next=True
            )
        except nats.js.errors.NotFoundError:
            return None
        except nats.errors.Error as exc:
            raise TransportError(f"reading {stream} seq {seq}: {exc}") from exc
        if raw.seq is None:
            return None
        published = raw.time.timestamp() if raw.time is not None else 0.0
        return StoredMessage(raw.seq, published, dict(raw.headers or {}), raw.data or b"")

    async def scan(
        self,
        event_type: str,
        first_seq: int,
        last_seq: int,
        *,
        batch_messages: int = 1000,
        headers_only: bool = False,
    ) -> AsyncGenerator[StoredMessage, None]:
        """The retained messages of a type with ``first_seq <= seq <= last_seq``, in order.

        Reads through a short-lived consumer of its own (ephemeral, in memory, no
        acks), so no other consumer is moved, and it streams: one request per batch of
        messages, not per message. Deleted and expired messages are skipped.
        ``headers_only`` leaves the bodies on the server (``data`` is empty). The
        consumer is deleted when the iteration ends (close the iterator, e.g.
        ``contextlib.aclosing``, when stopping early); if this process dies, the server
        drops it after 30 s of inactivity. Meant for recounts and repairs, not for the
        data path.

        Every message is yielded exactly once even when some are lost on the way: a
        consumer without acks never redelivers, so when the server says it delivered a
        sequence this scan has not seen (a batch larger than the connection could take,
        a reconnect), or its consumer's state cannot be read (a query lost in a
        reconnect), the scan goes on from the first sequence it has not yielded with a
        new consumer; three restarts in a row without progress raise TransportError. A
        batch holds at most ``batch_messages`` messages and about
        :data:`SCAN_BATCH_BYTES` (from the stream's average message size).
        """
        next_seq = max(1, first_seq)
        stalls = 0
        batch = await self._scan_batch(event_type, batch_messages, headers_only)
        while next_seq <= last_seq:
            before, lost = next_seq, False
            part = self._scan_from(event_type, next_seq, last_seq, batch, headers_only)
            async with contextlib.aclosing(part):
                async for m in part:
                    if m is None:
                        lost = True  # messages were lost on the way: again from next_seq
                        break
                    next_seq = m.seq + 1
                    yield m
            if not lost:
                return  # the consumer has nothing more up to last_seq
            stalls = 0 if next_seq > before else stalls + 1
            if stalls >= 3:
                raise TransportError(
                    f"scanning {stream_name(event_type)}: no message from seq {next_seq} "
                    "reached this client in 3 attempts"
                )
            batch = max(1, batch // 4)
            log.warning(
                "scanning %s: messages were lost on the way to this client; "
                "reading again from seq %d, %d per batch",
                stream_name(event_type),
                next_seq,
                batch,
            )

    async def _scan_batch(self, event_type: str, batch_messages: int, headers_only: bool) -> int:
        if headers_only:
            return max(1, batch_messages)
        state = await self._stream_state(event_type)
        avg = (state.bytes or 0) / max(1, state.messages or 0)
        return max(1, min(batch_messages, int(SCAN_BATCH_BYTES // max(1.0, avg))))

    async def _scan_from(
        self, event_type: str, first_seq: int, last_seq: int, batch: int, headers_only: bool
    ) -> AsyncGenerator[StoredMessage | None, None]:
        """One consumer's messages from ``first_seq``; None once the consumer delivered
        a message this client never received (then it stops)."""
        stream = stream_name(event_type)
        subject = events_subject(event_type)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=first_seq,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
            num_replicas=1,
            headers_only=headers_only or None,
        )
        try:
            sub = await self.js.pull_subscribe(subject, stream=stream, config=config)
        except nats.errors.Error as exc:
            raise TransportError(f"cannot scan {stream} from seq {first_seq}: {exc}") from exc
        # Without acks every delivery takes the consumer's next sequence, so a gap in it
        # (or a delivered sequence past the last one received) is a message lost on the way.
        received = 0
        try:
            while True:
                try:
                    msgs = await sub.fetch(batch, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    # Nothing came within the wait: the end of the stream, a slow server,
                    # or messages lost on the way. Only the consumer's own state tells.
                    try:
                        delivered, pending = await self._scan_state(sub, stream)
                    except TransportError as exc:
                        # A request in flight when the connection broke is never answered
                        # (nats-py does not resend it after reconnecting): the state is
                        # unknown, so read again from the first message not yielded.
                        log.warning("%s; reading again with a new consumer", exc)
                        yield None
                        return
                    if delivered > received:
                        yield None
                        return
                    if not pending:
                        return
                    continue
                except nats.errors.Error as exc:
                    raise TransportError(f"scanning {stream}: {exc}") from exc
                for m in msgs:
                    md = m.metadata
                    if md.sequence.consumer != received + 1:
                        yield None
                        return
                    received += 1
                    seq = md.sequence.stream
                    if seq > last_seq:
                        return
                    yield StoredMessage(
                        seq, md.timestamp.timestamp(), dict(m.headers or {}), m.data
                    )
                    if seq == last_seq:
                        return
        finally:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await sub.unsubscribe()
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self.js.delete_consumer(stream, config.name or "")

    @staticmethod
    async def _scan_state(sub: Any, stream: str) -> tuple[int, int]:
        """(deliveries the consumer made, messages it has still to deliver)."""
        try:
            info = await sub.consumer_info()
        except nats.errors.Error as exc:
            raise TransportError(f"scanning {stream}: {exc}") from exc
        return int(info.delivered.consumer_seq or 0), int(info.num_pending or 0)

    # -- key-value --------------------------------------------------------------

    async def store_used_bytes(self) -> int:
        """Bytes this account's streams (events, KV, close notifications) hold on disk."""
        try:
            info = await self.js.account_info()
        except nats.errors.Error as exc:
            raise TransportError(f"reading the NATS store's usage: {exc}") from exc
        return int(info.storage)

    async def key_value(self, bucket: str) -> NatsKeyValue:
        kv = self._kvs.get(bucket)
        if kv is None:
            try:
                kv = await self.js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError as exc:
                raise TransportError(
                    f"KV bucket {bucket} does not exist; run `courier schema apply` or "
                    "`courier provision` first"
                ) from exc
            except nats.errors.Error as exc:
                raise TransportUnavailableError(f"KV bucket {bucket}: {exc}") from exc
            self._kvs[bucket] = kv
        return NatsKeyValue(kv, bucket, self.js)


class NatsKeyValue:
    """:class:`courier.transport.kv.KeyValue` over a JetStream KV bucket."""

    def __init__(self, kv: NatsKV, bucket: str, js: JetStreamContext) -> None:
        self._kv = kv
        self._bucket = bucket
        self._js = js

    async def get(self, key: str) -> KVEntry | None:
        try:
            e = await self._kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except nats.errors.Error as exc:
            raise TransportError(f"KV get {self._bucket}/{key}: {exc}") from exc
        return KVEntry(key, e.value or b"", int(e.revision or 0))

    async def put(self, key: str, value: bytes) -> int:
        try:
            return int(await self._kv.put(key, value))
        except nats.errors.Error as exc:
            raise TransportError(f"KV put {self._bucket}/{key}: {exc}") from exc

    async def create(self, key: str, value: bytes) -> int:
        try:
            return int(await self._kv.create(key, value))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise KeyExistsError(f"KV key {self._bucket}/{key} already exists") from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code == 10071:
                raise KeyExistsError(f"KV key {self._bucket}/{key} already exists") from exc
            raise TransportError(f"KV create {self._bucket}/{key}: {exc}") from exc
        except nats.errors.Error as exc:
            raise TransportError(f"KV create {self._bucket}/{key}: {exc}") from exc

    async def update(self, key: str, value: bytes, last_revision: int) -> int:
        try:
            return int(await self._kv.update(key, value, last=last_revision))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise ConcurrentUpdateError(
                f"KV key {self._bucket}/{key} changed since revision {last_revision}"
            ) from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code == 10071:
                raise ConcurrentUpdateError(
                    f"KV key {self._bucket}/{key} changed since revision {last_revision}"
                ) from exc
            raise TransportError(f"KV update {self._bucket}/{key}: {exc}") from exc
        except nats.errors.Error as exc:
            raise TransportError(f"KV update {self._bucket}/{key}: {exc}") from exc

    async def delete(self, key: str) -> None:
        try:
            await self._kv.delete(key)
        except nats.errors.Error as exc:
            raise TransportError(f"KV delete {self._bucket}/{key}: {exc}") from exc

    async def keys(self) -> list[str]:
        """Keys from the KV stream's per-subject state: one API request that either
        answers or raises. (nats-py's ``keys()`` reads a watcher and returns nothing
        when the watcher is slow, which under load made a registry look empty and the
        gateway reject every event as an unknown type.) May include a key deleted
        since; ``get`` then returns None."""
        prefix = f"$KV.{self._bucket}."
        try:
            info = await self._js.stream_info(f"KV_{self._bucket}", subjects_filter=f"{prefix}>")
        except nats.errors.Error as exc:
            raise TransportError(f"KV keys {self._bucket}: {exc}") from exc
        subjects = info.state.subjects or {}
        return sorted(s[len(prefix) :] for s in subjects if s.startswith(prefix))

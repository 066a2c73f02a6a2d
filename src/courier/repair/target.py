"""What repairs need from the transport: the :class:`RepairTarget` seam and its implementations.

:class:`NatsRepairTarget` is the real one (JetStream). :class:`MemoryRepairTarget`
keeps streams in memory, with the same refusals, for tests of the code above it
(the gateway's routes, the fuzz test of its OpenAPI document).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from courier.errors import RepairRefusedError, UnknownEventTypeError
from courier.settings import Settings
from courier.transport import (
    REPAIRS_KV,
    KeyValue,
    MemoryKeyValue,
    PublishResult,
    Repointed,
    Transport,
    repoint_writer,
    stream_name,
)


class RepairTarget(Protocol):
    """The transport operations behind ``/v1/admin/*``."""

    async def log_kv(self) -> KeyValue:
        """The KV bucket of the repair log (``courier_repairs``); TransportError if missing."""
        ...

    async def redeliver(
        self, event_type: str, *, from_seq: int | None, from_time: float | None
    ) -> Repointed:
        """Re-point the type's writer consumer (:func:`courier.transport.repoint_writer`)."""
        ...

    async def republish(
        self, event_type: str, data: bytes, *, msg_id: str, headers: dict[str, str]
    ) -> PublishResult:
        """Publish to the type's stream and wait for the stored ack."""
        ...


class NatsRepairTarget:
    """:class:`RepairTarget` over JetStream."""

    def __init__(self, transport: Transport, settings: Settings) -> None:
        self._transport = transport
        self._settings = settings

    async def log_kv(self) -> KeyValue:
        return await self._transport.key_value(REPAIRS_KV)

    async def redeliver(
        self, event_type: str, *, from_seq: int | None, from_time: float | None
    ) -> Repointed:
        return await repoint_writer(
            self._transport, self._settings, event_type, from_seq=from_seq, from_time=from_time
        )

    async def republish(
        self, event_type: str, data: bytes, *, msg_id: str, headers: dict[str, str]
    ) -> PublishResult:
        return await self._transport.publish_events(
            event_type,
            data,
            msg_id=msg_id,
            headers=headers,
            timeout_secs=self._settings.gateway.publish_timeout_secs,
        )


@dataclass
class _MemoryStream:
    published_at: list[float] = field(default_factory=list)
    msg_ids: dict[str, int] = field(default_factory=dict)
    #: Where the writer consumer starts again after a redelivery (1 = from the start).
    start_seq: int = 1


class MemoryRepairTarget:
    """In-memory :class:`RepairTarget`: one stream per type in ``types``, every message acked.

    Republished messages are appended (a repeated ``msg_id`` is a duplicate,
    like the server's duplicate window); a redelivery moves ``start_seq`` and
    is refused past the end (it would skip messages) and for unknown types.
    """

    def __init__(self, types: set[str]) -> None:
        self.kv = MemoryKeyValue()
        self.streams = {t: _MemoryStream() for t in types}

    def _stream(self, event_type: str) -> _MemoryStream:
        stream = self.streams.get(event_type)
        if stream is None:
            raise UnknownEventTypeError(f"event type {event_type!r} has no stream")
        return stream

    async def log_kv(self) -> KeyValue:
        return self.kv

    async def redeliver(
        self, event_type: str, *, from_seq: int | None, from_time: float | None
    ) -> Repointed:
        stream = self._stream(event_type)
        last = len(stream.published_at)
        if from_time is not None:
            later = [i + 1 for i, t in enumerate(stream.published_at) if t >= from_time]
            from_seq = later[0] if later else last + 1
        assert from_seq is not None
        if not 1 <= from_seq <= last + 1:
            raise RepairRefusedError(
                f"seq {from_seq} is outside the stream of {event_type} (1..{last}); "
                "nothing was changed"
            )
        stream.start_seq = from_seq
        return Repointed(event_type, from_seq, 1, last, last)

    async def republish(
        self, event_type: str, data: bytes, *, msg_id: str, headers: dict[str, str]
    ) -> PublishResult:
        stream = self._stream(event_type)
        if msg_id in stream.msg_ids:
            return PublishResult(stream_name(event_type), stream.msg_ids[msg_id], True)
        stream.published_at.append(time.time())
        stream.msg_ids[msg_id] = len(stream.published_at)
        return PublishResult(stream_name(event_type), len(stream.published_at), False)

"""JetStream publish with a reply subscription of our own: less Python per message.

``JetStreamContext.publish`` is ``Client.request`` plus JSON. Per message it
builds an inbox from a fresh NUID, a future with a done-callback, an
``asyncio.wait_for`` (a second future, a timer and one more pass of the event
loop), then ``json.loads`` and a dataclass for the PubAck. The gateway sends
one message per request at moderate rates, so that is a per-request cost
(issue 13). :class:`AckedPublisher` does the same exchange with less:

1. Once per connection, on first use, it subscribes to ``<inbox>.*`` (a
   wildcard under a fresh inbox); nats-py re-subscribes it after a reconnect.
2. Each publish carries the reply subject ``<inbox>.<n>``, ``n`` a counter
   never reused on this publisher, and parks a future under ``n``.
3. The subscription's callback resolves the future with the reply. A timer
   set per publish fails it with nats-py's ``TimeoutError`` when no reply came
   within the timeout ("outcome unknown": the message may be stored); a reply
   arriving later finds no future and is dropped.
4. The PubAck is decoded with msgspec. Errors are raised as the exceptions
   ``JetStreamContext.publish`` raises (``NoStreamResponseError`` for a
   503 no-responders status, ``APIError.from_error`` for a JetStream error),
   so :meth:`courier.transport.client.Transport.publish` maps them to
   Courier's errors exactly as before, error codes included.

A reply that cannot be decoded is raised as a plain ``nats.errors.Error``
(outcome unknown), never taken for an ack: only a PubAck naming a stream and
a sequence resolves a publish.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

import msgspec
import nats.errors
import nats.js.errors

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg

#: The status header nats-py makes of an inline ``NATS/1.0 503`` reply: no stream
#: listens on the subject (or JetStream is down).
_STATUS_HEADER = "Status"
_NO_RESPONDERS = "503"


class _ApiError(msgspec.Struct):
    """The ``error`` of a JetStream API reply (what ``APIError`` is built from)."""

    code: int | None = None
    err_code: int | None = None
    description: str | None = None


class _PubAck(msgspec.Struct):
    """A JetStream publish reply: a stored message's place, or an error."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode_ack = msgspec.json.Decoder(_PubAck).decode


class AckedPublisher:
    """Publishes to JetStream on one connection and waits for each stored ack."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix: str | None = None
        self._prefix_len = 0
        self._tokens = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._starting = asyncio.Lock()

    async def publish(
        self, subject: str, body: bytes, headers: dict[str, str] | None, timeout_secs: float
    ) -> tuple[str, int, bool]:
        """``(stream, seq, duplicate)`` of the stored message; raises what
        ``JetStreamContext.publish`` raises (see the module doc)."""
        prefix = self._prefix
        if prefix is None:
            prefix = await self._start()  # step 1
        loop = asyncio.get_running_loop()
        token = str(next(self._tokens))
        reply: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = reply
        timer = loop.call_later(timeout_secs, self._expire, token)
        try:
            await self._nc.publish(subject, body, reply=prefix + token, headers=headers)  # step 2
            msg = await reply  # step 3
        finally:
            timer.cancel()
            self._waiting.pop(token, None)
        return _pub_ack(msg)  # step 4

    async def _start(self) -> str:
        async with self._starting:
            if self._prefix is None:
                prefix = self._nc.new_inbox() + "."
                await self._nc.subscribe(prefix + "*", cb=self._on_reply)
                self._prefix_len = len(prefix)
                self._prefix = prefix
            return self._prefix

    async def _on_reply(self, msg: Msg) -> None:
        reply = self._waiting.pop(msg.subject[self._prefix_len :], None)
        if reply is not None and not reply.done():
            reply.set_result(msg)

    def _expire(self, token: str) -> None:
        reply = self._waiting.pop(token, None)
        if reply is not None and not reply.done():
            reply.set_exception(nats.errors.TimeoutError())


def _pub_ack(msg: Msg) -> tuple[str, int, bool]:
    if msg.headers and msg.headers.get(_STATUS_HEADER) == _NO_RESPONDERS:
        raise nats.js.errors.NoStreamResponseError
    try:
        ack = _decode_ack(msg.data)
    except msgspec.DecodeError as exc:
        raise nats.errors.Error(f"unreadable publish reply {msg.data[:200]!r}: {exc}") from exc
    if ack.error is not None:
        e = ack.error
        nats.js.errors.APIError.from_error(  # always raises
            {"code": e.code, "err_code": e.err_code, "description": e.description}
        )
    if not ack.stream or ack.seq <= 0:
        raise nats.errors.Error(f"publish reply without a stream sequence: {msg.data[:200]!r}")
    return ack.stream, ack.seq, ack.duplicate

"""uvicorn's httptools protocol with a deadline on every request head.

uvicorn times out only an *idle* keep-alive connection, and any byte received
cancels that timer; nothing bounds how long the request line and headers may
take. A client that trickles one header byte every few seconds (slow-loris on
the head) would hold its connection, its buffers and a file descriptor forever.
The gateway's body deadline (``body_read_timeout_secs``) starts only once the
headers are complete, so the head needs its own:

- the deadline is armed when a connection opens and when the first byte of
  each further request arrives (keep-alive and pipelined requests);
- it is cleared once the headers are complete (the body deadline takes over);
- when it expires, a client that started a request head gets
  ``408 Request Timeout`` with ``Connection: close``; a connection that sent
  nothing is closed. Either way the client can retry on a new connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("courier.gateway")


class _HeadDeadlineProtocol(HttpToolsProtocol):
    #: Set by :func:`head_deadline_protocol` on the subclass it returns.
    head_timeout_secs: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_head_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        if self._head_timer is None:
            self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._clear_head_deadline()
        self._head_started = False
        super().on_headers_complete()

    def _arm_head_deadline(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_secs, self._head_deadline_passed)

    def _clear_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._head_started:
            self.transport.close()
            return
        message = (
            f"the request line and headers did not arrive within {self.head_timeout_secs:g}s; "
            "the connection is closed, retry on a new one"
        )
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
        log.debug("closed a connection whose request head took over %gs", self.head_timeout_secs)


def head_deadline_protocol(head_timeout_secs: float) -> type[asyncio.Protocol]:
    """The uvicorn ``http`` protocol class with this head deadline (seconds)."""
    if head_timeout_secs <= 0:
        raise ValueError(f"head_timeout_secs must be positive, got {head_timeout_secs!r}")
    return type(
        "HeadDeadlineProtocol",
        (_HeadDeadlineProtocol,),
        {"head_timeout_secs": float(head_timeout_secs)},
    )

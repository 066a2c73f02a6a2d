"""The load generator's HTTP/1.1 client: keep-alive connections that POST pre-built bodies.

The load generator shares the machine's cores with the stack it measures, so every
core-second it spends per event is taken from the pipeline's figure (issue 13). aiohttp's
client spends ~200 µs of Python per request (its request and response objects, header
multidicts, tracing hooks, a timer per request); this one sends each request as one
pre-built head plus the body, and reads the answer with httptools' response parser (the
parser uvicorn's server side uses; a C library, already a dependency of the gateway).
What it needs of HTTP is small, and it says so:

- one request at a time per connection (no pipelining); a pool keeps up to ``limit``
  idle connections and opens one when none is idle;
- the answer's status, its ``Retry-After`` header and its body (``Content-Length`` or
  chunked, which httptools decodes); a connection the server asks to close
  (``Connection: close`` or HTTP/1.0) is not reused;
- anything that ends a connection before a whole answer (refused, reset, closed, a
  malformed answer) raises :class:`HttpConnectionError`, and ``timeout_secs`` over
  connect + request + answer raises ``TimeoutError``, so the caller can retry: the
  outcome of such a request is unknown, exactly as with aiohttp.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httptools


class HttpConnectionError(Exception):
    """The connection ended, or could not be made, before a whole answer arrived."""


class _Answer:
    __slots__ = ("body", "retry_after", "status")

    def __init__(self) -> None:
        self.status = 0
        self.retry_after: str | None = None
        self.body: list[bytes] = []


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._answer = _Answer()
        self._done: asyncio.Future[_Answer] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"malformed answer: {exc}")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(f"connection closed before a whole answer ({exc or 'by the server'})")

    # -- httptools callbacks --------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self._answer.retry_after = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._answer.body.append(body)

    def on_message_complete(self) -> None:
        answer, self._answer = self._answer, _Answer()
        answer.status = self._parser.get_status_code()
        if not self._parser.should_keep_alive():
            self.close()
        done, self._done = self._done, None
        if done is not None and not done.done():
            done.set_result(answer)

    # -- use ------------------------------------------------------------------------

    async def request(self, head: bytes, body: bytes) -> _Answer:
        if self.closed or self.transport is None:
            raise HttpConnectionError("connection closed")
        done: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._done = done
        self.transport.writelines((head, body))  # one vectored write, the body not copied
        return await done

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, why: str) -> None:
        done, self._done = self._done, None
        if done is not None and not done.done():
            done.set_exception(HttpConnectionError(why))


class HttpPool:
    """Keep-alive connections to the host of ``url``, for POSTs of pre-built bodies."""

    def __init__(self, url: str, *, limit: int, timeout_secs: float, content_type: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the load generator speaks plain http:// only, not {url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._path = parts.path or "/"
        self._limit = limit
        self._timeout = timeout_secs
        host = f"{self._host}:{self._port}"
        self._head = (
            f"POST {self._path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: "
        ).encode()
        self._idle: list[_Connection] = []

    async def post(self, body: bytes) -> tuple[int, str | None, bytes]:
        """``(status, Retry-After or None, body)`` of one POST of ``body``."""
        head = b"%s%d\r\n\r\n" % (self._head, len(body))
        async with asyncio.timeout(self._timeout):
            conn = await self._connection()
            try:
                answer = await conn.request(head, body)
            except BaseException:
                conn.close()  # a request cut short leaves the connection unusable
                raise
        if not conn.closed and len(self._idle) < self._limit:
            self._idle.append(conn)
        return answer.status, answer.retry_after, b"".join(answer.body)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, self._host, self._port)
        except OSError as exc:
            raise HttpConnectionError(
                f"cannot connect to {self._host}:{self._port}: {exc}"
            ) from exc
        return conn

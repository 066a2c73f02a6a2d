"""The load generator's HTTP client (bench.loadgen.http) against a real HTTP/1.1 server
(the standard library's, in a thread): answers read right, connections kept alive, and
every way a connection can fail reported so the driver retries the same batch."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from bench.loadgen.http import HttpConnectionError, HttpPool


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: _Server = self.server  # type: ignore[assignment]
        server.bodies.append(body)
        server.ports.add(self.client_address[1])
        what = self.path.rsplit("/", 1)[-1]
        if what == "cut":  # half an answer, then the connection is gone
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if what == "busy":
            self._answer(503, b'{"error":"busy"}', {"Retry-After": "2"})
        elif what == "chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"accepted":', b"3}"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif what == "close":
            self._answer(200, b"bye", {"Connection": "close"})
            self.close_connection = True
        else:
            self._answer(200, b"echo:" + body, {})

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[bytes] = []
        self.ports: set[int] = set()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(10)


def _pool(server: _Server, path: str, timeout_secs: float = 10.0) -> HttpPool:
    url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    return HttpPool(url, limit=4, timeout_secs=timeout_secs, content_type="application/json")


async def test_posts_share_one_kept_alive_connection_and_read_each_answer(server):
    pool = _pool(server, "/v1/events")
    try:
        for i in range(5):
            body = b'{"events":[%d]}' % i
            assert await pool.post(body) == (200, None, b"echo:" + body)
        assert len(server.bodies) == 5 and len(server.ports) == 1
    finally:
        await pool.close()


async def test_a_503_comes_with_its_retry_after_and_a_chunked_answer_is_joined(server):
    busy, chunked = _pool(server, "/busy"), _pool(server, "/chunked")
    try:
        assert await busy.post(b"{}") == (503, "2", b'{"error":"busy"}')
        assert await chunked.post(b"{}") == (200, None, b'{"accepted":3}')
    finally:
        await busy.close()
        await chunked.close()


async def test_a_connection_the_server_closes_is_not_reused(server):
    pool = _pool(server, "/close")
    try:
        assert (await pool.post(b"a"))[0] == 200
        assert (await pool.post(b"b"))[0] == 200
        assert len(server.ports) == 2
    finally:
        await pool.close()


async def test_an_answer_cut_short_is_a_connection_error_and_the_next_post_reconnects(server):
    cut, fine = _pool(server, "/cut"), _pool(server, "/ok")
    try:
        with pytest.raises(HttpConnectionError, match="before a whole answer"):
            await cut.post(b"x")
        assert await fine.post(b"y") == (200, None, b"echo:y")
    finally:
        await cut.close()
        await fine.close()


async def test_nothing_listening_is_a_connection_error_naming_the_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        pool = HttpPool(
            f"http://127.0.0.1:{port}/v1/events",
            limit=1,
            timeout_secs=10,
            content_type="application/json",
        )
        with pytest.raises(HttpConnectionError, match=f"cannot connect to 127.0.0.1:{port}"):
            await pool.post(b"{}")


async def test_a_server_that_never_answers_times_out():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()  # accepts (in the backlog) and never reads or answers
        pool = HttpPool(
            f"http://127.0.0.1:{s.getsockname()[1]}/v1/events",
            limit=1,
            timeout_secs=0.5,
            content_type="application/json",
        )
        with pytest.raises(TimeoutError):
            await pool.post(b"{}")
        await pool.close()

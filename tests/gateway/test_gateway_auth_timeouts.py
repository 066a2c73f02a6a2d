"""Slow and idle clients: a body that trickles in gets 408, an idle connection is closed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
import uvicorn

from courier.errors import ConfigError
from courier.gateway import create_app
from courier.gateway.prefork import uvicorn_config

BODY = json.dumps(
    {"events": [{"type": "PlaySong", "id": "p1", "data": {"track_id": "t", "ms_played": 1}}]}
).encode()


async def test_gateway_auth_a_body_slower_than_the_deadline_is_408_and_nothing_stored(
    start_gateway, sink
):
    gw = await start_gateway(body_read_timeout_secs=0.2)

    async def trickle() -> AsyncIterator[bytes]:
        yield BODY[:10]
        await asyncio.sleep(30)
        yield BODY[10:]

    r = await gw.client.post(
        "/v1/events", content=trickle(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 408
    assert "did not arrive within 0.2s" in r.json()["error"]
    assert sink.messages == []


@pytest.fixture
async def served(gateway_settings, sink, registry):
    """The gateway behind a real uvicorn server on a free port (started as `serve` would)."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def _serve(**gateway: object) -> int:
        settings = gateway_settings(port=0, **gateway)
        app = create_app(settings, sink=sink, registry=registry)
        server = uvicorn.Server(uvicorn_config(settings, app))
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        servers.append((server, task))
        return int(server.servers[0].sockets[0].getsockname()[1])

    yield _serve
    for server, task in servers:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


def request_head(length: int) -> bytes:
    return (
        "POST /v1/events HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def test_gateway_auth_a_slow_loris_body_over_real_http_gets_408(served, sink):
    port = await served(body_read_timeout_secs=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_head(len(BODY)) + BODY[:5])
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
    finally:
        writer.close()
    assert sink.messages == []


async def test_gateway_auth_an_idle_keep_alive_connection_is_closed(served):
    port = await served(idle_timeout_secs=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_head(len(BODY)) + BODY)
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")
        rest = await asyncio.wait_for(reader.read(), 10)  # returns at EOF: the server closed
        assert b'"accepted":1' in rest
    finally:
        writer.close()


def test_gateway_auth_the_gateway_binds_loopback_unless_configured(gateway_settings):
    settings = gateway_settings()
    assert settings.gateway.host == "127.0.0.1"
    assert settings.dashboard.host == "127.0.0.1"
    assert settings.metrics_host == "127.0.0.1"
    assert settings.nats.host == "127.0.0.1"
    config = uvicorn_config(settings, create_app(settings))
    assert config.host == "127.0.0.1"
    assert config.timeout_keep_alive == round(settings.gateway.idle_timeout_secs)


async def test_gateway_auth_a_request_head_that_trickles_in_gets_408_and_a_close(served, sink):
    port = await served(head_read_timeout_secs=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = request_head(len(BODY))

    async def trickle() -> None:  # one byte every 0.1 s: the head would take seconds
        with contextlib.suppress(ConnectionError):
            for i in range(len(head)):
                writer.write(head[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.1)

    sending = asyncio.create_task(trickle())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
        rest = await asyncio.wait_for(reader.read(), 10)  # EOF: the server closed
        assert b"did not arrive within 0.5s" in rest
    finally:
        sending.cancel()
        writer.close()
    assert sink.messages == []


async def test_gateway_auth_a_connection_that_never_sends_a_request_is_closed(served):
    port = await served(head_read_timeout_secs=0.3, idle_timeout_secs=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing written
    finally:
        writer.close()


async def test_gateway_auth_the_head_deadline_restarts_for_each_keep_alive_request(served):
    port = await served(head_read_timeout_secs=0.5, idle_timeout_secs=60)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(3):  # each request is quick; together they outlast one deadline
            writer.write(request_head(len(BODY)) + BODY)
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
            assert status_line.startswith(b"HTTP/1.1 200"), status_line
            length = 0
            while line := (await asyncio.wait_for(reader.readline(), 10)).strip():
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            assert b'"accepted":1' in await reader.readexactly(length)
            await asyncio.sleep(0.3)
    finally:
        writer.close()


def test_gateway_auth_a_head_deadline_of_zero_is_a_settings_error(gateway_settings):
    with pytest.raises(ConfigError, match="head_read_timeout_secs: Input should be greater than 0"):
        gateway_settings(head_read_timeout_secs=0)

"""The gateway against a real nats-server: stored messages, duplicate window, outages."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from courier.examples import SCHEMAS_DIR
from courier.gateway import EVENTS_HEADER, SCHEMA_VERSION_HEADER, create_app
from courier.model import INVALID_TYPE
from courier.schema import Registry, load_definitions
from courier.settings import Settings
from courier.transport import (
    SCHEMAS_KV,
    Transport,
    free_port,
    provision_base,
    provision_type,
    stream_name,
)
from courier.transport.server import EmbeddedNats


def play_batch(prefix: str, n: int, *, bad: int = 0) -> bytes:
    events: list[dict[str, Any]] = [
        {"type": "PlaySong", "id": f"{prefix}-{i}", "data": {"track_id": "t", "ms_played": i}}
        for i in range(n)
    ]
    events += [
        {"type": "PlaySong", "id": f"{prefix}-bad-{i}", "data": {"track_id": "t"}}
        for i in range(bad)
    ]
    return json.dumps({"events": events}).encode()


@pytest.fixture
async def provisioned(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Settings, Transport]]:
    settings = make_settings(gateway={"publish_timeout_secs": 1.0, "retry_after_secs": 3})
    transport = await Transport.connect(settings.resolved_nats_url)
    await provision_base(transport, settings)
    definitions = load_definitions(SCHEMAS_DIR)
    for name in [d.name for d in definitions] + [INVALID_TYPE]:
        await provision_type(transport, settings, name)
    await Registry(await transport.key_value(SCHEMAS_KV)).apply(definitions)
    try:
        yield settings, transport
    finally:
        await transport.close()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gw",
            headers={"Content-Type": "application/json"},
        ) as client,
    ):
        yield client


async def stream_state(transport: Transport, event_type: str) -> tuple[int, int]:
    info = await transport.js.stream_info(stream_name(event_type))
    return info.state.messages, info.state.last_seq


async def test_accepted_events_are_in_the_stream_with_their_headers(provisioned):
    settings, transport = provisioned
    async with running(settings) as client:
        assert (await client.get("/readyz")).status_code == 200
        r = await client.post("/v1/events", content=play_batch("a", 150, bad=2))
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 150
        assert len(r.json()["rejected"]) == 2
    consumer = await transport.pull_consumer("PlaySong")
    deliveries = await consumer.fetch(100, 1.0)
    lines = [line for d in deliveries for line in d.data.splitlines()]
    assert len(lines) == 150
    assert sum(int(d.headers[EVENTS_HEADER]) for d in deliveries) == 150
    assert all(d.headers[SCHEMA_VERSION_HEADER] == "1" for d in deliveries)
    assert len(deliveries) == 1  # one request's events travel in one message
    invalid = await (await transport.pull_consumer(INVALID_TYPE)).fetch(10, 1.0)
    assert sum(len(d.data.splitlines()) for d in invalid) == 2


async def test_a_retried_batch_with_the_same_ids_adds_no_message(provisioned):
    settings, transport = provisioned
    async with running(settings) as client:
        body = play_batch("retry", 20)
        assert (await client.post("/v1/events", content=body)).json()["accepted"] == 20
        before = await stream_state(transport, "PlaySong")
        r = await client.post("/v1/events", content=body)
        assert r.status_code == 200 and r.json()["accepted"] == 20
        assert await stream_state(transport, "PlaySong") == before == (1, 1)


async def test_concurrent_requests_are_group_committed(provisioned):
    settings, transport = provisioned
    async with running(settings) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/events", content=play_batch(f"c{k}", 10)) for k in range(60))
        )
        assert all(r.json()["accepted"] == 10 for r in responses)
    messages, _ = await stream_state(transport, "PlaySong")
    assert messages < 60
    deliveries = await (await transport.pull_consumer("PlaySong")).fetch(100, 1.0)
    assert sum(len(d.data.splitlines()) for d in deliveries) == 600


async def test_a_stopped_nats_server_makes_post_answer_503_with_retry_after(
    provisioned, nats_server: EmbeddedNats
):
    settings, _ = provisioned
    async with running(settings) as client:
        assert (await client.post("/v1/events", content=play_batch("up", 1))).status_code == 200
        nats_server.stop()
        for _ in range(50):
            r = await client.post("/v1/events", content=play_batch("down", 1))
            if r.status_code == 503:
                break
            await asyncio.sleep(0.1)
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "3"
        assert "retry the whole batch" in r.json()["error"]
        assert (await client.get("/readyz")).status_code == 503


async def test_the_app_serves_over_real_http_with_uvicorn(provisioned):
    settings, transport = provisioned
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, access_log=False, log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.post(
                "/v1/events",
                content=play_batch("http", 5),
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 200 and r.json()["accepted"] == 5
    finally:
        server.should_exit = True
        await task
    assert (await stream_state(transport, "PlaySong"))[0] == 1

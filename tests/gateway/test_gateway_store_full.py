"""The gateway over a real nats-server whose store is small: a full store is a 503 with
``Retry-After`` and loses nothing (G8), the gateway keeps room for Courier's own records,
and a schema PUT that cannot get a stream says so."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from courier.examples import SCHEMAS_DIR
from courier.gateway import create_app
from courier.model import INVALID_TYPE
from courier.schema import Registry, load_definitions
from courier.settings import Settings, load_settings
from courier.transport import (
    CATALOG_KV,
    SCHEMAS_KV,
    Transport,
    provision_base,
    provision_type,
    stream_name,
)
from courier.transport.server import EmbeddedNats

MIB = 1024 * 1024


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A real nats-server whose streams may use 16 MiB together."""
    with EmbeddedNats(tmp_path / "nats", port=0, max_store_bytes=16 * MIB) as server:
        yield server


async def _provisioned(settings: Settings) -> None:
    transport = await Transport.connect(settings.resolved_nats_url)
    try:
        await provision_base(transport, settings)
        definitions = load_definitions(SCHEMAS_DIR)
        for name in [INVALID_TYPE, "PlaySong"]:
            await provision_type(transport, settings, name)
        await Registry(await transport.key_value(SCHEMAS_KV)).apply(definitions)
    finally:
        await transport.close()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield client


def _batch(prefix: str, n: int, track_bytes: int) -> dict[str, Any]:
    track = "t" * track_bytes
    return {
        "events": [
            {"type": "PlaySong", "id": f"{prefix}-{i}", "data": {"track_id": track, "ms_played": i}}
            for i in range(n)
        ]
    }


async def test_a_full_store_answers_503_with_retry_after_and_drops_nothing(tmp_path, small_store):
    settings = load_settings(
        data_dir=tmp_path / "data", nats_url=small_store.url, gateway={"retry_after_secs": 3}
    )
    await _provisioned(settings)
    accepted = 0
    async with running(settings) as client:
        for k in range(200):  # 200 x 256 KiB is three times the store
            r = await client.post("/v1/events", json=_batch(f"b{k}", 64, 4000))
            if r.status_code != 200:
                break
            accepted += r.json()["accepted"]
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "3"
        error = r.json()["error"]
        assert "no room to store" in error and "retry the whole batch after 3s" in error
        # Still full: the retry the client makes is refused the same way, not accepted.
        again = await client.post("/v1/events", json=_batch("again", 1, 10))
        assert again.status_code == 503 and again.headers["Retry-After"] == "3"
    assert accepted >= 8 * MIB // 4000
    transport = await Transport.connect(small_store.url)
    try:
        state = (await transport.js.stream_info(stream_name("PlaySong"))).state
        assert state.first_seq == 1  # discard=new: the oldest stored events are still there
        consumer = await transport.pull_consumer("PlaySong")
        stored = 0
        while deliveries := await consumer.fetch(100, 0.5):
            stored += sum(len(d.data.splitlines()) for d in deliveries)
        assert stored == accepted
    finally:
        await transport.close()


async def test_the_gateway_stops_events_short_of_the_limit_so_buckets_can_still_close(
    tmp_path, small_store
):
    settings = load_settings(
        data_dir=tmp_path / "data",
        nats_url=small_store.url,
        nats={"store_max_bytes": 16 * MIB, "store_headroom_bytes": 4 * MIB},
        gateway={"retry_after_secs": 3, "store_check_interval_secs": 0.05},
    )
    await _provisioned(settings)
    async with running(settings) as client:
        for k in range(200):
            r = await client.post("/v1/events", json=_batch(f"b{k}", 64, 4000))
            if r.status_code != 200:
                break
        assert r.status_code == 503 and r.headers["Retry-After"] == "3"
        assert "kept for Courier's own records" in r.json()["error"]
    transport = await Transport.connect(small_store.url)
    try:
        # Stopped at the headroom (12 MiB), give or take the last batch (256 KiB).
        assert await transport.store_used_bytes() < 13 * MIB
        # What the closer writes to claim and close a bucket still fits.
        catalog = await transport.key_value(CATALOG_KV)
        for i in range(20):
            await catalog.put(f"PlaySong.{i}", b"x" * 1000)
    finally:
        await transport.close()


async def test_a_schema_put_that_gets_no_stream_says_what_to_do_for_a_schema(tmp_path, small_store):
    # Each stream reserves 6 MiB of the 16: the close stream and _invalid's leave no room.
    settings = load_settings(
        data_dir=tmp_path / "data", nats_url=small_store.url, nats={"stream_max_bytes": 6 * MIB}
    )
    transport = await Transport.connect(small_store.url)
    try:
        await provision_base(transport, settings)
        await provision_type(transport, settings, INVALID_TYPE)
    finally:
        await transport.close()
    schema = {"type": "record", "name": "Foo", "fields": [{"name": "x", "type": "long"}]}
    async with running(settings) as client:
        r = await client.put("/v1/schemas/Foo", content=json.dumps({"schema": schema}))
    assert r.status_code == 503 and "Retry-After" in r.headers
    error = r.json()["error"]
    assert "PUT of 'Foo' did not complete: Foo is registered (version 1)" in error
    assert "nats.stream_max_bytes" in error and "retry the PUT" in error
    assert "batch" not in error and "events' ids" not in error

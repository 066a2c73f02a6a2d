"""The repair routes (/v1/admin/*) on a real nats-server: admin key only, every call recorded."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from courier.gateway import create_app
from courier.service.auth import hash_key, new_key
from courier.settings import Settings
from courier.transport import stream_name

ADMIN_KEY = new_key()
APP_KEY = new_key()
AUTH: dict[str, Any] = {
    "keys": [{"name": "app", "sha256": hash_key(APP_KEY), "types": ["*"]}],
    "admin_key_sha256": hash_key(ADMIN_KEY),
}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ROUTES = [
    ("GET", "/v1/admin/repairs", None),
    ("POST", "/v1/admin/redeliver/PlaySong", {"from_seq": 1}),
    ("POST", "/v1/admin/republish/PlaySong", {"stream_seq": 1, "body_base64": ""}),
    ("POST", "/v1/admin/resubmit/PlaySong", {"events": []}),
]


@contextlib.asynccontextmanager
async def gateway(pipeline) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(**{**pipeline.settings.model_dump(), "auth": AUTH})
    app = create_app(settings, registry=pipeline.registry)  # the real NATS transport
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield client


async def repairs(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get("/v1/admin/repairs", headers=ADMIN)
    assert r.status_code == 200, r.text
    records: list[dict[str, Any]] = r.json()
    return records


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_repair_routes_are_401_without_a_key_and_403_with_another_key_unrecorded(
    pipeline, method, path, body
):
    async with gateway(pipeline) as client:
        r = await client.request(method, path, json=body)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        r = await client.request(method, path, json=body, headers={"X-API-Key": APP_KEY})
        assert r.status_code == 403 and "'app' is not the admin key" in r.json()["error"]
        assert await repairs(client) == []


async def test_a_redelivery_is_recorded_with_the_principal_name_arguments_counts_and_result(
    pipeline,
):
    for i in range(3):
        await pipeline.publish("PlaySong", [{"track_id": "t", "ms_played": i}], [f"e{i}"])
    async with gateway(pipeline) as client:
        r = await client.post("/v1/admin/redeliver/PlaySong", json={"from_seq": 1}, headers=ADMIN)
        assert r.status_code == 200, r.text
        record = r.json()
        assert record["outcome"] == "done" and record["operation"] == "redeliver"
        assert record["principal"] == "admin" and record["arguments"] == {"from_seq": 1}
        assert record["counts"] == {"messages": 3}
        assert record["result"]["from_seq"] == 1 and record["result"]["stream_last_seq"] == 3
        assert record["started_at"] <= record["finished_at"]
        listed = await repairs(client)
    assert listed == [record]
    assert ADMIN_KEY not in str(listed) and hash_key(ADMIN_KEY) not in str(listed)


async def test_refused_repairs_are_recorded_with_their_reason_and_a_clear_4xx(pipeline):
    await pipeline.publish("PlaySong", [{"track_id": "t", "ms_played": 1}], ["e1"])
    await pipeline.transport.js.delete_msg(stream_name("PlaySong"), 1)
    await pipeline.publish("PlaySong", [{"track_id": "t", "ms_played": 2}], ["e2"])
    async with gateway(pipeline) as client:
        post = client.post
        unknown = await post("/v1/admin/redeliver/Nope", json={"from_seq": 1}, headers=ADMIN)
        gone = await post("/v1/admin/redeliver/PlaySong", json={"from_seq": 1}, headers=ADMIN)
        both = {"from_seq": 1, "from_time": "2026-01-01T00:00:00Z"}
        malformed = await post("/v1/admin/redeliver/PlaySong", json=both, headers=ADMIN)
        bad_time = await post(
            "/v1/admin/redeliver/PlaySong", json={"from_time": "yesterday"}, headers=ADMIN
        )
        listed = await repairs(client)
    assert unknown.status_code == 404 and "'Nope' is not registered" in unknown.json()["error"]
    assert gone.status_code == 409 and "first retained message is seq 2" in gone.json()["error"]
    assert malformed.status_code == 400 and "exactly one" in malformed.json()["error"]
    assert bad_time.status_code == 400 and "not an RFC 3339 time" in bad_time.json()["error"]
    assert [r["outcome"] for r in listed] == ["refused"] * 4
    assert [r["id"] for r in listed] == [
        x.json()["repair_id"] for x in (bad_time, malformed, gone, unknown)
    ]
    assert listed[-1]["event_type"] == "Nope" and "not registered" in listed[-1]["error"]


async def test_a_republished_body_is_stored_once_even_when_the_call_is_retried(pipeline):
    body = b'{"not": "checked here"}\n'
    doc = {
        "stream_seq": 7,
        "headers": {"Courier-Schema-Version": "1", "Nats-Msg-Id": "original"},
        "body_base64": base64.b64encode(body).decode(),
    }
    async with gateway(pipeline) as client:
        first = await client.post("/v1/admin/republish/PlaySong", json=doc, headers=ADMIN)
        retry = await client.post("/v1/admin/republish/PlaySong", json=doc, headers=ADMIN)
        listed = await repairs(client)
    assert first.status_code == 200, first.text
    assert first.json()["result"] == {
        "stream_seq": 1,
        "duplicate": False,
        "msg_id": "replay.PlaySong.7",
    }
    assert retry.json()["result"]["duplicate"] is True
    assert [r["counts"] for r in listed] == [{"published": 0}, {"published": 1}]
    assert listed[0]["arguments"] == {
        "stream_seq": 7,
        "body_bytes": len(body),
        "headers": ["Courier-Schema-Version"],
    }
    stored = [m async for m in pipeline.transport.scan("PlaySong", 1, 10)]
    assert len(stored) == 1 and stored[0].data == body
    assert stored[0].headers["Nats-Msg-Id"] == "replay.PlaySong.7"

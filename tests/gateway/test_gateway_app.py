"""Operational routes, back-pressure answers and group commit seen through HTTP."""

from __future__ import annotations

import asyncio
import json

from courier.errors import PublishOutcomeUnknownError, StreamFullError
from courier.gateway import MemorySink, create_app


def play_batch(prefix: str, n: int) -> bytes:
    events = [
        {"type": "PlaySong", "id": f"{prefix}-{i}", "data": {"track_id": "t", "ms_played": i}}
        for i in range(n)
    ]
    return json.dumps({"events": events}).encode()


async def test_sink_failures_answer_503_with_retry_after_and_nothing_accepted(start_gateway, sink):
    gw = await start_gateway(retry_after_secs=7)
    for error in (StreamFullError("stream full"), PublishOutcomeUnknownError("timed out")):
        sink.fail_with = error
        r = await gw.post(play_batch("a", 3))
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "7"
        assert "nothing was accepted" in r.json()["error"]
        assert "accepted" not in r.json()
    sink.fail_with = None
    r = await gw.post(play_batch("a", 3))
    assert r.json()["accepted"] == 3


async def test_a_disconnected_transport_answers_503_before_reading_the_body(gateway, sink):
    sink.connected = False
    r = await gateway.post(play_batch("a", 1))
    assert r.status_code == 503
    assert "Retry-After" in r.headers
    assert sink.messages == []


async def test_concurrent_requests_coalesce_into_fewer_messages(gateway, sink):
    sink.delay_secs = 0.02
    responses = await asyncio.gather(*(gateway.post(play_batch(f"r{k}", 10)) for k in range(40)))
    assert all(r.json()["accepted"] == 10 for r in responses)
    assert len(sink.messages) < 40
    assert len(sink.events_of("PlaySong")) == 400


async def test_readyz_reflects_the_transport_and_registry(gateway, sink):
    assert (await gateway.client.get("/healthz")).status_code == 200
    assert (await gateway.client.get("/readyz")).status_code == 200
    sink.connected = False
    r = await gateway.client.get("/readyz")
    assert r.status_code == 503
    assert "transport" in r.json()["error"]


async def test_readyz_is_503_before_the_app_started(gateway_settings, registry):
    import httpx

    app = create_app(gateway_settings(), sink=MemorySink(), registry=registry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw"
    ) as client:
        assert (await client.get("/readyz")).status_code == 503
        r = await client.post("/v1/events", content=play_batch("a", 1))
        assert r.status_code in (415, 503)


async def test_metrics_count_accepted_rejected_and_requests(gateway, sink):
    body = json.loads(play_batch("m", 2))
    body["events"].append({"type": "Nope", "data": {}})
    body["events"].append({"type": "PlaySong", "data": {"track_id": 1, "ms_played": 1}})
    await gateway.post(json.dumps(body).encode())
    await gateway.post(b"{", "application/json")
    text = (await gateway.client.get("/metrics")).text
    assert 'courier_gateway_events_accepted_total{type="PlaySong"} 2.0' in text
    assert (
        'courier_gateway_events_rejected_total{reason="unknown_type",type="_unknown"} 1.0' in text
    )
    assert 'courier_gateway_events_rejected_total{reason="invalid",type="PlaySong"} 1.0' in text
    assert 'courier_gateway_requests_total{status="200"} 1.0' in text
    assert 'courier_gateway_requests_total{status="400"} 1.0' in text
    assert "courier_gateway_request_seconds_bucket" in text
    assert "courier_gateway_publish_seconds_count 2.0" in text
    assert "courier_gateway_message_events_bucket" in text
    # The latency breakdown of a request (issue 13): one observation per stored request.
    assert "courier_gateway_validate_seconds_count 1.0" in text  # not the malformed 400
    assert "courier_gateway_encode_seconds_count 1.0" in text
    assert "courier_gateway_store_wait_seconds_count 1.0" in text
    assert "courier_gateway_group_wait_seconds_count 2.0" in text  # PlaySong and _invalid
    assert "courier_gateway_loop_lag_seconds_bucket" in text
    assert 'courier_gateway_publish_failures_total{reason="stream_full"} 0.0' in text


async def test_two_apps_do_not_share_metrics(gateway_settings, registry):
    a = create_app(gateway_settings(), sink=MemorySink(), registry=registry)
    b = create_app(gateway_settings(), sink=MemorySink(), registry=registry)
    assert a.state.gateway.metrics.registry is not b.state.gateway.metrics.registry


async def test_openapi_describes_the_routes(gateway):
    r = await gateway.client.get("/openapi.json")
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/events", "/v1/schemas", "/v1/schemas/{type}", "/healthz", "/readyz"} <= set(
        doc["paths"]
    )
    assert {"200", "400", "413", "415", "503"} <= set(
        doc["paths"]["/v1/events"]["post"]["responses"]
    )


async def test_schemas_are_served_and_unknown_ones_are_404(gateway):
    names = [t["name"] for t in (await gateway.client.get("/v1/schemas")).json()]
    assert names == ["AdImpression", "PlaySong", "Search"]
    r = await gateway.client.get("/v1/schemas/PlaySong")
    assert r.json()["latest_version"] == 1
    assert r.json()["versions"][0]["schema"]["name"] == "PlaySong"
    r = await gateway.client.get("/v1/schemas/Nope")
    assert r.status_code == 404


async def test_a_new_schema_version_is_picked_up_by_refresh(start_gateway, registry, sink):
    from courier.examples import SCHEMAS_DIR
    from courier.schema import TypeDefinition, load_definitions

    gw = await start_gateway(registry_refresh_secs=0.05)
    (play,) = [d for d in load_definitions(SCHEMAS_DIR) if d.name == "PlaySong"]
    avro = dict(play.avro)
    avro["fields"] = [*avro["fields"], {"name": "volume", "type": "int", "default": 100}]
    await registry.apply([TypeDefinition("PlaySong", avro, play.settings)])
    body = {
        "events": [
            {"type": "PlaySong", "id": "v2", "data": {"track_id": "t", "ms_played": 1, "volume": 5}}
        ]
    }
    for _ in range(100):
        r = await gw.post(json.dumps(body).encode())
        if r.json()["accepted"] == 1:
            break
        await asyncio.sleep(0.05)
    assert r.json() == {"accepted": 1, "rejected": []}
    assert sink.messages[-1].headers["Courier-Schema-Version"] == "2"


async def test_the_ingest_route_keeps_its_answers_on_the_short_path(gateway_settings, registry):
    # POST /v1/events skips Starlette's router and middlewares (issue 13): other
    # methods still get 405, and a bug still answers 500 without accepting anything.
    import httpx

    sink = MemorySink()
    app = create_app(gateway_settings(), sink=sink, registry=registry)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://gw",
        ) as client,
    ):
        assert (await client.get("/v1/events")).status_code == 405
        json_type = {"Content-Type": "application/json"}
        r = await client.post("/v1/events", content=play_batch("s", 2), headers=json_type)
        assert r.status_code == 200 and r.json() == {"accepted": 2, "rejected": []}
        sink.fail_with = RuntimeError("a bug in the sink")
        r = await client.post("/v1/events", content=play_batch("t", 2), headers=json_type)
        assert r.status_code == 500
        assert len(sink.events_of("PlaySong")) == 2

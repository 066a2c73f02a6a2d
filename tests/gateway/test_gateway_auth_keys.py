"""API keys at the gateway: 401 without a known key, 403 for a type or route the key may not use."""

from __future__ import annotations

import json
from typing import Any

import pytest

from courier.errors import ConfigError
from courier.service.auth import KeyRing, hash_key, new_key, presented_key
from courier.settings import load_settings

PLAYER_KEY = new_key()
ANY_TYPE_KEY = new_key()
ADMIN_KEY = new_key()
AUTH: dict[str, Any] = {
    "keys": [
        {"name": "player", "sha256": hash_key(PLAYER_KEY), "types": ["PlaySong"]},
        {"name": "any", "sha256": hash_key(ANY_TYPE_KEY), "types": ["*"]},
    ],
    "admin_key_sha256": hash_key(ADMIN_KEY),
}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def play(i: int) -> dict[str, Any]:
    return {"type": "PlaySong", "id": f"p{i}", "data": {"track_id": "t", "ms_played": i}}


def search(i: int) -> dict[str, Any]:
    return {"type": "Search", "id": f"s{i}", "data": {"query": "q", "results": i}}


def batch(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


@pytest.fixture
async def gw(start_gateway):
    return await start_gateway(auth=AUTH)


async def test_gateway_auth_a_request_without_a_key_is_401_and_nothing_is_stored(gw, sink):
    r = await gw.post(batch(play(1)))
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert "API key is required" in r.json()["error"]
    assert sink.messages == []


async def test_gateway_auth_an_unknown_key_is_401_without_echoing_it(gw, sink):
    stranger = new_key()
    r = await gw.post(batch(play(1)), **bearer(stranger))
    assert r.status_code == 401
    assert stranger not in r.text
    assert sink.messages == []


async def test_gateway_auth_a_key_is_accepted_as_bearer_or_x_api_key(gw, sink):
    assert (await gw.post(batch(play(1)), **bearer(PLAYER_KEY))).json()["accepted"] == 1
    assert (await gw.post(batch(play(2)), x_api_key=PLAYER_KEY)).json()["accepted"] == 1
    assert len(sink.events_of("PlaySong")) == 2


async def test_gateway_auth_a_batch_with_a_type_the_key_may_not_send_is_403_naming_it(gw, sink):
    r = await gw.post(batch(play(1), search(2)), **bearer(PLAYER_KEY))
    assert r.status_code == 403
    assert "'Search'" in r.json()["error"]
    assert "nothing was accepted" in r.json()["error"]
    assert sink.messages == []


async def test_gateway_auth_an_invalid_event_of_a_forbidden_type_is_403_not_a_rejection(gw, sink):
    bad_search = {"type": "Search", "data": {"query": 1}}
    unregistered = {"type": "Nope", "data": {}}
    for event in (bad_search, unregistered):
        r = await gw.post(batch(play(1), event), **bearer(PLAYER_KEY))
        assert r.status_code == 403, r.text
    assert sink.messages == []


async def test_gateway_auth_events_without_a_type_are_rejections_for_any_key(gw, sink):
    r = await gw.post(batch(play(1), {"data": {}}), **bearer(PLAYER_KEY))
    assert r.status_code == 200
    assert r.json()["accepted"] == 1
    assert len(r.json()["rejected"]) == 1


async def test_gateway_auth_a_key_for_every_type_and_the_admin_key_may_send_any(gw, sink):
    for key in (ANY_TYPE_KEY, ADMIN_KEY):
        r = await gw.post(batch(play(1), search(2)), **bearer(key))
        assert r.json() == {"accepted": 2, "rejected": []}


async def test_gateway_auth_probes_metrics_and_openapi_stay_open(gw):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await gw.client.get(path)).status_code == 200, path


async def test_gateway_auth_schemas_are_readable_with_any_valid_key_only(gw):
    assert (await gw.client.get("/v1/schemas")).status_code == 401
    assert (await gw.client.get("/v1/schemas/PlaySong")).status_code == 401
    r = await gw.client.get("/v1/schemas/PlaySong", headers=bearer(PLAYER_KEY))
    assert r.json()["name"] == "PlaySong"


def clicked_schema(**extra: Any) -> dict[str, Any]:
    fields = [{"name": "button", "type": "string"}]
    return {"type": "record", "name": "Clicked", "fields": fields, **extra}


async def test_gateway_auth_schema_changes_need_the_admin_key(gw, sink):
    doc = {"schema": clicked_schema(), "settings": {"tier": "high"}}
    url = "/v1/schemas/Clicked"
    assert (await gw.client.put(url, json=doc)).status_code == 401
    r = await gw.client.put(url, json=doc, headers=bearer(ANY_TYPE_KEY))
    assert r.status_code == 403
    assert "admin key" in r.json()["error"]
    r = await gw.client.put(url, json=doc, headers=bearer(ADMIN_KEY))
    assert r.json() == {"name": "Clicked", "action": "created", "version": 1}
    event = {"type": "Clicked", "id": "c1", "data": {"button": "ok"}}
    assert (await gw.post(batch(event), **bearer(ANY_TYPE_KEY))).json()["accepted"] == 1


async def test_gateway_auth_an_incompatible_schema_change_is_409_unless_forced(gw):
    url, admin = "/v1/schemas/Clicked", bearer(ADMIN_KEY)
    await gw.client.put(url, json={"schema": clicked_schema()}, headers=admin)
    changed = clicked_schema(fields=[{"name": "button", "type": "long"}])
    r = await gw.client.put(url, json={"schema": changed}, headers=admin)
    assert r.status_code == 409
    assert "incompatible" in r.json()["error"]
    r = await gw.client.put(url, json={"schema": changed, "force": True}, headers=admin)
    assert r.json()["version"] == 2


async def test_gateway_auth_a_malformed_schema_change_is_400_naming_the_problem(gw):
    admin = bearer(ADMIN_KEY)
    for body, expected in (
        (b"{", "body must be"),
        (json.dumps({"schema": clicked_schema()}).encode(), "must be the type 'Other'"),
        (json.dumps({"schema": {"name": "Other", "type": "nope"}}).encode(), "invalid"),
        (json.dumps({"schema": {"name": "Other"}, "settings": {"x": 1}}).encode(), "invalid"),
    ):
        r = await gw.client.put("/v1/schemas/Other", content=body, headers=admin)
        assert r.status_code == 400, (body, r.text)
        assert expected in r.json()["error"]


async def test_gateway_auth_without_an_admin_key_configured_admin_routes_are_403(start_gateway):
    gw = await start_gateway(auth={"keys": AUTH["keys"]})
    r = await gw.client.put(
        "/v1/schemas/Clicked", json={"schema": clicked_schema()}, headers=bearer(ANY_TYPE_KEY)
    )
    assert r.status_code == 403
    assert "none is configured" in r.json()["error"]


async def test_gateway_auth_is_off_without_keys_and_says_so_once_at_start(start_gateway, caplog):
    caplog.set_level("WARNING", logger="courier.gateway")
    gw = await start_gateway()
    assert (await gw.post(batch(play(1)))).json()["accepted"] == 1
    r = await gw.client.put("/v1/schemas/Clicked", json={"schema": clicked_schema()})
    assert r.status_code == 200
    assert sum("auth is off" in r.getMessage() for r in caplog.records) == 1


def test_gateway_auth_keys_are_random_and_stored_only_as_sha256():
    key = new_key()
    assert key.startswith("ck_") and len(key) > 40 and key != new_key()
    assert len(hash_key(key)) == 64 and key not in hash_key(key)
    ring = KeyRing(load_settings(auth={"admin_key_sha256": hash_key(key)}).auth)
    assert ring.identify(bearer(key)).admin
    assert presented_key({"authorization": "Basic abc"}) is None
    assert presented_key({"x-api-key": f"  {key} "}) == key


def test_gateway_auth_settings_refuse_a_raw_key_where_its_hash_belongs_without_echoing_it():
    key = new_key()
    with pytest.raises(ConfigError) as info:
        load_settings(auth={"keys": [{"name": "k", "sha256": key}]})
    assert "sha256" in str(info.value)
    assert key not in str(info.value)
    with pytest.raises(ConfigError, match="not event type names"):
        load_settings(auth={"keys": [{"name": "k", "sha256": "0" * 64, "types": ["a b"]}]})


def test_gateway_auth_courier_keys_new_prints_a_key_once_and_the_settings_that_accept_it(
    tmp_path,
):
    import re

    from click.testing import CliRunner

    from courier.cli.main import cli

    out = CliRunner().invoke(cli, ["keys", "new", "--name", "web", "--types", "PlaySong,Search"])
    assert out.exit_code == 0, out.output
    key = re.search(r"ck_\S+", out.output).group(0)
    entry = out.output.strip().splitlines()[-1]
    assert key not in entry
    config = tmp_path / "courier.toml"
    config.write_text(f"[auth]\nkeys = [{entry}]\n")
    principal = KeyRing(load_settings(config).auth).identify(bearer(key))
    assert principal.name == "web"
    assert principal.types == {"PlaySong", "Search"}
    bad = CliRunner().invoke(cli, ["keys", "new", "--name", "web", "--types", "not a type"])
    assert bad.exit_code != 0


async def test_gateway_auth_the_require_key_middleware_guards_another_apps_routes():
    import httpx
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from courier.service.auth import RequireKey

    async def page(request):
        return PlainTextResponse(request.scope["state"]["principal"].name)

    async def health(request):
        return PlainTextResponse("ok")

    def dashboard(auth: dict[str, Any]) -> httpx.AsyncClient:
        ring = KeyRing(load_settings(auth=auth).auth)
        app = Starlette(
            routes=[Route("/", page), Route("/healthz", health)],
            middleware=[Middleware(RequireKey, keyring=ring, admin=True, exempt=("/healthz",))],
        )
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://d")

    async with dashboard(AUTH) as client:
        assert (await client.get("/")).status_code == 401
        assert (await client.get("/", headers=bearer(PLAYER_KEY))).status_code == 403
        assert (await client.get("/", headers=bearer(ADMIN_KEY))).text == "admin"
        assert (await client.get("/healthz")).text == "ok"
    async with dashboard({}) as client:  # auth off: open
        assert (await client.get("/")).text == "anonymous"

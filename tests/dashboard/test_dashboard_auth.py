"""With keys configured, the dashboard and its API need one; browsers answer a Basic prompt."""

from __future__ import annotations

import base64

import httpx

from courier.dashboard.app import create_app
from courier.service.auth import hash_key, new_key
from courier.settings import load_settings

KEY = new_key()


def _app(tmp_path, **dashboard):
    settings = load_settings(
        data_dir=tmp_path,
        auth={"keys": [{"name": "ops", "sha256": hash_key(KEY), "types": ["*"]}]},
        dashboard=dashboard,
    )
    return create_app(settings)


async def _get(app, path, headers=None):
    # No lifespan: the auth middleware answers before any route needs NATS.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://d") as c:
        return await c.get(path, headers=headers or {})


async def test_the_dashboard_asks_a_browser_for_the_key_as_a_basic_password(tmp_path):
    app = _app(tmp_path)
    r = await _get(app, "/api/types")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic realm=")
    assert KEY not in r.text


async def test_a_wrong_key_is_refused_and_health_stays_open(tmp_path):
    app = _app(tmp_path)
    basic = base64.b64encode(b"me:not-the-key").decode()
    assert (await _get(app, "/", {"Authorization": f"Basic {basic}"})).status_code == 401
    assert (await _get(app, "/healthz")).status_code == 200


async def test_a_valid_key_passes_the_middleware_as_basic_or_bearer(tmp_path):
    app = _app(tmp_path)
    basic = base64.b64encode(f"me:{KEY}".encode()).decode()
    for headers in ({"Authorization": f"Basic {basic}"}, {"Authorization": f"Bearer {KEY}"}):
        r = await _get(app, "/healthz-not-a-route", headers)
        assert r.status_code == 404  # past auth; the route does not exist


async def test_admin_only_dashboards_refuse_other_keys(tmp_path):
    app = _app(tmp_path, require_key="admin")
    r = await _get(app, "/api/types", {"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 403

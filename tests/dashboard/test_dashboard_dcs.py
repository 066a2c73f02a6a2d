"""The per-DC panel on the page and /api/dcs: only with DCs configured."""

from __future__ import annotations

import httpx

from courier.dashboard.app import create_app
from courier.dashboard.page import render_page
from dashboard.dc_rows import panel_doc

GRID = {"generated_at": "x", "bucket_width_secs": 2, "starts": [], "starts_iso": [], "rows": []}


def test_each_row_says_in_one_word_whether_its_dc_is_ok_late_unreachable_or_mismatched():
    rows = {r["domain"]: r for r in panel_doc()["rows"]}
    assert {d: r["status"] for d, r in rows.items()} == {
        "dcA": "ok",
        "dcB": "late",
        "dcC": "unreachable",
        "dcD": "mismatch",
    }
    assert rows["dcB"]["delay_breached"] and rows["dcB"]["delay_secs"] == 7.5
    assert not rows["dcC"]["reachable"] and rows["dcC"]["behind_messages"] is None


def test_the_page_has_a_dc_panel_only_when_dcs_are_configured():
    with_dcs = render_page(GRID, [], 5.0, dcs=panel_doc())
    assert 'id="dcs"' in with_dcs and "Data centres" in with_dcs and "limit 2s" in with_dcs
    without = render_page(GRID, [], 5.0)
    assert 'id="dcs"' not in without and "Data centres" not in without
    assert "let dcs = null;" in without


async def test_without_dcs_the_dashboard_serves_no_dc_panel_and_api_dcs_is_404(pipeline):
    app = create_app(pipeline.settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://d") as c,
    ):
        r = await c.get("/api/dcs")
        assert r.status_code == 404 and "no DCs configured" in r.json()["error"]
        page = await c.get("/")
        assert page.status_code == 200 and 'id="dcs"' not in page.text

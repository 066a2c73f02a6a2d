"""The per-DC panel in real headless Chromium: each DC's row says ok, late (with the "!"
breach mark), unreachable or mismatch, and a DC whose link is cut shows as behind and
late on the live page while the other DC stays caught up."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from bench.topology import Topology

from courier.dashboard.page import render_page
from dashboard.browser_testing import ARTIFACTS, opened, playwright_api
from dashboard.dc_rows import panel_doc
from multidc.dc_testing import TYPE, caught_up, dashboard, provision, publish, wait_rows

GREEN, RED, AMBER = "rgb(46, 157, 79)", "rgb(214, 69, 69)", "rgb(240, 160, 32)"
GRID = {"generated_at": "x", "bucket_width_secs": 2, "starts": [], "starts_iso": [], "rows": []}

#: The status cell's text, colour and breach mark in one read, from a connected element
#: (the page re-renders the panel on each refresh).
_STATUS_STYLE = """el => el.isConnected ? [
    el.textContent,
    getComputedStyle(el).color,
    getComputedStyle(el, '::after').content,
] : null"""


async def _status(page, event_type: str, dc: str) -> tuple[str, str, str]:
    loc = page.locator(f'tr.dc[data-type="{event_type}"][data-dc="{dc}"] td.status')
    for _ in range(100):
        await loc.wait_for(timeout=10_000)
        got = await loc.evaluate(_STATUS_STYLE)
        if got is not None and got[1]:
            return str(got[0]), str(got[1]), str(got[2])
        await asyncio.sleep(0.05)
    raise AssertionError(f"the status of {event_type} from {dc} never rendered with a style")


async def test_each_dc_row_shows_its_status_and_a_breach_mark_only_when_late():
    html = render_page(GRID, [], 3600.0, dcs=panel_doc())
    async with opened(content=html) as page:
        assert await _status(page, "PlaySong", "dcA") == ("OK", GREEN, "none")
        assert await _status(page, "PlaySong", "dcB") == ("LATE (> 2s)", RED, '" !"')
        assert await _status(page, "PlaySong", "dcC") == ("UNREACHABLE", AMBER, "none")
        assert await _status(page, "PlaySong", "dcD") == ("MISMATCH", RED, "none")
        dc_b = page.locator('tr.dc[data-dc="dcB"]')
        assert await dc_b.locator("td.behind").text_content() == "2"
        assert await dc_b.locator("td.behind_s").text_content() == "7.5"
        dc_d = page.locator('tr.dc[data-dc="dcD"]')
        assert "[[3,3]]" in (await dc_d.get_attribute("title") or "")


def test_the_live_panel_shows_a_dc_whose_link_is_cut_as_behind_and_late(tmp_path: Path):
    expect = playwright_api.expect
    with Topology(tmp_path / "topology") as t:
        asyncio.run(provision(t, tmp_path))
        asyncio.run(publish(t.dcs["dcA"].url, 5, "a"))
        asyncio.run(publish(t.dcs["dcB"].url, 3, "b"))
        direct = {"dcA": t.dcs["dcA"].url}
        with dashboard(t, tmp_path / "c", nats_urls=direct, max_transfer_delay_secs=2) as url:
            wait_rows(url, caught_up)

            async def check() -> None:
                async with opened(url) as page:
                    row_a = page.locator(f'tr.dc[data-type="{TYPE}"][data-dc="dcA"]')
                    row_b = page.locator(f'tr.dc[data-type="{TYPE}"][data-dc="dcB"]')
                    await expect(row_a.locator("td.behind")).to_have_text("0")
                    t.cut("dcA")
                    await publish(t.dcs["dcA"].url, 2, "a2")
                    # Waits on the page's own refreshes (every 0.5 s), not on a sleep.
                    await expect(row_a).to_have_class(re.compile(r"\blate\b"), timeout=60_000)
                    await expect(row_a).to_have_class(re.compile(r"\bbreach\b"))
                    await expect(row_a.locator("td.behind")).to_have_text("2")
                    await expect(row_a.locator("td.status")).to_have_text("LATE (> 2s)")
                    await expect(row_b.locator("td.behind")).to_have_text("0")
                    ARTIFACTS.mkdir(exist_ok=True)
                    await page.screenshot(path=str(ARTIFACTS / "dashboard-dcs.png"), full_page=True)

            asyncio.run(check())

"""The dashboard in real headless Chromium: the grid's colours say closed on time, late, open."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from courier.model import bucket_start
from courier.transport import free_port
from courier_testing import FAST, courier_process, example_definitions, open_pipeline, stop_process

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GREEN, RED, GREY = "rgb(46, 157, 79)", "rgb(214, 69, 69)", "rgb(184, 184, 184)"

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing in CI: .ci/run must install chromium")
    pytest.skip(
        f"{CHROMIUM} is not installed (apt-get install -y chromium); the browser test needs it",
        allow_module_level=True,
    )

playwright_api = pytest.importorskip("playwright.async_api")


@pytest.fixture
async def stack(make_settings):
    # PlaySong (normal tier) gets a 0.5 s SLO, so each of its closed buckets is late;
    # Search (low tier) closes well within its SLO; the current bucket is open.
    port = free_port()
    settings = make_settings(
        **FAST,
        audit={"slo_normal_close_delay_secs": 0.5},
        dashboard={"port": port, "refresh_secs": 0.5},
    )
    p = await open_pipeline(settings, example_definitions("PlaySong", "Search"))
    await p.start_closer()
    proc = courier_process(settings, "dashboard")
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                assert proc.poll() is None, "courier dashboard exited"
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        yield p, f"http://127.0.0.1:{port}/"
    finally:
        stop_process(proc)
        await p.stop()
        await p.transport.close()


async def _cell(page, event_type: str, start: int) -> tuple[str, str]:
    loc = page.locator(f'td.cell[data-type="{event_type}"][data-start="{start}"]')
    await loc.wait_for(timeout=10_000)
    classes = await loc.get_attribute("class") or ""
    colour = await loc.evaluate("el => getComputedStyle(el).backgroundColor")
    return classes, colour


async def test_the_grid_shows_closed_late_and_open_buckets_in_their_colours(stack):
    p, url = stack
    width = p.settings.bucket_width_secs
    first = bucket_start(time.time(), width)
    await p.wait_until(lambda: p.reader.manifest("PlaySong", first + width) is not None, 20)
    await p.wait_until(lambda: p.reader.manifest("Search", first + width) is not None, 20)
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page()
            await page.goto(url)
            on_time = await _cell(page, "Search", first + width)
            late = await _cell(page, "PlaySong", first + width)
            assert "on_time" in on_time[0] and on_time[1] == GREEN
            assert "late" in late[0] and late[1] == RED
            # The bucket open now; the page refreshes itself, so read it at once.
            current = bucket_start(time.time(), width) + width
            open_ = await _cell(page, "Search", current)
            assert "open" in open_[0] and open_[1] == GREY
            await page.locator(
                f'td.cell[data-type="PlaySong"][data-start="{first + width}"]'
            ).click()
            details = await page.locator("#details").text_content() or ""
            assert "late" in details and "closed after" in details
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard-grid.png"), full_page=True)
        finally:
            await browser.close()
    assert (ARTIFACTS / "dashboard-grid.png").stat().st_size > 0

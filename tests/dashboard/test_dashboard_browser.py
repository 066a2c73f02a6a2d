"""The dashboard in real headless Chromium: the grid's colours say closed on time, late, open,
and an audit mismatch (events lost from a closed bucket) is marked on its cell."""

from __future__ import annotations

import asyncio
import time

import pytest

from audit.audit_testing import AUDIT_FAST, audit_bucket, start_auditor
from courier.model import BucketKey, bucket_start
from courier.transport import free_port
from courier_testing import (
    FAST,
    courier_process,
    example_definitions,
    open_pipeline,
    stop_process,
    wait_answering,
)
from dashboard.browser_testing import ARTIFACTS, opened

GREEN, RED, GREY = "rgb(46, 157, 79)", "rgb(214, 69, 69)", "rgb(184, 184, 184)"
MISMATCH_OUTLINE = "rgb(123, 44, 191)"


@pytest.fixture
async def stack(make_settings):
    # PlaySong (normal tier) gets a 0.5 s SLO, so each of its closed buckets is late;
    # Search (low tier) closes well within its SLO; the current bucket is open.
    port = free_port()
    settings = make_settings(
        **FAST,
        audit={**AUDIT_FAST, "slo_normal_close_delay_secs": 0.5},
        dashboard={"port": port, "refresh_secs": 0.5},
    )
    p = await open_pipeline(settings, example_definitions("PlaySong", "Search"))
    await p.start_closer()
    proc = courier_process(settings, "dashboard")
    try:
        await wait_answering(f"http://127.0.0.1:{port}/healthz", proc)
        yield p, f"http://127.0.0.1:{port}/"
    finally:
        stop_process(proc)
        await p.stop()
        await p.transport.close()


#: Class and computed style of a cell in one read. The page re-renders the grid every
#: refresh, so separate reads could straddle two renders and meet a detached element
#: (computed style ""): read all at once, from a connected element, or try again.
_CELL_STYLE = """el => el.isConnected ? [
    el.className,
    getComputedStyle(el).backgroundColor,
    getComputedStyle(el).outlineColor,
    getComputedStyle(el, '::after').content,
] : null"""


async def _cell_style(page, event_type: str, start: int) -> list[str]:
    loc = page.locator(f'td.cell[data-type="{event_type}"][data-start="{start}"]')
    for _ in range(100):
        await loc.wait_for(timeout=10_000)
        got = await loc.evaluate(_CELL_STYLE)
        if got is not None and got[1]:
            return [str(v) for v in got]
        await asyncio.sleep(0.05)
    raise AssertionError(f"cell {event_type} {start} never rendered with a style")


async def _cell(page, event_type: str, start: int) -> tuple[str, str]:
    classes, colour, _, _ = await _cell_style(page, event_type, start)
    return classes, colour


async def test_the_grid_shows_closed_late_and_open_buckets_in_their_colours(stack):
    p, url = stack
    width = p.settings.bucket_width_secs
    first = bucket_start(time.time(), width)
    await p.wait_until(lambda: p.reader.manifest("PlaySong", first + width) is not None, 20)
    await p.wait_until(lambda: p.reader.manifest("Search", first + width) is not None, 20)
    async with opened(url) as page:
        on_time = await _cell(page, "Search", first + width)
        late = await _cell(page, "PlaySong", first + width)
        assert "on_time" in on_time[0] and on_time[1] == GREEN
        assert "late" in late[0] and late[1] == RED
        # The bucket open now; the page refreshes itself, so read it at once.
        current = bucket_start(time.time(), width) + width
        open_ = await _cell(page, "Search", current)
        assert "open" in open_[0] and open_[1] == GREY
        await page.locator(f'td.cell[data-type="PlaySong"][data-start="{first + width}"]').click()
        details = await page.locator("#details").text_content() or ""
        assert "late" in details and "closed after" in details
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard-grid.png"), full_page=True)
    assert (ARTIFACTS / "dashboard-grid.png").stat().st_size > 0


async def test_a_bucket_that_lost_events_after_its_close_is_marked_as_a_mismatch(stack):
    p, url = stack
    ids = [f"m{i}" for i in range(10)]
    seq = await p.publish("Search", [{"query": f"q{i}", "results": i} for i in range(10)], ids)
    start = await p.bucket_of("Search", seq)
    await start_auditor(p)
    p.start_writer()
    await p.wait_until(lambda: p.reader.manifest("Search", start) is not None, 20)
    for _ in range(100):  # the auditor has counted the stream: the bucket reconciles
        b = await audit_bucket(p, "Search", start)
        if b is not None and b.verdict == "ok":
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"the bucket never reconciled: {b}")
    bucket_dir = p.reader.layout.bucket_dir(BucketKey("Search", start))
    for part in bucket_dir.glob("part-*.parquet"):
        part.unlink()  # the loss the auditor must see
    async with opened(url) as page:
        classes, _, outline, mark = await _cell_style(page, "Search", start)
        assert "mismatch" in classes
        assert outline == MISMATCH_OUTLINE
        assert mark == '"!"'
        await page.locator(f'td.cell[data-type="Search"][data-start="{start}"]').click()
        details = await page.locator("#details").text_content() or ""
        assert "lost" in details

"""Headless Chromium for the dashboard's browser tests; a test module importing this is
skipped where Chromium or Playwright is missing (never in CI)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

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

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing in CI: .ci/run must install chromium")
    pytest.skip(
        f"{CHROMIUM} is not installed (apt-get install -y chromium); the browser test needs it",
        allow_module_level=True,
    )

playwright_api = pytest.importorskip("playwright.async_api")


@contextlib.asynccontextmanager
async def opened(url: str | None = None, *, content: str | None = None) -> AsyncIterator[Any]:
    """A page of headless Chromium showing ``url`` (or the HTML ``content``); the browser
    closes afterwards."""
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page()
            if url is not None:
                await page.goto(url)
            if content is not None:
                await page.set_content(content)
            yield page
        finally:
            await browser.close()

"""Shared fixtures: every integration test gets its own nats-server on a free port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from courier.settings import Settings
from courier.transport.server import EmbeddedNats
from courier_testing import FAST, example_definitions, open_pipeline, settings_for


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A real JetStream server (sync_interval: always) with its own store dir."""
    server = EmbeddedNats(tmp_path / "nats", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_settings(tmp_path: Path, nats_server: EmbeddedNats) -> Callable[..., Settings]:
    """Settings pointing at the test's server and data dir; keyword overrides as in load_settings."""

    def _make(**overrides: Any) -> Settings:
        return settings_for(tmp_path / "data", nats_server.url, **overrides)

    return _make


@pytest.fixture
async def pipeline(make_settings: Callable[..., Settings]) -> Any:
    p = await open_pipeline(make_settings(**FAST), example_definitions("PlaySong", "Search"))
    try:
        yield p
    finally:
        await p.stop()
        await p.transport.close()

"""Shared fixtures: every integration test gets its own nats-server on a free port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bench._emulators import FakeGcs, MotoS3

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


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A moto_server process on a free 127.0.0.1 port; each test makes its own bucket."""
    with MotoS3(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    """A fake-gcs-server process on a free 127.0.0.1 port; each test makes its own bucket."""
    with FakeGcs(tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server

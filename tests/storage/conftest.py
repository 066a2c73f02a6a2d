"""Object-store emulators for the storage tests: one real process of each per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bench._emulators import FakeGcs, MotoS3


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

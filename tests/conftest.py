"""Shared fixtures: every integration test gets its own nats-server on a free port.

Also the grouping for parallel runs (``scripts/test`` runs pytest-xdist with
``--dist loadgroup``): see ``pytest_collection_modifyitems``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bench._emulators import FakeGcs, MotoS3

from courier.settings import Settings
from courier.transport.server import EmbeddedNats
from courier_testing import FAST, example_definitions, open_pipeline, settings_for

#: The xdist group of the whole-stack tests (marked ``slow``).
STACKS_GROUP = "stacks"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker (``--dist loadgroup``), group the tests:

    - the whole-stack tests (marked ``slow``) form one group: one worker runs them one
      after another, so two whole stacks (each many processes under load) never share
      the two cores; measured, two at once took longer than one after the other;
    - a test marked ``xdist_group`` keeps its own group (a slow test that is no whole
      stack, such as a single component's bench, runs beside the stacks);
    - every other module is a group of its own, so its tests share its module-scoped
      fixtures in one process.

    The slow tests go first: the stacks are the longest unit of work, and the other
    workers fill in around them (``--no-loadscope-reorder`` keeps this order). Runs
    before xdist's own hook, which turns the groups into node ids.
    """
    if not hasattr(config, "workerinput"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        slow = item.get_closest_marker("slow") is not None
        group = STACKS_GROUP if slow else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


#: Why the tests of this worker must not run (see ``pytest_collection_finish``).
_UNGROUPED = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Fail every test when ``--dist loadgroup`` ignored the groups (pytest-xdist 3.8 with
    pytest 9.2 drops them silently: pytest-xdist issue 1386), rather than run two whole
    stacks at once."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in session.items if "@" not in item.nodeid.rpartition("]")[2]]
    if lost:
        session.config.stash[_UNGROUPED] = (
            f"--dist loadgroup did not group {len(lost)} tests (e.g. {lost[0]}): this "
            "pytest-xdist does not group tests on this pytest; see the pin in pyproject.toml"
        )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _UNGROUPED in item.config.stash:
        pytest.fail(item.config.stash[_UNGROUPED], pytrace=False)


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

"""Shared fixtures: every integration test gets its own nats-server on a free port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from courier.settings import Settings, load_settings
from courier.transport.server import EmbeddedNats


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
        base: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "nats_url": nats_server.url,
            "bucket_width_secs": 2,
            "max_clock_skew_secs": 0.5,
        }
        base.update(overrides)
        return load_settings(**base)

    return _make


# -- pipeline helpers -----------------------------------------------------------------

import asyncio  # noqa: E402
import datetime as dt  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import msgspec  # noqa: E402

from courier.closer import Catalog, Closer  # noqa: E402
from courier.schema import CompiledType, Registry, TypeDefinition, load_definitions  # noqa: E402
from courier.storage import BucketReader  # noqa: E402
from courier.transport import (  # noqa: E402
    CATALOG_KV,
    SCHEMAS_KV,
    Transport,
    provision_base,
    provision_type,
)
from courier.writer import Writer  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "courier" / "examples" / "schemas"


def example_definitions(*names: str) -> list[TypeDefinition]:
    defs = load_definitions(EXAMPLES)
    return [d for d in defs if not names or d.name in names]


@dataclass
class Pipeline:
    """A provisioned Courier on a real nats-server, with in-process writer/closer on demand."""

    settings: Settings
    transport: Transport
    registry: Registry
    compiled: dict[str, CompiledType]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    _msg: int = 0

    @property
    def reader(self) -> BucketReader:
        return BucketReader(self.settings.data_dir, self.settings.bucket_width_secs)

    async def publish(self, event_type: str, payloads: list[dict[str, Any]], ids: list[str]) -> int:
        """Publish one message holding these events, as the gateway would; returns its seq."""
        ct = self.compiled[event_type]
        dec = msgspec.json.Decoder(ct.event_struct)
        events = [
            dec.decode(msgspec.json.encode({"type": event_type, "id": i, "data": p}))
            for i, p in zip(ids, payloads, strict=True)
        ]
        body = ct.encode_stored(events, ids, None, dt.datetime.now(dt.UTC))
        self._msg += 1
        res = await self.transport.publish_events(
            event_type,
            body,
            msg_id=f"test-{self._msg}-{time.time_ns()}",
            headers={"Courier-Schema-Version": str(ct.version)},
            timeout_secs=5,
        )
        return res.seq

    def start_writer(self) -> Writer:
        w = Writer(self.settings, self.transport, self.registry)
        self.tasks.append(asyncio.create_task(w.run(self.stop_event)))
        return w

    async def start_closer(self, closer_id: str = "test-closer") -> Closer:
        catalog = Catalog(await self.transport.key_value(CATALOG_KV), closer_id, 30.0)
        c = Closer(self.settings, self.transport, self.registry, catalog)
        self.tasks.append(asyncio.create_task(c.run(self.stop_event)))
        return c

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        self.stop_event = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], timeout_secs: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_secs
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.1)


async def open_pipeline(settings: Settings, definitions: list[TypeDefinition]) -> Pipeline:
    transport = await Transport.connect(settings.resolved_nats_url)
    await provision_base(transport, settings)
    registry = Registry(await transport.key_value(SCHEMAS_KV))
    await registry.apply(definitions)
    compiled = await registry.compiled()
    for name in compiled:
        await provision_type(transport, settings, name)
    return Pipeline(settings, transport, registry, compiled)


FAST = {
    "writer": {"flush_interval_secs": 0.3, "fetch_wait_secs": 0.2},
    "closer": {"default_grace_secs": 1, "poll_interval_secs": 0.2},
}


@pytest.fixture
async def pipeline(make_settings: Callable[..., Settings]) -> Any:
    p = await open_pipeline(make_settings(**FAST), example_definitions("PlaySong", "Search"))
    try:
        yield p
    finally:
        await p.stop()
        await p.transport.close()


def courier_process(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run ``courier ARGS`` as a child process against the test's NATS and data dir."""
    full_env = dict(os.environ)
    full_env.update(
        {
            "COURIER_NATS_URL": settings.resolved_nats_url,
            "COURIER_DATA_DIR": str(settings.data_dir),
            "COURIER_BUCKET_WIDTH_SECS": str(settings.bucket_width_secs),
            "COURIER_MAX_CLOCK_SKEW_SECS": str(settings.max_clock_skew_secs),
            "COURIER_WRITER__FLUSH_INTERVAL_SECS": str(settings.writer.flush_interval_secs),
            "COURIER_WRITER__FETCH_WAIT_SECS": str(settings.writer.fetch_wait_secs),
            "COURIER_CLOSER__DEFAULT_GRACE_SECS": str(settings.closer.default_grace_secs),
            "COURIER_CLOSER__POLL_INTERVAL_SECS": str(settings.closer.poll_interval_secs),
        }
    )
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "courier.cli.main", *args], env=full_env, stdin=subprocess.DEVNULL
    )


def stop_process(proc: subprocess.Popen[bytes], timeout_secs: float = 15.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_secs)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)

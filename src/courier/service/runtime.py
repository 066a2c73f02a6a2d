"""Running one service process: event loop, signals, connection and registry set-up."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from courier.errors import CourierError
from courier.schema import Registry
from courier.service.telemetry import metrics_endpoint
from courier.settings import Settings
from courier.transport import CATALOG_KV, SCHEMAS_KV, Transport
from courier.transport.client import NatsKeyValue

log = logging.getLogger("courier.service.runtime")


def configure_logging(level: str) -> None:
    """Process-wide logging for services and the CLI (never called by library code)."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    # Per-request lines of HTTP clients are noise at INFO (and could leak URLs).
    logging.getLogger("httpx").setLevel(logging.WARNING)


#: Tracked allocations (net) between two young-generation collections of a serving process.
GC_YOUNG_THRESHOLD = 20_000


def settle_gc() -> None:
    """Tune the cyclic garbage collector for a long-running, allocation-heavy service.

    Call once, after the imports and the app (or component) are built: what exists
    then (modules, schemas, settings, metrics) is frozen out of every later
    collection, and the young generation is collected every 20,000 net tracked
    allocations instead of 700. Reference counting still frees everything at once;
    only cycles wait a little longer. Under load the gateway spent 10-13 % of its CPU
    in the collector (``perf``: each 100-1,000-event request allocates a list per
    event, so a young collection ran every request or two and promoted live requests
    into costly full collections); after this it does not show in the profile. The
    gateway and ``courier writer|closer|auditor`` call it (README "Performance").
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` on uvloop (when available) until SIGINT/SIGTERM sets ``stop``."""

    async def _wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop

        uvloop.run(_wrapper())
    except ImportError:
        asyncio.run(_wrapper())


@dataclass
class Connected:
    transport: Transport
    registry: Registry
    schemas_kv: NatsKeyValue


async def connect_service(settings: Settings, name: str, *, wait_secs: float = 60.0) -> Connected:
    """Connect to NATS and open the registry, waiting for both to exist (services may start first)."""
    transport = await Transport.connect(
        settings.resolved_nats_url,
        name=name,
        connect_timeout_secs=settings.nats.connect_timeout_secs,
        request_timeout_secs=settings.nats.request_timeout_secs,
        wait_for_server_secs=wait_secs,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_secs
    while True:
        try:
            kv = await transport.key_value(SCHEMAS_KV)
            await transport.key_value(CATALOG_KV)
            return Connected(transport, Registry(kv), kv)
        except CourierError as exc:
            if loop.time() >= deadline:
                await transport.close()
                raise
            log.warning("%s; waiting for provisioning", exc)
            await asyncio.sleep(1.0)


class Component(Protocol):
    """A long-running service part: its metrics and a ``run`` until ``stop``."""

    @property
    def metrics(self) -> Any: ...

    async def run(self, stop: asyncio.Event) -> None: ...


def run_component(
    settings: Settings,
    name: str,
    build: Callable[[Connected], Awaitable[Component]],
    *,
    metrics_port: int,
) -> None:
    """The main of ``courier writer|closer|auditor``: connect, build, serve metrics, run.

    Runs until SIGINT/SIGTERM, then lets the component drain and closes the connection.
    """

    async def main(stop: asyncio.Event) -> None:
        conn = await connect_service(settings, f"courier-{name}")
        try:
            component = await build(conn)
            settle_gc()
            with metrics_endpoint(
                component.metrics.registry,
                host=settings.metrics_host,
                port=metrics_port,
                service=name,
            ):
                await component.run(stop)
        finally:
            await conn.transport.close()

    run(main)

"""``courier writer`` / ``courier closer`` / ``courier nats`` process mains."""

from __future__ import annotations

import logging
import signal
import time

from courier.closer import Catalog, Closer, default_closer_id
from courier.service.runtime import Connected, run_component
from courier.settings import Settings
from courier.transport import CATALOG_KV
from courier.transport.server import describe_store, embedded_nats
from courier.writer import Writer

log = logging.getLogger("courier.cli")


def run_writer(settings: Settings) -> None:
    async def build(conn: Connected) -> Writer:
        return Writer(settings, conn.transport, conn.registry)

    run_component(settings, "writer", build, metrics_port=settings.writer.metrics_port)


def run_closer(settings: Settings) -> None:
    async def build(conn: Connected) -> Closer:
        catalog = Catalog(
            await conn.transport.key_value(CATALOG_KV),
            settings.closer.closer_id or default_closer_id(),
            settings.closer.claim_lease_secs,
        )
        return Closer(settings, conn.transport, conn.registry, catalog)

    run_component(settings, "closer", build, metrics_port=settings.closer.metrics_port)


def run_nats(settings: Settings) -> None:
    server = embedded_nats(settings)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    server.start()
    assert server.store_limit_bytes is not None
    store = describe_store(
        server.store_limit_bytes,
        explicit=settings.nats.store_max_bytes is not None,
        stream_max_bytes=settings.nats.stream_max_bytes,
    )
    print(f"nats-server running at {server.url} (store {settings.nats_store_dir}); Ctrl-C stops it")
    print(f"NATS store: {store}")
    if server.leaf is not None and (leaf := server.leaf.describe()):
        print(f"Several DCs: {leaf}")
    try:
        while not stopping and server.process and server.process.poll() is None:
            time.sleep(0.2)
    finally:
        server.stop()

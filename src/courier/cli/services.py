"""``courier writer`` / ``courier closer`` / ``courier nats`` process mains."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from courier.closer import Catalog, Closer, default_closer_id
from courier.runtime import connect_service, run
from courier.settings import Settings
from courier.telemetry import metrics_endpoint
from courier.transport import CATALOG_KV, EmbeddedNats
from courier.writer import Writer

log = logging.getLogger("courier.cli")


def run_writer(settings: Settings) -> None:
    async def main(stop: asyncio.Event) -> None:
        conn = await connect_service(settings, "courier-writer")
        writer = Writer(settings, conn.transport, conn.registry)
        try:
            with metrics_endpoint(
                writer.metrics.registry,
                host=settings.metrics_host,
                port=settings.writer.metrics_port,
                service="writer",
            ):
                await writer.run(stop)
        finally:
            await conn.transport.close()

    run(main)


def run_closer(settings: Settings) -> None:
    async def main(stop: asyncio.Event) -> None:
        conn = await connect_service(settings, "courier-closer")
        try:
            catalog = Catalog(
                await conn.transport.key_value(CATALOG_KV),
                settings.closer.closer_id or default_closer_id(),
                settings.closer.claim_lease_secs,
            )
            closer = Closer(settings, conn.transport, conn.registry, catalog)
            with metrics_endpoint(
                closer.metrics.registry,
                host=settings.metrics_host,
                port=settings.closer.metrics_port,
                service="closer",
            ):
                await closer.run(stop)
        finally:
            await conn.transport.close()

    run(main)


def run_nats(settings: Settings) -> None:
    server = EmbeddedNats(
        settings.nats_store_dir,
        host=settings.nats.host,
        port=settings.nats.port,
        max_payload_bytes=settings.nats.max_payload_bytes,
    )
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    server.start()
    print(f"nats-server running at {server.url} (store {settings.nats_store_dir}); Ctrl-C stops it")
    try:
        while not stopping and server.process and server.process.poll() is None:
            time.sleep(0.2)
    finally:
        server.stop()

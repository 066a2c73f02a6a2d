"""The gateway's lifespan: connect, build the service, run its background tasks, shut down.

At start: connect to NATS (unless the app was given a sink and a registry),
load the registry, start the registry refresher and the audit counter's
flusher, then serve. At stop: stop refreshing, drain the service (every
publish in flight is answered), flush the audit counts one last time, close
the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from starlette.applications import Starlette

from courier.audit.gateway import GatewayTally
from courier.audit.store import AuditStore
from courier.errors import CourierError, TransportError
from courier.gateway.admin import Provision
from courier.gateway.publisher import EventSink, NatsSink
from courier.gateway.routes import GatewayRoutes
from courier.gateway.service import EventService
from courier.gateway.storeguard import StoreGuard
from courier.model import INVALID_TYPE
from courier.repair import NatsRepairTarget, RepairTarget
from courier.schema import Registry
from courier.settings import Settings
from courier.transport.client import Transport
from courier.transport.names import AUDIT_KV, SCHEMAS_KV
from courier.transport.provision import provision_type
from courier.transport.tasks import cancel_and_wait

log = logging.getLogger("courier.gateway")

#: How long a starting gateway waits for NATS before giving up.
WAIT_FOR_NATS_SECS = 30.0


def gateway_lifespan(
    gw: GatewayRoutes,
    *,
    sink: EventSink | None,
    registry: Registry | None,
    repairs: RepairTarget | None,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The lifespan of an app serving ``gw``'s routes (see :func:`courier.gateway.create_app`)."""
    settings = gw.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        transport: Transport | None = None
        if sink is None or registry is None:
            transport = await Transport.connect(
                settings.resolved_nats_url,
                name="courier-gateway",
                connect_timeout_secs=settings.nats.connect_timeout_secs,
                request_timeout_secs=settings.nats.request_timeout_secs,
                wait_for_server_secs=WAIT_FOR_NATS_SECS,
            )
        try:
            async with _serving(gw, transport, sink, registry, repairs):
                yield
        finally:
            if transport is not None:
                await transport.close()

    return lifespan


@contextlib.asynccontextmanager
async def _serving(
    gw: GatewayRoutes,
    transport: Transport | None,
    sink: EventSink | None,
    registry: Registry | None,
    repairs: RepairTarget | None,
) -> AsyncIterator[None]:
    settings = gw.settings
    guard = StoreGuard.from_settings(settings, transport) if transport else None
    if sink is None:
        assert transport is not None
        sink = NatsSink(
            transport,
            settings.gateway.publish_timeout_secs,
            on_stored=guard.note_stored if guard else None,
        )
    if registry is None:
        assert transport is not None
        registry = Registry(await transport.key_value(SCHEMAS_KV))
    if transport is not None:
        gw.provision = _provisioner(settings, transport)
        gw.repairs.target = NatsRepairTarget(transport, settings)
    if repairs is not None:
        gw.repairs.target = repairs
    gw.repairs.registry = registry
    tally, store = await _audit_tally(settings, transport)
    service = EventService(settings, sink, registry, gw.metrics, tally=tally, store=guard)
    try:
        await service.refresh()
    except CourierError as exc:
        log.warning("schema registry not loaded at start (%s); retrying", exc)
    gw.service = service
    gw.repairs.service = service
    refresher = asyncio.create_task(
        _refresh_forever(service, settings.gateway.registry_refresh_secs)
    )
    if guard is not None:
        await guard.refresh()
    guarding = (
        asyncio.create_task(guard.run(settings.gateway.store_check_interval_secs))
        if guard is not None
        else None
    )
    stop_flushing = asyncio.Event()
    flusher = (
        asyncio.create_task(
            tally.run(
                store,
                interval_secs=settings.audit.gateway_flush_interval_secs,
                retention_secs=settings.audit.retention_secs,
                stop=stop_flushing,
                connected=lambda: service.sink.is_connected,
            )
        )
        if tally is not None and store is not None
        else None
    )
    lag_probe = asyncio.create_task(gw.metrics.watch_loop_lag())
    log.info("gateway started on %s:%s", settings.gateway.host, settings.gateway.port)
    _warn_if_open(settings)
    try:
        yield
    finally:
        await cancel_and_wait(t for t in (refresher, guarding, lag_probe) if t is not None)
        await service.close()
        if flusher is not None:
            stop_flushing.set()  # one last flush of the audit counts
            await flusher
        gw.service = None
        gw.repairs.target = gw.repairs.registry = gw.repairs.service = None
        log.info("gateway stopped")


async def _refresh_forever(service: EventService, interval_secs: float) -> None:
    """Re-read the registry every ``interval_secs``; log failures once per outage."""
    failing = False
    while True:
        await asyncio.sleep(interval_secs)
        try:
            await service.refresh()
        except CourierError as exc:
            if not failing:
                log.warning("cannot refresh the schema registry (%s); keeping the last one", exc)
            failing = True
            continue
        if failing:
            log.info("schema registry readable again")
        failing = False


async def _audit_tally(
    settings: Settings, transport: Transport | None
) -> tuple[GatewayTally | None, AuditStore | None]:
    """The audit counter of this gateway, when it talks to NATS and the audit KV exists."""
    if transport is None:
        return None, None
    try:
        kv = await transport.key_value(AUDIT_KV)
    except TransportError as exc:
        log.warning("not counting for the audit: %s (run `courier provision`)", exc)
        return None, None
    return GatewayTally(settings.bucket_width_secs), AuditStore(kv)


def _provisioner(settings: Settings, transport: Transport) -> Provision:
    async def provision(event_type: str) -> None:
        for name in (INVALID_TYPE, event_type):
            await provision_type(transport, settings, name)

    return provision


def _warn_if_open(settings: Settings) -> None:
    """Say once, at start, that anyone who reaches the gateway may use it."""
    if settings.auth.enabled:
        return
    log.warning(
        "auth is off: no API keys are configured, so anyone who can reach %s:%s may send "
        "events and change schemas; configure [auth] keys (courier keys new) before "
        "binding to anything but 127.0.0.1",
        settings.gateway.host,
        settings.gateway.port,
    )

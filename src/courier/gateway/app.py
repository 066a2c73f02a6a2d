"""The gateway's ASGI app (Starlette): routes, lifespan and the uvicorn runner."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from courier.audit.gateway import GatewayTally
from courier.audit.store import AuditStore
from courier.errors import CourierError, RequestError, SchemaError, TransportError
from courier.gateway.body import body_format, content_encoding, read_body
from courier.gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from courier.gateway.metrics import GatewayMetrics
from courier.gateway.openapi import openapi_document
from courier.gateway.publisher import EventSink, NatsSink
from courier.gateway.service import EventService
from courier.schema import Registry, record_to_json
from courier.settings import Settings
from courier.transport.client import Transport
from courier.transport.names import AUDIT_KV, SCHEMAS_KV

log = logging.getLogger("courier.gateway")

#: How long a starting gateway waits for NATS before giving up.
WAIT_FOR_NATS_SECS = 30.0
_encode = msgspec.json.Encoder().encode


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(doc), status, headers=headers, media_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": message}, status, headers)


class _Gateway:
    """What the routes need; filled by the lifespan (None until started)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.service: EventService | None = None
        self.openapi = _encode(openapi_document(settings.gateway))

    def unavailable(self, what: str) -> Response:
        retry = str(self.settings.gateway.retry_after_secs)
        return _error(
            503,
            f"{what}; nothing was accepted: retry the whole batch after {retry}s "
            "(the events' ids make the retry safe)",
            {"Retry-After": retry},
        )

    # -- routes -----------------------------------------------------------------

    async def post_events(self, request: Request) -> Response:
        started = time.perf_counter()
        received_at = dt.datetime.now(dt.UTC)
        response = await self._post_events(request, received_at)
        self.metrics.request(response.status_code, time.perf_counter() - started)
        return response

    async def _post_events(self, request: Request, received_at: dt.datetime) -> Response:
        limits = self.settings.gateway
        try:
            fmt = body_format(request.headers.get("content-type"))
            encoding = content_encoding(request.headers.get("content-encoding"))
            if self.service is None:
                return self.unavailable("the gateway is starting")
            self.service.check_available()
            body = await read_body(
                request.stream(),
                content_length=request.headers.get("content-length"),
                encoding=encoding,
                max_body_bytes=limits.max_body_bytes,
            )
            result = await self.service.ingest(body, fmt, received_at)
        except RequestError as exc:
            return _error(exc.status, str(exc))
        except TransportError as exc:
            return self.unavailable(f"events could not be stored: {exc}")
        rejected = [
            {"index": r.index, "id": r.id, "error": r.error}
            if r.id is not None
            else {"index": r.index, "error": r.error}
            for r in result.rejections
        ]
        return _json({"accepted": result.accepted, "rejected": rejected})

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(self, request: Request) -> Response:
        service = self.service
        if service is None:
            return _error(503, "not ready: the gateway is starting")
        if not service.sink.is_connected:
            return _error(503, "not ready: not connected to the transport")
        if not service.registry_loaded:
            return _error(503, "not ready: the schema registry has not been loaded yet")
        return PlainTextResponse("ready\n")

    async def metrics_route(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    async def openapi_route(self, request: Request) -> Response:
        return Response(self.openapi, media_type="application/json")

    async def list_schemas(self, request: Request) -> Response:
        if self.service is None:
            return self.unavailable("the gateway is starting")
        try:
            records = await self.service.registry.list()
        except (TransportError, SchemaError) as exc:
            return self.unavailable(f"the schema registry cannot be read: {exc}")
        return _json([record_to_json(r) for r in records])

    async def get_schema(self, request: Request) -> Response:
        name = request.path_params["type"]
        if self.service is None:
            return self.unavailable("the gateway is starting")
        try:
            record = await self.service.registry.get(name)
        except (TransportError, SchemaError) as exc:
            return self.unavailable(f"the schema registry cannot be read: {exc}")
        if record is None:
            return _error(404, f"event type {name!r} is not registered; see GET /v1/schemas")
        return _json(record_to_json(record))


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


def create_app(
    settings: Settings,
    *,
    sink: EventSink | None = None,
    registry: Registry | None = None,
) -> Starlette:
    """The gateway app. Without ``sink`` and ``registry`` its lifespan connects to NATS."""
    gw = _Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        transport: Transport | None = None
        the_sink, the_registry = sink, registry
        if the_sink is None or the_registry is None:
            transport = await Transport.connect(
                settings.resolved_nats_url,
                name="courier-gateway",
                connect_timeout_secs=settings.nats.connect_timeout_secs,
                request_timeout_secs=settings.nats.request_timeout_secs,
                wait_for_server_secs=WAIT_FOR_NATS_SECS,
            )
        try:
            if the_sink is None:
                assert transport is not None
                the_sink = NatsSink(transport, settings.gateway.publish_timeout_secs)
            if the_registry is None:
                assert transport is not None
                the_registry = Registry(await transport.key_value(SCHEMAS_KV))
            tally, store = await _audit_tally(settings, transport)
            service = EventService(settings, the_sink, the_registry, gw.metrics, tally=tally)
            try:
                await service.refresh()
            except CourierError as exc:
                log.warning("schema registry not loaded at start (%s); retrying", exc)
            gw.service = service
            refresher = asyncio.create_task(
                _refresh_forever(service, settings.gateway.registry_refresh_secs)
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
            log.info("gateway started on %s:%s", settings.gateway.host, settings.gateway.port)
            try:
                yield
            finally:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
                await service.close()
                if flusher is not None:
                    stop_flushing.set()  # one last flush of the audit counts
                    await flusher
                gw.service = None
                log.info("gateway stopped")
        finally:
            if transport is not None:
                await transport.close()

    routes = [
        Route("/v1/events", gw.post_events, methods=["POST"]),
        Route("/v1/schemas", gw.list_schemas, methods=["GET"]),
        Route("/v1/schemas/{type}", gw.get_schema, methods=["GET"]),
        Route("/healthz", gw.healthz, methods=["GET"]),
        Route("/readyz", gw.readyz, methods=["GET"]),
        Route("/metrics", gw.metrics_route, methods=["GET"]),
        Route("/openapi.json", gw.openapi_route, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gw
    return app


def serve(settings: Settings) -> None:
    """Run the gateway with uvicorn until interrupted (``courier gateway``)."""
    import uvicorn

    if settings.gateway.workers > 1:
        log.warning(
            "gateway.workers=%d is not supported by this runner; starting one process "
            "(run several gateways behind a load balancer instead)",
            settings.gateway.workers,
        )
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    uvicorn.run(
        create_app(settings),
        host=settings.gateway.host,
        port=settings.gateway.port,
        loop=loop,
        access_log=False,
        log_config=None,
        lifespan="on",
        server_header=False,
    )

"""The gateway's ASGI app (Starlette): routes, lifespan and the uvicorn runner."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from courier.audit.gateway import GatewayTally
from courier.audit.store import AuditStore
from courier.auth import KeyRing, Principal
from courier.errors import (
    CourierError,
    ForbiddenError,
    PortInUseError,
    RequestError,
    SchemaError,
    TransportError,
)
from courier.gateway.admin import Provision, apply_schema
from courier.gateway.body import body_format, content_encoding, read_body
from courier.gateway.ingest import DecodedBatch
from courier.gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from courier.gateway.metrics import GatewayMetrics, share_across_workers
from courier.gateway.openapi import openapi_document
from courier.gateway.publisher import EventSink, NatsSink
from courier.gateway.ratelimit import RateLimiter
from courier.gateway.repair import RepairRoutes
from courier.gateway.responses import (
    RETRY_BATCH,
    RETRY_READ,
    RETRY_SCHEMA_PUT,
    encode_json,
    error_response,
    json_response,
    read_admin_body,
    refused,
    unavailable,
)
from courier.gateway.segment import SegmentRoutes
from courier.gateway.service import EventService
from courier.gateway.storeguard import StoreGuard
from courier.model import INVALID_TYPE
from courier.repair import NatsRepairTarget, RepairTarget
from courier.schema import Registry, record_to_json
from courier.settings import Settings
from courier.transport.client import Transport
from courier.transport.names import AUDIT_KV, SCHEMAS_KV
from courier.transport.provision import provision_type

log = logging.getLogger("courier.gateway")

#: How long a starting gateway waits for NATS before giving up.
WAIT_FOR_NATS_SECS = 30.0
_json = json_response
_error = error_response
_refused = refused


async def _no_provisioning(event_type: str) -> None:
    """Without a transport (tests over MemorySink) there are no streams to provision."""


class _Gateway:
    """What the routes need; filled by the lifespan (None until started)."""

    def __init__(self, settings: Settings, metrics_dir: Path | None) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics(metrics_dir)
        self.service: EventService | None = None
        self.openapi = encode_json(
            openapi_document(settings.gateway, auth_required=settings.auth.enabled)
        )
        self.keyring = KeyRing(settings.auth)
        self.repairs = RepairRoutes(settings, self.keyring)
        self.limiter = RateLimiter()
        self.provision: Provision = _no_provisioning

    def unavailable(self, what: str, then: str = RETRY_BATCH) -> Response:
        return unavailable(self.settings.gateway, what, then)

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
            principal = self.keyring.identify(request.headers)  # 401 before anything else
            fmt = body_format(request.headers.get("content-type"))
            encoding = content_encoding(request.headers.get("content-encoding"))
            if self.service is None:
                return self.unavailable("the gateway is starting")
            self.service.check_available()
            self.limiter.check(principal)  # an empty bucket costs no body read
            body = await read_body(
                request.stream(),
                content_length=request.headers.get("content-length"),
                encoding=encoding,
                max_body_bytes=limits.max_body_bytes,
                timeout_secs=limits.body_read_timeout_secs,
            )
            result = await self.service.ingest(
                body, fmt, received_at, admit=lambda batch: self._admit(principal, batch)
            )
        except RequestError as exc:
            return _refused(exc)
        except ClientDisconnect:
            return _error(400, "the client disconnected before sending the whole body")
        except TransportError as exc:
            return self.unavailable(f"events could not be stored: {exc}")
        rejected = [
            {"index": r.index, "id": r.id, "error": r.error}
            if r.id is not None
            else {"index": r.index, "error": r.error}
            for r in result.rejections
        ]
        return _json({"accepted": result.accepted, "rejected": rejected})

    def _admit(self, principal: Principal, batch: DecodedBatch) -> None:
        """Refuse a whole batch holding a type the key may not send (403), or over its rate."""
        if principal.types is not None:
            sent = [*batch.valid, *(r.event_type for r in batch.rejections if r.event_type)]
            forbidden = principal.forbidden_types(sent)
            if forbidden:
                names = ", ".join(repr(t[:64]) for t in forbidden[:10])
                raise ForbiddenError(
                    f"API key {principal.name!r} may not send event type(s) {names}; "
                    "nothing was accepted"
                )
        self.limiter.charge(principal, batch.accepted + len(batch.rejections))

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
        try:
            self.keyring.identify(request.headers)
        except RequestError as exc:
            return _refused(exc)
        if self.service is None:
            return self.unavailable("the gateway is starting", RETRY_READ)
        try:
            records = await self.service.registry.list()
        except (TransportError, SchemaError) as exc:
            return self.unavailable(f"the schema registry cannot be read: {exc}", RETRY_READ)
        return _json([record_to_json(r) for r in records])

    async def get_schema(self, request: Request) -> Response:
        name = request.path_params["type"]
        try:
            self.keyring.identify(request.headers)
        except RequestError as exc:
            return _refused(exc)
        if self.service is None:
            return self.unavailable("the gateway is starting", RETRY_READ)
        try:
            record = await self.service.registry.get(name)
        except (TransportError, SchemaError) as exc:
            return self.unavailable(f"the schema registry cannot be read: {exc}", RETRY_READ)
        if record is None:
            return _error(404, f"event type {name!r} is not registered; see GET /v1/schemas")
        return _json(record_to_json(record))

    async def put_schema(self, request: Request) -> Response:
        """Register a type or a new schema version (admin key; see gateway/admin.py)."""
        name = request.path_params["type"]
        try:
            self.keyring.require_admin(request.headers)
            if self.service is None:
                return self.unavailable("the gateway is starting", RETRY_SCHEMA_PUT)
            body = await read_admin_body(request, self.settings.gateway)
            result = await apply_schema(self.service.registry, name, body, self.provision)
            await self.service.refresh()
        except RequestError as exc:
            return _refused(exc)
        except ClientDisconnect:
            return _error(400, "the client disconnected before sending the whole body")
        except TransportError as exc:
            return self.unavailable(f"PUT of {name!r} did not complete: {exc}", RETRY_SCHEMA_PUT)
        return _json({"name": result.name, "action": result.action, "version": result.version})


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


def create_app(
    settings: Settings,
    *,
    sink: EventSink | None = None,
    registry: Registry | None = None,
    metrics_dir: Path | None = None,
    repairs: RepairTarget | None = None,
) -> Starlette:
    """The gateway app. Without ``sink`` and ``registry`` its lifespan connects to NATS;
    ``metrics_dir`` when pre-forked workers share metrics (see gateway/metrics.py).

    ``repairs`` is what the repair routes act on (tests: MemoryRepairTarget); by
    default the NATS transport, and without one those routes answer 503.
    """
    gw = _Gateway(settings, metrics_dir)

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
            guard = StoreGuard.from_settings(settings, transport) if transport else None
            if the_sink is None:
                assert transport is not None
                the_sink = NatsSink(
                    transport,
                    settings.gateway.publish_timeout_secs,
                    on_stored=guard.note_stored if guard else None,
                )
            if the_registry is None:
                assert transport is not None
                the_registry = Registry(await transport.key_value(SCHEMAS_KV))
            if transport is not None:
                gw.provision = _provisioner(settings, transport)
                gw.repairs.target = NatsRepairTarget(transport, settings)
            if repairs is not None:
                gw.repairs.target = repairs
            gw.repairs.registry = the_registry
            tally, store = await _audit_tally(settings, transport)
            service = EventService(
                settings, the_sink, the_registry, gw.metrics, tally=tally, store=guard
            )
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
            log.info("gateway started on %s:%s", settings.gateway.host, settings.gateway.port)
            _warn_if_open(settings)
            try:
                yield
            finally:
                for task in (refresher, guarding):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                await service.close()
                if flusher is not None:
                    stop_flushing.set()  # one last flush of the audit counts
                    await flusher
                gw.service = None
                gw.repairs.target = gw.repairs.registry = gw.repairs.service = None
                log.info("gateway stopped")
        finally:
            if transport is not None:
                await transport.close()

    routes = [
        Route("/v1/events", gw.post_events, methods=["POST"]),
        Route("/v1/schemas", gw.list_schemas, methods=["GET"]),
        Route("/v1/schemas/{type}", gw.get_schema, methods=["GET"]),
        Route("/v1/schemas/{type}", gw.put_schema, methods=["PUT"]),
        *gw.repairs.routes(),
        *SegmentRoutes(gw).routes(),
        Route("/healthz", gw.healthz, methods=["GET"]),
        Route("/readyz", gw.readyz, methods=["GET"]),
        Route("/metrics", gw.metrics_route, methods=["GET"]),
        Route("/openapi.json", gw.openapi_route, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gw
    return app


def uvicorn_config(settings: Settings, app: Starlette) -> Any:
    """The uvicorn Config the gateway runs with: host, head and idle timeouts, no access log."""
    import uvicorn

    from courier.gateway.http import head_deadline_protocol

    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    return uvicorn.Config(
        app,
        host=settings.gateway.host,
        port=settings.gateway.port,
        loop=loop,
        # Access logs would carry URLs and client addresses per request; never keys
        # or payloads, but per-request lines are not what Courier logs (STYLE 8).
        access_log=False,
        log_config=None,
        lifespan="on",
        server_header=False,
        timeout_keep_alive=max(1, round(settings.gateway.idle_timeout_secs)),
        http=head_deadline_protocol(settings.gateway.head_read_timeout_secs),
    )


def serve(settings: Settings) -> None:
    """Run the gateway until SIGINT/SIGTERM (``courier gateway``).

    With ``gateway.workers`` > 1 the process binds the port once and forks that
    many workers that accept on the shared socket (pre-fork): validation and
    encoding are CPU-bound Python, so one process saturates one core. Each worker
    has its own NATS connection and group commit. If a worker dies, the others
    are stopped and the process exits non-zero so its supervisor restarts it whole.
    The workers share their metrics through a temporary directory, so a scrape of
    ``/metrics`` reports all of them, whichever worker answers it.
    """
    sock = _listen(settings)
    workers = max(1, settings.gateway.workers)
    if workers == 1:
        _run_worker(settings, sock, None)
        return
    with tempfile.TemporaryDirectory(prefix="courier-gateway-metrics-") as metrics_dir:
        share_across_workers(Path(metrics_dir))
        code = _fork_workers(settings, sock, workers, Path(metrics_dir))
    sys.exit(code)


def _fork_workers(settings: Settings, sock: socket.socket, workers: int, metrics: Path) -> int:
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                _run_worker(settings, sock, metrics)
            except SystemExit as exc:
                code = int(exc.code or 0)
            except BaseException:
                log.exception("gateway worker failed")
                code = 1
            os._exit(code)
        children.append(pid)
    sock.close()
    log.info(
        "gateway listening on %s:%d with %d workers",
        settings.gateway.host,
        settings.gateway.port,
        workers,
    )
    return _wait_workers(children)


def _listen(settings: Settings) -> socket.socket:
    host, port = settings.gateway.host, settings.gateway.port
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUseError(
            f"the gateway cannot listen on {host}:{port}: {exc.strerror}; stop the other "
            "process or choose another port (--port / COURIER_GATEWAY__PORT)"
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _run_worker(settings: Settings, sock: socket.socket, metrics_dir: Path | None) -> None:
    import uvicorn

    app = create_app(settings, metrics_dir=metrics_dir)
    server = uvicorn.Server(uvicorn_config(settings, app))
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)  # what uvicorn.run does: a failed start is not a clean exit


def _wait_workers(children: list[int]) -> int:
    """Forward SIGINT/SIGTERM to the workers; stop all when one exits; return an exit code."""
    alive = set(children)

    def _forward(signum: int, _frame: object) -> None:
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGINT, _forward)
    signal.signal(signal.SIGTERM, _forward)
    code = 0
    stopping = False
    while alive:
        pid, status = os.wait()
        alive.discard(pid)
        worker_code = os.waitstatus_to_exitcode(status)
        if worker_code != 0 and not stopping:
            log.error("gateway worker %d exited with %d; stopping the others", pid, worker_code)
            code = 1
        if not stopping:
            stopping = True
            _forward(signal.SIGTERM, None)
    return code

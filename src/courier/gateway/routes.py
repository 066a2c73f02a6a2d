"""The gateway's HTTP routes: events, schemas, health, metrics, OpenAPI (and the repair routes).

:class:`GatewayRoutes` holds what the handlers need; the lifespan
(:mod:`courier.gateway.lifespan`) fills in the service once it is connected.
Every handler that needs a key and the service goes through :meth:`GatewayRoutes._answer`,
which turns refusals and transport failures into their HTTP answers in one place.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from courier.errors import ForbiddenError, RequestError, SchemaError, TransportError
from courier.gateway.admin import Provision, apply_schema
from courier.gateway.body import body_format, content_encoding, read_body
from courier.gateway.ingest import DecodedBatch
from courier.gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from courier.gateway.metrics import GatewayMetrics
from courier.gateway.openapi import openapi_document
from courier.gateway.ratelimit import RateLimiter
from courier.gateway.repair import RepairRoutes
from courier.gateway.responses import (
    RETRY_BATCH,
    RETRY_READ,
    RETRY_SCHEMA_PUT,
    Accepted,
    RejectedEvent,
    encode_json,
    error_response,
    json_response,
    read_admin_body,
    refused,
    unavailable,
)
from courier.gateway.segment import SegmentRoutes
from courier.gateway.service import EventService
from courier.schema import record_to_json
from courier.service.auth import KeyRing, Principal
from courier.settings import Settings

_Failures = tuple[type[Exception], ...]
#: The ingest route, the gateway's hot path (app.py gives it a short way in).
INGEST_PATH = "/v1/events"


class _Starting(Exception):
    """The lifespan has not built the service yet: the gateway answers 503."""


async def _no_provisioning(event_type: str) -> None:
    """Without a transport (tests over MemorySink) there are no streams to provision."""


class GatewayRoutes:
    """What the routes need; ``service`` is None until the lifespan started it."""

    def __init__(self, settings: Settings, metrics_dir: Path | None) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics(metrics_dir)
        self.service: EventService | None = None
        self._openapi: tuple[object, bytes] | None = None  # (registry snapshot, document)
        self.keyring = KeyRing(settings.auth)
        self.repairs = RepairRoutes(settings, self.keyring)
        self.limiter = RateLimiter()
        self.provision: Provision = _no_provisioning

    def routes(self) -> list[Route]:
        """Every route of the gateway; a new route module adds its list here."""
        return [
            Route(INGEST_PATH, self.post_events, methods=["POST"]),
            Route("/v1/schemas", self.list_schemas, methods=["GET"]),
            Route("/v1/schemas/{type}", self.get_schema, methods=["GET"]),
            Route("/v1/schemas/{type}", self.put_schema, methods=["PUT"]),
            *self.repairs.routes(),
            *SegmentRoutes(self).routes(),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_route, methods=["GET"]),
            Route("/openapi.json", self.openapi_route, methods=["GET"]),
        ]

    def unavailable(self, what: str, then: str = RETRY_BATCH) -> Response:
        return unavailable(self.settings.gateway, what, then)

    def _service(self) -> EventService:
        if self.service is None:
            raise _Starting
        return self.service

    async def _answer(
        self,
        handle: Callable[[], Awaitable[Response]],
        *,
        failing: str,
        then: str = RETRY_BATCH,
        unavailable_on: _Failures = (TransportError,),
    ) -> Response:
        """Run ``handle``; refusals, a disconnect, a starting gateway and the transport
        failures ``unavailable_on`` (503: "``failing``: <error>; ``then``") become their
        answers."""
        try:
            return await handle()
        except RequestError as exc:
            return refused(exc)
        except ClientDisconnect:
            return error_response(400, "the client disconnected before sending the whole body")
        except _Starting:
            return self.unavailable("the gateway is starting", then)
        except unavailable_on as exc:
            return self.unavailable(f"{failing}: {exc}", then)

    # -- events -----------------------------------------------------------------

    async def post_events(self, request: Request) -> Response:
        started = time.perf_counter()
        received_at = dt.datetime.now(dt.UTC)
        response = await self._answer(
            lambda: self._post_events(request, received_at), failing="events could not be stored"
        )
        self.metrics.request(response.status_code, time.perf_counter() - started)
        return response

    async def _post_events(self, request: Request, received_at: dt.datetime) -> Response:
        limits = self.settings.gateway
        principal = self.keyring.identify(request.headers)  # 401 before anything else
        fmt = body_format(request.headers.get("content-type"))
        encoding = content_encoding(request.headers.get("content-encoding"))
        service = self._service()
        service.check_available()
        self.limiter.check(principal)  # an empty bucket costs no body read
        body = await read_body(
            request.stream(),
            content_length=request.headers.get("content-length"),
            encoding=encoding,
            max_body_bytes=limits.max_body_bytes,
            timeout_secs=limits.body_read_timeout_secs,
        )
        result = await service.ingest(
            body, fmt, received_at, admit=lambda batch: self._admit(principal, batch)
        )
        rejected = [RejectedEvent(index=r.index, id=r.id, error=r.error) for r in result.rejections]
        return json_response(Accepted(result.accepted, rejected))

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

    # -- schemas ----------------------------------------------------------------

    async def list_schemas(self, request: Request) -> Response:
        async def handle() -> Response:
            self.keyring.identify(request.headers)
            records = await self._service().registry.list()
            return json_response([record_to_json(r) for r in records])

        return await self._answer(
            handle,
            failing="the schema registry cannot be read",
            then=RETRY_READ,
            unavailable_on=(TransportError, SchemaError),
        )

    async def get_schema(self, request: Request) -> Response:
        name = request.path_params["type"]

        async def handle() -> Response:
            self.keyring.identify(request.headers)
            record = await self._service().registry.get(name)
            if record is None:
                return error_response(
                    404, f"event type {name!r} is not registered; see GET /v1/schemas"
                )
            return json_response(record_to_json(record))

        return await self._answer(
            handle,
            failing="the schema registry cannot be read",
            then=RETRY_READ,
            unavailable_on=(TransportError, SchemaError),
        )

    async def put_schema(self, request: Request) -> Response:
        """Register a type or a new schema version (admin key; see gateway/admin.py)."""
        name = request.path_params["type"]

        async def handle() -> Response:
            self.keyring.require_admin(request.headers)
            service = self._service()
            body = await read_admin_body(request, self.settings.gateway)
            result = await apply_schema(service.registry, name, body, self.provision)
            await service.refresh()
            return json_response(result)

        return await self._answer(
            handle, failing=f"PUT of {name!r} did not complete", then=RETRY_SCHEMA_PUT
        )

    # -- health, metrics, description ---------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(self, request: Request) -> Response:
        service = self.service
        if service is None:
            return error_response(503, "not ready: the gateway is starting")
        if not service.sink.is_connected:
            return error_response(503, "not ready: not connected to the transport")
        if not service.registry_loaded:
            return error_response(503, "not ready: the schema registry has not been loaded yet")
        return PlainTextResponse("ready\n")

    async def metrics_route(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    async def openapi_route(self, request: Request) -> Response:
        return Response(self.openapi(), media_type="application/json")

    def openapi(self) -> bytes:
        """The OpenAPI document of the types registered now (rebuilt when they change)."""
        types = self.service.types if self.service is not None else None
        if self._openapi is None or self._openapi[0] is not types:
            doc = openapi_document(
                self.settings.gateway, auth_required=self.settings.auth.enabled, types=types
            )
            self._openapi = (types, encode_json(doc))
        return self._openapi[1]

"""The dashboard's ASGI app (Starlette): the bucket-grid page and its JSON API.

Routes: ``/`` (the page), ``/api/types`` (per-type lag, backlog, throughput),
``/api/buckets`` (the grid: types x the latest buckets), ``/api/audit``
(the full reconciliation, filters ``type``, ``from``, ``to``), ``/api/dcs`` (per type
and DC, how far behind its source is; 404 without ``[dc]`` domains), ``/metrics``,
``/healthz``. Read-only: it never changes the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from courier.audit import AuditStore, DeliveredScanner, build_report
from courier.dashboard.data import Sources, grid, types
from courier.dashboard.dcs import DcPanel
from courier.dashboard.page import render_page
from courier.errors import CourierError
from courier.model import parse_time
from courier.service.auth import KeyRing, RequireKey
from courier.service.runtime import connect_service
from courier.settings import Settings
from courier.storage.layout import open_layout
from courier.transport import AUDIT_KV

log = logging.getLogger("courier.dashboard")

WAIT_FOR_NATS_SECS = 30.0
#: Most buckets per type one /api/audit answer reconciles.
MAX_AUDIT_BUCKETS = 2000
_encode = msgspec.json.Encoder().encode


def _json(doc: Any, status: int = 200) -> Response:
    return Response(_encode(doc), status, media_type="application/json")


class _Dashboard:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sources: Sources | None = None
        #: The per-DC panel; None with one DC (no ``dc.domains``).
        self.dcs: DcPanel | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "courier_dashboard_requests_total",
            "Dashboard requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        # Reconciliation reads Parquet footers and ids: one request at a time.
        self._lock = asyncio.Lock()

    def _unavailable(self, route: str, what: str) -> Response:
        self.requests.labels(route, "503").inc()
        return _json({"error": what}, 503)

    async def _views(self, only: str | None = None) -> Any:
        assert self.sources is not None
        return await self.sources.views(only)

    async def page(self, request: Request) -> Response:
        if self.sources is None:
            return self._unavailable("page", "the dashboard is starting")
        try:
            async with self._lock:
                views = await self._views()
                g = await asyncio.to_thread(grid, self.sources, views, self._columns(request))
                t = types(self.sources, views)
            d = None if self.dcs is None else await self.dcs.doc()
        except CourierError as exc:
            return self._unavailable("page", f"cannot read Courier's state: {exc}")
        self.requests.labels("page", "200").inc()
        return HTMLResponse(render_page(g, t, self.settings.dashboard.refresh_secs, dcs=d))

    def _columns(self, request: Request) -> int:
        try:
            n = int(request.query_params.get("buckets", self.settings.dashboard.buckets_shown))
        except ValueError:
            n = self.settings.dashboard.buckets_shown
        return max(1, min(n, 500))

    async def api_types(self, request: Request) -> Response:
        if self.sources is None:
            return self._unavailable("types", "the dashboard is starting")
        try:
            views = await self._views()
        except CourierError as exc:
            return self._unavailable("types", f"cannot read Courier's state: {exc}")
        self.requests.labels("types", "200").inc()
        return _json(types(self.sources, views))

    async def api_buckets(self, request: Request) -> Response:
        if self.sources is None:
            return self._unavailable("buckets", "the dashboard is starting")
        try:
            async with self._lock:
                views = await self._views()
                g = await asyncio.to_thread(grid, self.sources, views, self._columns(request))
        except CourierError as exc:
            return self._unavailable("buckets", f"cannot read Courier's state: {exc}")
        self.requests.labels("buckets", "200").inc()
        return _json(g)

    async def api_audit(self, request: Request) -> Response:
        if self.sources is None:
            return self._unavailable("audit", "the dashboard is starting")
        q = request.query_params
        now = time.time()
        try:
            start = parse_time(q["from"]) if "from" in q else now - 86_400
            end = parse_time(q["to"]) if "to" in q else now + self.settings.bucket_width_secs
        except ValueError as exc:
            self.requests.labels("audit", "400").inc()
            return _json({"error": f"from/to must be RFC 3339 or epoch seconds: {exc}"}, 400)
        sources = self.sources
        try:
            async with self._lock:
                views = await self._views(q.get("type"))
                report = await asyncio.to_thread(
                    build_report,
                    views,
                    sources.scanner,
                    self.settings,
                    start=start,
                    end=end,
                    limit=MAX_AUDIT_BUCKETS,
                )
        except CourierError as exc:
            return self._unavailable("audit", f"cannot read Courier's state: {exc}")
        self.requests.labels("audit", "200").inc()
        return _json(report.to_json())

    async def api_dcs(self, request: Request) -> Response:
        if self.sources is None:
            return self._unavailable("dcs", "the dashboard is starting")
        if self.dcs is None:
            self.requests.labels("dcs", "404").inc()
            return _json({"error": "no DCs configured ([dc] domains is empty)"}, 404)
        try:
            doc = await self.dcs.doc()
        except CourierError as exc:
            return self._unavailable("dcs", f"cannot read Courier's state: {exc}")
        self.requests.labels("dcs", "200").inc()
        return _json(doc)

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")


def create_app(settings: Settings) -> Starlette:
    """The dashboard app; its lifespan connects to NATS."""
    dash = _Dashboard(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        conn = await connect_service(settings, "courier-dashboard", wait_secs=WAIT_FOR_NATS_SECS)
        try:
            dash.sources = Sources(
                settings,
                conn.transport,
                conn.registry,
                AuditStore(await conn.transport.key_value(AUDIT_KV)),
                DeliveredScanner(open_layout(settings), scratch_dir=settings.resolved_scratch_dir),
            )
            if settings.dc.domains:
                dash.dcs = DcPanel(settings, conn.transport, conn.registry)
            log.info("dashboard on http://%s:%d/", settings.dashboard.host, settings.dashboard.port)
            yield
        finally:
            dash.sources = None
            panel, dash.dcs = dash.dcs, None
            try:
                if panel is not None:
                    await panel.close()
            finally:
                await conn.transport.close()

    routes = [
        Route("/", dash.page, methods=["GET"]),
        Route("/api/types", dash.api_types, methods=["GET"]),
        Route("/api/buckets", dash.api_buckets, methods=["GET"]),
        Route("/api/audit", dash.api_audit, methods=["GET"]),
        Route("/api/dcs", dash.api_dcs, methods=["GET"]),
        Route("/metrics", dash.metrics, methods=["GET"]),
        Route("/healthz", dash.healthz, methods=["GET"]),
    ]
    middleware = []
    if settings.dashboard.require_key != "off":
        # Browsers can answer the Basic prompt with the key as the password.
        middleware.append(
            Middleware(
                RequireKey,
                keyring=KeyRing(settings.auth),
                admin=settings.dashboard.require_key == "admin",
                exempt=("/healthz", "/metrics"),
                challenge='Basic realm="Courier dashboard: any user name, the API key as password"',
            )
        )
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)


def serve(settings: Settings) -> None:
    """Run the dashboard with uvicorn until interrupted (``courier dashboard``)."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.dashboard.host,
        port=settings.dashboard.port,
        access_log=False,
        log_config=None,
        lifespan="on",
        server_header=False,
    )

"""The gateway's ASGI app (Starlette): its routes (routes.py) served within its lifespan (lifespan.py).

Running it, with one or several worker processes, is :mod:`courier.gateway.prefork`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from courier.gateway.lifespan import gateway_lifespan
from courier.gateway.publisher import EventSink
from courier.gateway.routes import INGEST_PATH, GatewayRoutes
from courier.repair import RepairTarget
from courier.schema import Registry
from courier.settings import Settings


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
    gw = GatewayRoutes(settings, metrics_dir)
    lifespan = gateway_lifespan(gw, sink=sink, registry=registry, repairs=repairs)
    app = _GatewayApp(routes=gw.routes(), lifespan=lifespan)
    app.state.gateway = gw
    app.ingest = gw.post_events
    return app


class _GatewayApp(Starlette):
    """Starlette with a short way in for ``POST /v1/events``, the route on the hot path.

    That handler answers every outcome itself (``GatewayRoutes._answer``), so the
    error middlewares and the router Starlette puts around each request only cost
    CPU there (issue 13). An unexpected exception still reaches the server, which
    answers 500 as the middleware would. Every other request takes the full path.
    """

    ingest: Callable[[Request], Awaitable[Response]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == INGEST_PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and self.ingest is not None
        ):
            scope["app"] = self
            response = await self.ingest(Request(scope, receive))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

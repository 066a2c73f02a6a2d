"""The gateway's ASGI app (Starlette): its routes (routes.py) served within its lifespan (lifespan.py).

Running it, with one or several worker processes, is :mod:`courier.gateway.prefork`.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette

from courier.gateway.lifespan import gateway_lifespan
from courier.gateway.publisher import EventSink
from courier.gateway.routes import GatewayRoutes
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
    app = Starlette(routes=gw.routes(), lifespan=lifespan)
    app.state.gateway = gw
    return app

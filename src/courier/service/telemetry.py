"""``/metrics`` over HTTP for the services that have no web app of their own.

The writer, closer and auditor each keep their metrics in their own
``CollectorRegistry`` (no process globals) and serve it with
:func:`metrics_endpoint` on the port their settings name (0 = off). The
gateway and the dashboard serve ``/metrics`` from their Starlette apps.

A port that cannot be bound is logged and the service keeps running: metrics
are not on the data path, and a second process on the same host must not die
because the first one holds the port.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, start_http_server

log = logging.getLogger("courier.service.telemetry")


@contextlib.contextmanager
def metrics_endpoint(
    registry: CollectorRegistry, *, host: str, port: int, service: str
) -> Iterator[int | None]:
    """Serve ``registry`` at ``http://host:port/metrics`` while the block runs.

    Yields the bound port, or None when ``port`` is 0 or cannot be bound.
    """
    if port == 0:
        yield None
        return
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.error(
            "%s: cannot serve /metrics on %s:%d (%s); running without a metrics endpoint",
            service,
            host,
            port,
            exc,
        )
        yield None
        return
    bound = int(server.server_address[1])
    log.info("%s: serving /metrics on http://%s:%d/metrics", service, host, bound)
    try:
        yield bound
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def consumer_pending_gauge(registry: CollectorRegistry) -> Gauge:
    """``courier_consumer_pending_messages{type,consumer}``: one definition for every
    service that reports a durable consumer's backlog (closer: writer; auditor: audit)."""
    return Gauge(
        "courier_consumer_pending_messages",
        "Messages of the type not yet acknowledged by the consumer",
        ["type", "consumer"],
        registry=registry,
    )

"""``courier tail PATTERN...``: the file tailer as a command."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click

from courier.cli.http import gateway_base_url, gateway_options


@click.command()
@click.argument("patterns", nargs=-1, required=True)
@gateway_options(api_key_help="API key when the gateway has auth on.")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="Positions and rejected log (default <data-dir>/_tailer).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=0,
    show_default=True,
    help="Serve /metrics (lines sent/rejected, files, unacked bytes) on this port; 0 = off.",
)
@click.pass_obj
def tail(
    obj: Any,
    patterns: tuple[str, ...],
    gateway_url: str | None,
    state_dir: Path | None,
    api_key: str | None,
    metrics_port: int,
) -> None:
    """Follow JSON-lines files (globs, quoted) and deliver every line to the gateway once.

    Each line is {"type", "id"?, "time"?, "data"}; lines without an id get a
    deterministic one. Survives rotation (rename and copytruncate) and restarts.
    """
    from prometheus_client import CollectorRegistry

    from courier.service.telemetry import metrics_endpoint
    from courier.tailer import Tailer, TailerCollector, TailerSettings
    from courier.tailer.tailer import glob_patterns

    s = obj.settings()  # the group's _Ctx (also when run as ``python -m courier.cli.main``)
    settings = TailerSettings(
        patterns=glob_patterns(patterns),
        state_dir=state_dir or s.data_dir / "_tailer",
        gateway_url=gateway_base_url(s, gateway_url),
        max_line_bytes=s.gateway.max_event_bytes,
        api_key=api_key,
    )
    stop = threading.Event()

    def _stop(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    tailer = Tailer(settings, stop=stop)
    registry = CollectorRegistry()
    registry.register(TailerCollector(tailer))
    with metrics_endpoint(registry, host=s.metrics_host, port=metrics_port, service="tailer"):
        tailer.run()

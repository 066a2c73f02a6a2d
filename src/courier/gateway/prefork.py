"""Running the gateway: uvicorn, and the pre-fork process manager for several workers.

With ``gateway.workers`` > 1 the process binds the port once and forks that
many workers that accept on the shared socket: validation and encoding are
CPU-bound Python, so one process saturates one core. Each worker has its own
NATS connection and group commit. If a worker dies, the others are stopped and
the process exits non-zero so its supervisor restarts it whole. The workers
share their metrics through a temporary directory, so a scrape of ``/metrics``
reports all of them, whichever worker answers it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from courier.errors import PortInUseError
from courier.gateway.app import create_app
from courier.gateway.metrics import share_across_workers
from courier.service.runtime import settle_gc
from courier.settings import Settings

log = logging.getLogger("courier.gateway")


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
    """Run the gateway until SIGINT/SIGTERM (``courier gateway``), pre-forked (module docstring)."""
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
    settle_gc()
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

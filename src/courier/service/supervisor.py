"""``courier up``: the whole local stack as supervised processes.

Starts the embedded NATS server, provisions the base resources (and the
example schemas with ``--demo``), then runs the gateway, writer, closer,
auditor and dashboard as child processes. A child that exits is logged and restarted with backoff.
SIGINT/SIGTERM stop the children (SIGTERM, then SIGKILL after a timeout) and
then NATS, in that order, so writers flush and ack before the broker goes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from courier.settings import Settings
from courier.transport.server import describe_store, embedded_nats

log = logging.getLogger("courier.service.supervisor")

COMPONENTS = ("gateway", "writer", "closer", "auditor", "dashboard")


@dataclass
class _Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.proc.pid)


def child_env(settings: Settings, nats_url: str, store_limit_bytes: int) -> dict[str, str]:
    env = dict(os.environ)
    env["COURIER_NATS_URL"] = nats_url
    # The limit the server was given (resolved at its start when not set), so that the
    # gateways keep the store's headroom free for Courier's own records.
    env["COURIER_NATS__STORE_MAX_BYTES"] = str(store_limit_bytes)
    env["COURIER_DATA_DIR"] = str(settings.data_dir.resolve())
    env["COURIER_BUCKET_WIDTH_SECS"] = str(settings.bucket_width_secs)
    env["COURIER_GATEWAY__PORT"] = str(settings.gateway.port)
    env["COURIER_GATEWAY__HOST"] = settings.gateway.host
    env["COURIER_DASHBOARD__PORT"] = str(settings.dashboard.port)
    env["COURIER_DASHBOARD__HOST"] = settings.dashboard.host
    env["COURIER_LOG_LEVEL"] = settings.log_level
    return env


class Supervisor:
    def __init__(self, settings: Settings, *, config: Path | None = None) -> None:
        self.settings = settings
        self.config = config
        self.nats = embedded_nats(settings)
        self.children: list[_Child] = []
        self._stopping = False

    def start_nats(self) -> str:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.nats.start()
        return self.nats.url

    def store_summary(self) -> str:
        """How much disk the running server's streams may use (see :func:`describe_store`)."""
        assert self.nats.store_limit_bytes is not None, "start_nats() first"
        n = self.settings.nats
        return describe_store(
            self.nats.store_limit_bytes,
            explicit=n.store_max_bytes is not None,
            stream_max_bytes=n.stream_max_bytes,
        )

    def start_children(self) -> None:
        assert self.nats.store_limit_bytes is not None, "start_nats() first"
        env = child_env(self.settings, self.nats.url, self.nats.store_limit_bytes)
        base = [sys.executable, "-m", "courier.cli.main"]
        if self.config:
            base += ["--config", str(self.config)]
        self.children = [_Child(name, [*base, name], env) for name in COMPONENTS]
        for c in self.children:
            c.start()

    def _handle_signal(self, signum: int, _frame: object) -> None:
        log.info("received signal %d; stopping", signum)
        self._stopping = True

    def run_forever(self) -> None:
        signal.signal(signal.SIGINT, self._handle_signal)
        signal.signal(signal.SIGTERM, self._handle_signal)
        try:
            while not self._stopping:
                self._check_children()
                time.sleep(0.2)
        finally:
            self.stop()

    def _check_children(self) -> None:
        now = time.monotonic()
        for c in self.children:
            if c.proc is None:
                if now >= c.next_start:
                    c.start()
                continue
            code = c.proc.poll()
            if code is None:
                continue
            uptime = now - c.started_at
            c.restarts = 0 if uptime > 30 else c.restarts + 1
            delay = min(30.0, 0.5 * 2**c.restarts)
            log.error(
                "%s (pid %d) exited with code %s after %.1fs; restarting in %.1fs",
                c.name,
                c.proc.pid,
                code,
                uptime,
                delay,
            )
            c.proc = None
            c.next_start = now + delay

    def stop(self, timeout_secs: float = 15.0) -> None:
        for c in self.children:
            if c.proc and c.proc.poll() is None:
                c.proc.terminate()
        deadline = time.monotonic() + timeout_secs
        for c in self.children:
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", c.name)
                c.proc.kill()
                c.proc.wait()
            c.proc = None
        self.nats.stop()
        log.info("stack stopped")

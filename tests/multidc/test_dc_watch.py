"""``courier dc watch`` keeps nudging after the delivery region's server restarts, and stops."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.topology import CENTRAL, Topology

from multidc.dc_testing import provision

NUDGED = "nudged the source of Search"


def _wait(cond: Callable[[], bool], what: str, timeout_secs: float) -> None:
    deadline = time.monotonic() + timeout_secs
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout_secs}s: {what}"
        time.sleep(0.2)


def test_dc_watch_keeps_nudging_after_a_central_kill_and_stops_on_sigterm(tmp_path: Path):
    log_path = tmp_path / "watch.log"
    with Topology(tmp_path / "topology") as t:
        # The DCs have no Search stream: central's Search sources never start, so the
        # watch re-adds them every nudge interval, a heartbeat this test can read.
        asyncio.run(provision(t, tmp_path, central_only=("Search",)))
        env = {
            **os.environ,
            "COURIER_NATS_URL": t.central.url,
            "COURIER_DATA_DIR": str(tmp_path / "c"),
            "COURIER_LOG_LEVEL": "INFO",
            "COURIER_DC__DOMAINS": json.dumps(list(t.domains)),
            "COURIER_DC__NUDGE_AFTER_SECS": "0.5",
            "COURIER_DC__NUDGE_INTERVAL_SECS": "1",
        }
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "courier.cli.main", "dc", "watch"],
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:

            def nudges() -> int:
                return log_path.read_text(errors="replace").count(NUDGED)

            _wait(lambda: nudges() > 0, "a first nudge", 60)
            t.kill(CENTRAL)
            time.sleep(2)  # the outage itself
            t.restart(CENTRAL)
            after_restart = nudges()
            _wait(
                lambda: nudges() > after_restart,
                f"a nudge after central restarted (log: {log_path.read_text()[-3000:]})",
                60,
            )
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

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

from courier.model import INVALID_TYPE
from courier.schema import Registry
from courier.settings import load_settings
from courier.transport import SCHEMAS_KV, Transport, provision_base, provision_type
from courier_testing import example_definitions

NUDGED = "nudged the source of Search"


async def _setup(t: Topology, tmp_path: Path) -> None:
    # The DCs have no Search stream: central's Search sources never start, so the
    # watch re-adds them every nudge interval, a heartbeat this test can read.
    for name, server in t.dcs.items():
        conn = await Transport.connect(server.url)
        try:
            for ty in (INVALID_TYPE, "PlaySong"):
                await provision_type(conn, load_settings(data_dir=tmp_path / name), ty)
        finally:
            await conn.close()
    settings = load_settings(data_dir=tmp_path / "central", dc={"domains": list(t.domains)})
    central = await Transport.connect(t.central.url)
    try:
        await provision_base(central, settings)
        registry = Registry(await central.key_value(SCHEMAS_KV))
        await registry.apply(example_definitions("PlaySong", "Search"))
        for ty in (INVALID_TYPE, "PlaySong", "Search"):
            await provision_type(central, settings, ty)
    finally:
        await central.close()


def _wait(cond: Callable[[], bool], what: str, timeout_secs: float) -> None:
    deadline = time.monotonic() + timeout_secs
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout_secs}s: {what}"
        time.sleep(0.2)


def test_dc_watch_keeps_nudging_after_a_central_kill_and_stops_on_sigterm(tmp_path: Path):
    log_path = tmp_path / "watch.log"
    with Topology(tmp_path / "topology") as t:
        asyncio.run(_setup(t, tmp_path))
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

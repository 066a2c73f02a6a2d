"""``courier dc status``: per type and DC, what the delivery region holds and how far behind."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bench.topology import Topology
from click.testing import CliRunner

from courier.cli.main import cli
from courier.model import INVALID_TYPE
from multidc.dc_testing import provision, publish


async def _setup(t: Topology, tmp_path: Path) -> None:
    await provision(t, tmp_path)
    await publish(t.dcs["dcA"].url, 5, "dcA")
    await publish(t.dcs["dcB"].url, 3, "dcB")


def test_dc_status_shows_each_dc_caught_up_then_one_cut_off(tmp_path: Path):
    with Topology(tmp_path / "topology") as t:
        asyncio.run(_setup(t, tmp_path))
        args = ["--nats-url", t.central.url, "--data-dir", str(tmp_path / "c"), "dc", "status"]
        env = {"COURIER_DC__DOMAINS": json.dumps(list(t.domains))}
        deadline = time.monotonic() + 60
        while True:
            out = CliRunner().invoke(cli, [*args, "--json"], env=env)
            if out.exit_code == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert out.exit_code == 0, out.output
        rows = {(r["type"], r["dc"]): r for r in map(json.loads, out.output.splitlines())}
        assert rows[("PlaySong", "dcA")]["stored_seq"] == 5
        assert rows[("PlaySong", "dcB")]["stored_seq"] == 3
        assert rows[(INVALID_TYPE, "dcA")]["dc_last_seq"] == 0

        t.cut("dcB")
        out = CliRunner().invoke(cli, args, env=env)
        assert out.exit_code == 1
        line = next(x for x in out.output.splitlines() if "PlaySong" in x and "dcB" in x)
        assert "dc_last=unreachable" in line and line.endswith("BEHIND")

"""``courier audit`` and the auditor, per DC: exact sequences, how far behind, the delay alert."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bench.topology import Topology
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from courier.audit.dc import DcAudit, DcAuditor, DcChecker
from courier.cli.main import cli
from courier.settings import load_settings
from courier.transport import Transport, stream_name
from courier_testing import eventually
from multidc.dc_testing import TYPE, provision, publish


def _audit(t: Topology, tmp_path: Path, env: dict[str, str]) -> tuple[int, dict[str, dict]]:
    args = ["--nats-url", t.central.url, "--data-dir", str(tmp_path / "c"), "audit", "--json"]
    out = CliRunner().invoke(cli, args, env=env)
    assert out.output.strip(), out
    doc = json.loads(out.output)
    return out.exit_code, {r["domain"]: r for r in doc["dcs"] if r["event_type"] == TYPE}


def test_audit_shows_each_dc_exact_then_a_cut_off_dc_behind_and_late(tmp_path: Path):
    with Topology(tmp_path / "topology") as t:
        asyncio.run(provision(t, tmp_path))
        asyncio.run(publish(t.dcs["dcA"].url, 5, "a"))
        asyncio.run(publish(t.dcs["dcB"].url, 3, "b"))
        env = {
            "COURIER_DC__DOMAINS": json.dumps(list(t.domains)),
            "COURIER_DC__NATS_URLS": json.dumps({"dcA": t.dcs["dcA"].url}),
            "COURIER_DC__MAX_TRANSFER_DELAY_SECS": "1",
        }
        deadline = time.monotonic() + 60
        while True:
            code, rows = _audit(t, tmp_path, env)
            if all(r["stored"] == r["dc_last_seq"] for r in rows.values()):
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.3)
        a, b = rows["dcA"], rows["dcB"]
        assert (a["stored"], a["highest_seq"], a["missing"], a["repeated"]) == (5, 5, 0, 0)
        assert (b["stored"], b["behind_messages"], b["behind_secs"]) == (3, 0, 0.0)
        assert a["last_transfer_secs"] is not None and a["last_transfer_secs"] >= 0

        t.cut("dcA")
        asyncio.run(publish(t.dcs["dcA"].url, 2, "a2"))
        deadline = time.monotonic() + 30
        while True:
            code, rows = _audit(t, tmp_path, env)
            a = rows["dcA"]
            if a["delay_breached"]:
                break
            assert time.monotonic() < deadline, a
            time.sleep(0.3)
        # Behind by what central has actually stored, read from the DC directly.
        assert code == 1 and (a["dc_last_seq"], a["behind_messages"]) == (7, 2)
        assert a["behind_secs"] > 1 and a["missing"] == 0 and not a["ok"]
        assert rows["dcB"]["ok"]

        # A message lost in the delivery region is a missing DC sequence, not just a count.
        async def lose_one() -> None:
            central = await Transport.connect(t.central.url)
            try:
                await central.js.delete_msg(stream_name(TYPE), 2)
            finally:
                await central.close()

        asyncio.run(lose_one())
        code, rows = _audit(t, tmp_path, env)
        lost = next(r for r in rows.values() if r["missing"])
        assert code == 1 and lost["missing"] == 1 and lost["repeated"] == 0
        assert len(lost["missing_ranges"]) == 1

        async def alert() -> tuple[float, float]:
            settings = load_settings(
                data_dir=tmp_path / "c",
                dc={"domains": list(t.domains), "max_transfer_delay_secs": 1},
            )
            central = await Transport.connect(t.central.url)
            registry = CollectorRegistry()
            auditor = DcAuditor(settings, central, registry)
            try:
                await auditor.check([TYPE])
                await auditor.check([TYPE])  # still breaching: alerted once, not twice
            finally:
                await auditor.close()
                await central.close()
            labels = {"type": TYPE, "dc": "dcA"}
            breaches = registry.get_sample_value("courier_audit_dc_delay_breaches_total", labels)
            reachable = registry.get_sample_value("courier_audit_dc_reachable", labels)
            return breaches or 0.0, reachable if reachable is not None else -1.0

        # Without dc.nats_urls the auditor cannot reach the cut-off DC: that alerts too.
        assert asyncio.run(alert()) == (1.0, 0.0)


def test_a_dc_down_when_the_checker_started_is_reached_directly_once_it_is_back(
    tmp_path: Path,
):
    with Topology(tmp_path / "topology") as t:
        asyncio.run(provision(t, tmp_path))
        asyncio.run(publish(t.dcs["dcA"].url, 4, "a"))
        t.cut("dcA")
        t.kill("dcA")
        settings = load_settings(
            data_dir=tmp_path / "c",
            dc={"domains": list(t.domains), "nats_urls": {"dcA": t.dcs["dcA"].url}},
        )

        async def run() -> None:
            central = await Transport.connect(t.central.url)
            checker = DcChecker(settings, central)
            try:

                async def dc_a() -> DcAudit:
                    return next(r for r in await checker.check([TYPE]) if r.domain == "dcA")

                assert (await dc_a()).dc_last_seq is None  # down: no link, no direct answer
                t.restart("dcA")  # its link stays cut: only a direct connection reaches it

                async def reached() -> bool:
                    return (await dc_a()).dc_last_seq == 4

                await eventually(reached, what="dcA's last sequence, asked directly")
            finally:
                await checker.close()
                await central.close()

        asyncio.run(run())

"""The dashboard's per-DC panel against a real hub and two leaf DCs: ``/api/dcs`` says
how far behind each DC is from what central has stored, and a cut-off DC shows as behind
and late (read directly from the DC) or as unreachable (no direct URL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from bench.topology import Topology

from multidc.dc_testing import caught_up, dashboard, provision, publish, wait_rows


def _start(t: Topology, tmp_path: Path) -> None:
    asyncio.run(provision(t, tmp_path))
    asyncio.run(publish(t.dcs["dcA"].url, 5, "a"))
    asyncio.run(publish(t.dcs["dcB"].url, 3, "b"))


def test_api_dcs_shows_each_dccaught_up_then_a_cut_off_dc_behind_and_late(tmp_path: Path):
    with Topology(tmp_path / "topology") as t:
        _start(t, tmp_path)
        direct = {"dcA": t.dcs["dcA"].url}
        with dashboard(t, tmp_path / "c", nats_urls=direct, max_transfer_delay_secs=2) as url:
            rows = wait_rows(url, caught_up)
            a, b = rows["dcA"], rows["dcB"]
            assert (a["stored"], a["highest_seq"], a["behind_messages"]) == (5, 5, 0)
            assert (b["stored"], b["highest_seq"], b["behind_messages"]) == (3, 3, 0)
            for r in (a, b):
                assert r["reachable"] and r["behind_secs"] == 0.0
                assert (r["missing"], r["repeated"]) == (0, 0)
                assert r["last_transfer_secs"] is not None and r["last_transfer_secs"] >= 0
            page = httpx.get(url, timeout=10).text
            assert 'id="dcs"' in page and "Data centres" in page

            t.cut("dcA")
            asyncio.run(publish(t.dcs["dcA"].url, 2, "a2"))
            # Behind by what central has stored, the DC asked directly: late past 2 s.
            rows = wait_rows(url, lambda rows: rows["dcA"]["status"] == "late")
            a = rows["dcA"]
            assert (a["stored"], a["dc_last_seq"], a["behind_messages"]) == (5, 7, 2)
            assert a["behind_secs"] > 2 and a["delay_breached"] and a["reachable"]
            assert (a["missing"], a["repeated"]) == (0, 0)
            assert rows["dcB"]["reachable"] and rows["dcB"]["behind_messages"] == 0

            t.restore("dcA")  # the link back: central catches up and the panel says so
            rows = wait_rows(url, lambda rows: rows["dcA"]["stored"] == 7, timeout_secs=120)
            assert rows["dcA"]["behind_messages"] == 0 and rows["dcA"]["missing"] == 0


def test_api_dcs_shows_a_cut_off_dc_without_a_direct_url_as_unreachable(tmp_path: Path):
    with Topology(tmp_path / "topology") as t:
        _start(t, tmp_path)
        with dashboard(t, tmp_path / "c") as url:
            wait_rows(url, caught_up)
            t.cut("dcA")
            rows = wait_rows(url, lambda rows: rows["dcA"]["status"] == "unreachable")
            a = rows["dcA"]
            assert not a["reachable"] and a["dc_last_seq"] is None
            assert a["behind_messages"] is None and a["stored"] == 5
            assert rows["dcB"]["reachable"] and rows["dcB"]["behind_messages"] == 0

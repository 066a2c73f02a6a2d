"""The dashboard's per-DC panel against a real hub and two leaf DCs: ``/api/dcs`` says
how far behind each DC is from what central has stored, and a cut-off DC shows as behind
and late (read directly from the DC) or as unreachable (no direct URL). The panel checks
at most once per interval, and each check reads only what central stored since the last."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import httpx
from bench.topology import Topology

from courier.dashboard.dcs import DcPanel
from courier.schema import Registry
from courier.settings import load_settings
from courier.transport import SCHEMAS_KV, Transport
from multidc.dc_testing import TYPE, caught_up, dashboard, provision, publish, wait_rows


def _start(t: Topology, tmp_path: Path) -> None:
    asyncio.run(provision(t, tmp_path))
    asyncio.run(publish(t.dcs["dcA"].url, 5, "a"))
    asyncio.run(publish(t.dcs["dcB"].url, 3, "b"))


def test_api_dcs_shows_each_dc_caught_up_then_a_cut_off_dc_behind_and_late(tmp_path: Path):
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


def test_the_panel_reuses_its_document_within_its_interval_and_reads_only_what_is_new(
    tmp_path: Path,
):
    with Topology(tmp_path / "topology") as t:
        _start(t, tmp_path)
        settings = load_settings(data_dir=tmp_path / "c", dc={"domains": list(t.domains)})

        async def check() -> None:
            central = await Transport.connect(t.central.url)
            registry = Registry(await central.key_value(SCHEMAS_KV))
            cached = DcPanel(settings, central, registry, min_interval_secs=3600)
            live = DcPanel(settings, central, registry, min_interval_secs=0)
            try:
                first = await cached.doc()
                assert await cached.doc() is first  # no second check within the interval
                tally_reads: list[int] = []  # where each headers-only read of TYPE starts
                scan = central.scan

                def spy(event_type: str, first_seq: int, last_seq: int, **kw: Any) -> Any:
                    if event_type == TYPE and kw.get("headers_only"):
                        tally_reads.append(first_seq)
                    return scan(event_type, first_seq, last_seq, **kw)

                central.scan = spy  # type: ignore[method-assign]
                while not caught_up(_of_type(await live.doc())):
                    await asyncio.sleep(0.2)
                await publish(t.dcs["dcB"].url, 2, "b2")
                while _of_type(await live.doc())["dcB"]["stored"] < 5:
                    await asyncio.sleep(0.2)
                b = _of_type(await live.doc())["dcB"]
                # The tallies were kept: the new messages added to them, nothing counted twice.
                assert (b["stored"], b["highest_seq"], b["repeated"], b["missing"]) == (5, 5, 0, 0)
                # Read once from the start, then only from after what was read before.
                assert tally_reads[0] == 1 and len(tally_reads) >= 2
                assert all(a < b for a, b in itertools.pairwise(tally_reads)), tally_reads
                assert await cached.doc() is first
            finally:
                await cached.close()
                await live.close()
                await central.close()

        asyncio.run(asyncio.wait_for(check(), 60))


def _of_type(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["domain"]: r for r in doc["rows"] if r["event_type"] == TYPE}

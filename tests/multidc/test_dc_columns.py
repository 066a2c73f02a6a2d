"""Two DCs sourced into central: each event keeps the DC that accepted it, and each
manifest counts events and transfer delay per DC; a DC whose link was cut is later."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bench.topology import Topology
from click.testing import CliRunner

from courier.cli.main import cli
from courier.closer.catalog import Catalog
from courier.closer.service import Closer
from courier.model import iso_utc
from courier.schema import Registry
from courier.settings import Settings
from courier.transport import CATALOG_KV, SCHEMAS_KV, Transport, stream_name
from courier.transport.sources import SourceNudger, dc_progress
from courier.writer import Writer
from courier_testing import FAST, Pipeline, eventually, settings_for
from multidc.dc_testing import TYPE, provision


async def _stored(central: Transport, n: int) -> bool:
    return (await central.js.stream_info(stream_name(TYPE))).state.messages == n


async def _run(t: Topology, tmp_path: Path) -> tuple[Settings, dict[str, int], float]:
    # FAST, but the writer consumer as dc_testing.provision made it (default ack_wait).
    fast = {**FAST, "writer": {"flush_interval_secs": 0.3, "fetch_wait_secs": 0.2}}
    settings = settings_for(
        tmp_path / "central", t.central.url, dc={"domains": list(t.domains)}, **fast
    )
    central = await Transport.connect(t.central.url)
    direct = {dc: await Transport.connect(server.url) for dc, server in t.dcs.items()}
    registry = Registry(await central.key_value(SCHEMAS_KV))
    compiled = await registry.compiled()
    into = {dc: Pipeline(settings, conn, registry, compiled) for dc, conn in direct.items()}
    stop = asyncio.Event()
    catalog = Catalog(await central.key_value(CATALOG_KV), "test-closer", 30.0)
    tasks = [
        asyncio.create_task(Writer(settings, central, registry).run(stop)),
        asyncio.create_task(Closer(settings, central, registry, catalog).run(stop)),
    ]
    expected: dict[str, str] = {}

    async def send(dc: str, prefix: str, n: int) -> None:
        ids = [f"{prefix}-{i}" for i in range(n)]
        for i in range(0, n, 5):
            chunk = ids[i : i + 5]
            await into[dc].publish(TYPE, [{"track_id": x, "ms_played": 1} for x in chunk], chunk)
        expected.update(dict.fromkeys(ids, dc))

    try:
        await send("dcA", "a", 20)
        await send("dcB", "b", 15)
        await eventually(
            lambda: _stored(central, 7), what="central stored the first 35 events (7 messages)"
        )
        # dcB is cut off; what it accepts meanwhile waits there, and dcA goes on.
        t.cut("dcB")
        await send("dcB", "c", 10)
        await send("dcA", "d", 10)

        async def dc_b_3s_behind() -> bool:
            progress = await dc_progress(
                central, settings, TYPE, direct={"dcB": direct["dcB"]}, unlinked={"dcB"}
            )
            return any(p.domain == "dcB" and (p.behind_secs or 0) >= 3 for p in progress)

        await eventually(dc_b_3s_behind, what="dcB 3 s behind central")
        t.restore("dcB")
        nudger = SourceNudger(central, settings)

        async def all_sourced() -> bool:
            await nudger.check([TYPE])  # resume now, not after nats-server's own retry
            return await _stored(central, 11)  # messages of 5 events

        await eventually(
            all_sourced, what="central stored every event of both DCs", timeout_secs=90
        )
        reader = Pipeline(settings, central, registry, compiled).reader
        now = time.time()
        await eventually(
            lambda: reader.read(TYPE, now - 600, now + 600).num_rows == 55,
            what="every event in a closed bucket",
            timeout_secs=60,
        )
        rows = reader.read(TYPE, now - 600, now + 600).to_pylist()
        assert {r["id"]: r["received_dc"] for r in rows} == expected
        # Per manifest, the DCs' counts add up to the bucket's; over all, to each DC's events.
        manifests = [
            m
            for s in reader.layout.closed_bucket_starts(TYPE)
            if (m := reader.manifest(TYPE, s)) is not None
        ]
        totals = {"dcA": 0, "dcB": 0}
        worst = {"dcA": 0.0, "dcB": 0.0}
        for m in manifests:
            assert sum(d.events for d in m.dcs.values()) == m.events, m
            for name, d in m.dcs.items():
                totals[name] += d.events
                worst[name] = max(worst[name], d.transfer_delay_max_secs)
                assert 0 <= d.transfer_delay_p50_secs <= d.transfer_delay_p99_secs
                assert d.transfer_delay_p99_secs <= d.transfer_delay_max_secs
        assert totals == {"dcA": 30, "dcB": 25}
        # The cut-off DC's events reached their buckets at least 3 s after it received
        # them; the linked DC's did not wait for the link.
        assert worst["dcB"] >= 3.0 > worst["dcA"], worst
        cut_rows = [r for r in rows if r["id"].startswith("c-")]
        assert all((r["published_at"] - r["received_at"]).total_seconds() >= 3 for r in cut_rows)
        return settings, totals, now
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in (*direct.values(), central):
            await conn.close()


def test_each_event_keeps_its_dc_and_manifests_count_transfer_delay_per_dc(tmp_path: Path):
    with Topology(tmp_path / "topology") as t:
        asyncio.run(provision(t, tmp_path))
        settings, totals, now = asyncio.run(_run(t, tmp_path))
        out = CliRunner().invoke(
            cli,
            ["--data-dir", str(settings.data_dir), "buckets", "--type", TYPE],
            env={"COURIER_BUCKET_WIDTH_SECS": str(settings.bucket_width_secs)},
        )
        assert out.exit_code == 0 and "dcA " in out.output and "dcB " in out.output, out.output
        out = CliRunner().invoke(
            cli,
            [
                "--data-dir",
                str(settings.data_dir),
                "sql",
                f"select received_dc || '=' || count(*) from {TYPE} group by received_dc",
            ],
            env={"COURIER_BUCKET_WIDTH_SECS": str(settings.bucket_width_secs)},
        )
        assert out.exit_code == 0 and "dcA=30" in out.output and "dcB=25" in out.output, out.output
        # courier audit --json carries each closed bucket's per-DC counts from its manifest.
        args = ["--nats-url", t.central.url, "--data-dir", str(settings.data_dir)]
        out = CliRunner().invoke(
            cli,
            [*args, "audit", "--json", "--type", TYPE, "--from", iso_utc(now - 60)],
            env={
                "COURIER_BUCKET_WIDTH_SECS": str(settings.bucket_width_secs),
                "COURIER_DC__DOMAINS": json.dumps(list(t.domains)),
            },
        )
        audited = {"dcA": 0, "dcB": 0}
        for b in json.loads(out.output)["buckets"]:
            for name, d in b["dcs"].items():
                audited[name] += d["events"]
        assert audited == totals, out.output

"""One DC: events stored straight into the stream carry ``dc.local_name`` (or no DC)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from courier.model import BucketKey
from courier.settings import Settings
from courier.storage import BucketReader, Layout
from courier.storage.store import LocalStore
from courier_testing import FAST, Pipeline, example_definitions, open_pipeline
from staging_testing import close_staged, stage


async def _close_three(p: Pipeline) -> tuple[list[str | None], BucketKey]:
    ids = ["e1", "e2", "e3"]
    seq = await p.publish("PlaySong", [{"track_id": i, "ms_played": 1} for i in ids], ids)
    key = BucketKey("PlaySong", await p.bucket_of("PlaySong", seq))
    p.start_writer()
    await p.start_closer()
    reader = p.reader

    def closed_rows() -> int:
        return reader.read("PlaySong", key.start, key.start + 1).num_rows

    await p.wait_until(lambda: closed_rows() == 3, what="the bucket closed with 3 events")
    table = reader.read("PlaySong", key.start, key.start + 1)
    return table.column("received_dc").to_pylist(), key


async def test_a_one_dc_deployment_names_its_events_by_local_name(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(**FAST, dc={"local_name": "eu-west"})
    p = await open_pipeline(settings, example_definitions("PlaySong"))
    try:
        dcs, key = await _close_three(p)
        assert dcs == ["eu-west"] * 3
        manifest = p.reader.manifest("PlaySong", key.start)
        assert manifest is not None and list(manifest.dcs) == ["eu-west"]
        here = manifest.dcs["eu-west"]
        assert here.events == manifest.events == 3
        # Here the "transfer" is the receive-to-store time of one server: never negative.
        assert 0 <= here.transfer_delay_p50_secs <= here.transfer_delay_max_secs < 60
    finally:
        await p.stop()
        await p.transport.close()


async def test_without_dc_names_events_have_no_dc_and_manifests_count_none(
    pipeline: Pipeline,
) -> None:
    dcs, key = await _close_three(pipeline)
    assert dcs == [None] * 3
    manifest = pipeline.reader.manifest("PlaySong", key.start)
    assert manifest is not None and manifest.events == 3 and manifest.dcs == {}


async def test_staging_files_from_before_received_dc_close_beside_new_ones(tmp_path: Path) -> None:
    width = 10
    key = BucketKey("PlaySong", 1_795_000_000)
    layout = Layout(LocalStore(tmp_path / "root"), width)
    stage(layout, key, ["old-1", "old-2"], 1, "w1", without_received_dc=True)
    stage(layout, key, ["new-1", "new-2", "new-3"], 3, "w1", received_dc="dcA")
    result = await close_staged(layout, key, key.start + width + 5, tmp_path / "scratch")
    m = result.manifest
    assert (m.format_version, m.events, list(m.dcs), m.dcs["dcA"].events) == (2, 5, ["dcA"], 3)
    rows = BucketReader(layout.store, width).read("PlaySong", key.start, key.start + 1)
    assert dict(zip(rows["id"].to_pylist(), rows["received_dc"].to_pylist(), strict=True)) == {
        "old-1": None,
        "old-2": None,
        "new-1": "dcA",
        "new-2": "dcA",
        "new-3": "dcA",
    }

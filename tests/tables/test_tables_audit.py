"""The audit reports buckets that are closed but not yet in their Iceberg table."""

from __future__ import annotations

import time
from pathlib import Path

from tables_testing import WIDTH, H, T, close, play_song, rows, settings

from courier.audit import GatewayCounts, StreamCounts, TypeView, build_report
from courier.audit.report import DeliveredScanner
from courier.model import BucketKey
from courier.schema import TypeSettings
from courier.storage import Layout
from courier.tables import BucketTables, TableStatus

V1 = play_song(1)


def _view() -> TypeView:
    return TypeView(
        name=T,
        settings=TypeSettings(),
        grace_secs=10,
        enabled_at=H,
        writer_watermark=H + 10 * WIDTH,
        oldest_unacked_at=None,
        writer_pending=0,
        audit_watermark=H + 10 * WIDTH,
        audit_pending=0,
        stream=StreamCounts(last_seq=3, spill_secs=2.0, buckets={}),
        gateway=GatewayCounts(buckets={}),
    )


def test_the_audit_lists_closed_buckets_missing_from_the_table_until_they_are_committed(
    tmp_path: Path,
):
    s = settings(tmp_path)
    layout = Layout(s.data_dir, WIDTH)
    keys = [BucketKey(T, H + i * WIDTH) for i in range(3)]
    close(layout, keys[0], [rows(V1, ["a"], H + 1)], closed_at=time.time())
    close(layout, keys[1], [rows(V1, ["b"], H + WIDTH + 1)], closed_at=time.time())
    BucketTables(s, layout).sync(keys[0], V1.arrow_schema)

    def report():
        return build_report(
            [_view()],
            DeliveredScanner(layout),
            s,
            start=H,
            end=H + 3 * WIDTH,
            now=H + 10 * WIDTH,
            tables=TableStatus(s, layout),
        )

    first = report()
    assert [b.in_table for b in first.buckets] == [True, False, None]  # the third is open
    assert [b.bucket_start for b in first.not_in_table()] == [keys[1].start]
    assert first.to_json()["not_in_table"] == 1

    BucketTables(s, layout).sync(keys[1], V1.arrow_schema)
    assert report().not_in_table() == []


def test_an_unreachable_catalog_makes_the_table_state_unknown_not_missing(tmp_path: Path):
    s = settings(tmp_path, tables={"catalog_uri": f"sqlite:///{tmp_path}/missing/dir/c.db"})
    layout = Layout(s.data_dir, WIDTH)
    close(layout, BucketKey(T, H), [rows(V1, ["a"], H + 1)], closed_at=time.time())
    r = build_report(
        [_view()],
        DeliveredScanner(layout),
        s,
        start=H,
        end=H + WIDTH,
        now=H + 10 * WIDTH,
        tables=TableStatus(s, layout),
    )
    assert [b.in_table for b in r.buckets] == [None] and r.not_in_table() == []

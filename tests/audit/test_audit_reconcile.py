"""The auditor against a real pipeline: clean runs reconcile, injected faults are flagged."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from audit_testing import (
    audit_bucket,
    audit_settings,
    open_audited_pipeline,
    settled,
    start_auditor,
    wait_for_verdict,
)

from courier.audit import AuditStore, recount
from courier.audit.store import StreamCounts
from courier.model import BucketKey
from courier.transport import AUDIT_KV, stream_name
from courier_testing import eventually


def _payloads(n: int) -> list[dict[str, object]]:
    return [{"track_id": f"t{i}", "ms_played": i} for i in range(n)]


@pytest.fixture
async def audited(make_settings):
    p = await open_audited_pipeline(audit_settings(make_settings))
    try:
        yield p
    finally:
        await p.stop()
        await p.transport.close()


async def _publish_in_one_bucket(p, batches: list[list[str]]) -> tuple[int, list[int]]:
    """Publish each list of ids as one message, all in one bucket; (bucket, seqs)."""
    width = p.settings.bucket_width_secs
    # Start in the first quarter of a bucket: three quarters of it (1.5 s) for a few
    # fsync'd publishes, which holds on a busy machine.
    while time.time() % width > width / 4:
        await _sleep(0.05)
    seqs = [await p.publish("PlaySong", _payloads(len(ids)), ids) for ids in batches]
    buckets = {await p.bucket_of("PlaySong", seq) for seq in seqs}
    assert len(buckets) == 1, f"the messages were stored across a bucket boundary: {buckets}"
    return buckets.pop(), seqs


async def _sleep(secs: float) -> None:
    import asyncio

    await asyncio.sleep(secs)


async def test_a_clean_run_reconciles_exactly_with_duplicates_removed(audited):
    ids = [f"e{i}" for i in range(20)]
    # The second message repeats five ids, like a client retry: the closer removes them.
    start, _ = await _publish_in_one_bucket(audited, [ids, ids[:5]])
    await start_auditor(audited)
    audited.start_writer()
    await audited.start_closer()
    b = await wait_for_verdict(audited, "PlaySong", start, settled)
    assert b.verdict == "ok", b.problems
    assert (b.in_stream, b.delivered, b.duplicates_removed) == (25, 20, 5)
    assert b.completeness_percent == 100.0


async def test_a_bucket_file_removed_after_the_close_is_reported_as_lost(audited):
    start, _ = await _publish_in_one_bucket(audited, [[f"e{i}" for i in range(10)]])
    await start_auditor(audited)
    audited.start_writer()
    await audited.start_closer()
    assert (await wait_for_verdict(audited, "PlaySong", start, settled)).verdict == "ok"
    bucket_dir = audited.reader.layout.bucket_dir(BucketKey("PlaySong", start))
    (bucket_dir / "part-00000.parquet").unlink()
    b = await audit_bucket(audited, "PlaySong", start)
    assert b is not None
    assert b.verdict == "mismatch"
    assert [p.kind for p in b.problems] == ["lost_from_bucket"]
    assert b.problems[0].amount == 10
    assert b.completeness_percent == 0.0


async def test_a_message_deleted_from_the_stream_before_delivery_is_reported_as_lost(audited):
    start, seqs = await _publish_in_one_bucket(
        audited, [[f"a{i}" for i in range(4)], [f"b{i}" for i in range(6)]]
    )
    await start_auditor(audited)
    store = AuditStore(await audited.transport.key_value(AUDIT_KV))

    async def counted() -> bool:
        return (await store.stream_counts("PlaySong"))[0].events(start) >= 10

    await eventually(counted, what="the auditor counting the stream", timeout_secs=10)
    # The stream loses a message the writer never read (e.g. a corrupted block).
    await audited.transport.js.delete_msg(stream_name("PlaySong"), seqs[0])
    audited.start_writer()
    await audited.start_closer()
    b = await wait_for_verdict(audited, "PlaySong", start, settled)
    assert b.verdict == "mismatch"
    assert [(p.kind, p.amount) for p in b.problems] == [("lost_before_bucket", 4)]
    assert (b.in_stream, b.delivered) == (10, 6)


async def test_a_duplicate_injected_into_a_closed_bucket_is_reported(audited):
    start, _ = await _publish_in_one_bucket(audited, [[f"e{i}" for i in range(10)]])
    await start_auditor(audited)
    audited.start_writer()
    await audited.start_closer()
    assert (await wait_for_verdict(audited, "PlaySong", start, settled)).verdict == "ok"
    part = audited.reader.layout.bucket_dir(BucketKey("PlaySong", start)) / "part-00000.parquet"
    table = pq.read_table(part)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), part)
    b = await audit_bucket(audited, "PlaySong", start)
    assert b is not None
    assert b.verdict == "mismatch"
    assert [(p.kind, p.amount) for p in b.problems] == [("duplicates_in_bucket", 1)]


async def test_a_deliberately_delayed_close_is_reported_as_a_timeliness_breach(make_settings):
    p = await open_audited_pipeline(audit_settings(make_settings, slo_normal_close_delay_secs=2.0))
    try:
        start, _ = await _publish_in_one_bucket(p, [["late-1"]])
        await start_auditor(p)
        p.start_writer()
        width = p.settings.bucket_width_secs
        # The closer comes up only 3 s after the bucket ended: 1 s past PlaySong's SLO.
        while time.time() < start + width + 3.0:
            await _sleep(0.1)
        await p.start_closer()
        b = await wait_for_verdict(p, "PlaySong", start, settled)
        assert b.verdict == "late"
        assert b.state == "late"
        (problem,) = b.problems
        assert problem.kind == "late"
        assert b.late_by_secs is not None and b.late_by_secs >= 1.0
        assert "later than the normal tier's 2s" in problem.message
    finally:
        await p.stop()
        await p.transport.close()


async def test_a_recount_rebuilds_the_counts_from_the_retained_stream(audited):
    start, _ = await _publish_in_one_bucket(
        audited, [[f"a{i}" for i in range(3)], [f"b{i}" for i in range(4)]]
    )
    store = AuditStore(await audited.transport.key_value(AUDIT_KV))
    counts = await recount(audited.settings, audited.transport, store, "PlaySong")
    assert counts.events(start) == 7
    assert counts.last_seq == 2
    # The live auditor then starts after the recount and does not count them again:
    # once it has counted a message published after the recount, the total is 7 + 2.
    await start_auditor(audited)
    after = await audited.publish("PlaySong", _payloads(2), ["c0", "c1"])

    async def counted_through_the_new_message() -> StreamCounts | None:
        stored, _ = await store.stream_counts("PlaySong")
        return stored if stored.last_seq >= after else None

    stored = await eventually(
        counted_through_the_new_message, what="the live auditor counting the next message"
    )
    assert sum(row[1] for row in stored.buckets.values()) == 7 + 2
    assert stored.events(start) >= 7

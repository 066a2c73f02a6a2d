"""Re-closing a closed bucket from the stream (repair): a lost part file comes back as a
new manifest version, exactly once across buckets; refused when the stream lost data."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pytest_asyncio

from courier.closer import Catalog
from courier.closer.reclose import BucketRecloser
from courier.errors import RepairRefusedError
from courier.model import BucketKey, bucket_start, iso_utc
from courier.repair import RepairLog
from courier.settings import settings_env
from courier.storage import ManifestFile, read_manifest, write_manifest, write_parquet_atomic
from courier.transport import CATALOG_KV, REPAIRS_KV
from courier.transport.names import CLOSED_STREAM, stream_name
from courier.transport.server import EmbeddedNats
from courier_testing import FAST, Pipeline, example_definitions, open_pipeline, settings_for

T = "PlaySong"
#: Every test shares the module's event loop: the prepared pipelines' connections live there.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def _payloads(n: int) -> list[dict[str, object]]:
    return [{"track_id": "t", "ms_played": i} for i in range(n)]


async def _at_start_of_a_bucket(width: int) -> int:
    """Wait until the next bucket begins; its start."""
    start = bucket_start(time.time(), width) + width
    await asyncio.sleep(max(0.0, start - time.time()) + 0.05)
    return start


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def _prepared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[tuple[Pipeline, int]]]:
    """Bucket H: 10 + 5 events in two messages and 3 retried ids; H+1: one id retried from H
    and 3 new ones. Both closed by a real writer and closer.

    Each test changes the buckets it gets, so each gets its own pipeline (nats-server
    and data dir); they are all built at once, because building one is 6-8 s of
    waiting for buckets to end and next to no work.
    """
    wanted = sum(
        1
        for item in request.session.items
        if item.module is request.module and "closed" in getattr(item, "fixturenames", ())
    )
    servers: list[EmbeddedNats] = []
    pipelines: list[Pipeline] = []
    try:
        for i in range(wanted):
            root = tmp_path_factory.mktemp(f"reclose-{i}")
            server = EmbeddedNats(root / "nats", port=0)
            server.start()
            servers.append(server)
            settings = settings_for(root / "data", server.url, **FAST)
            pipelines.append(await open_pipeline(settings, example_definitions(T)))
        width = pipelines[0].settings.bucket_width_secs if pipelines else 1
        h = await _at_start_of_a_bucket(width)
        await asyncio.gather(*(_publish_h(p) for p in pipelines))
        assert await _at_start_of_a_bucket(width) == h + width
        await asyncio.gather(
            *(p.publish(T, _payloads(4), ["a5", "c0", "c1", "c2"]) for p in pipelines)
        )
        for p in pipelines:
            p.start_writer()
            await p.start_closer()
        for i, p in enumerate(pipelines):
            await p.wait_until(
                lambda p=p: p.reader.manifest(T, h + width) is not None,
                30,
                what=f"bucket H+1 of prepared pipeline {i} closed",
            )
        # From here on the tests act on the closed buckets; a service that does not
        # stop fails here, by name, rather than hanging the module.
        try:
            await asyncio.wait_for(asyncio.gather(*(p.stop() for p in pipelines)), 60)
        except TimeoutError:
            raise AssertionError("the prepared pipelines did not stop within 60 s") from None
        yield [(p, h) for p in pipelines]
    finally:
        for p in pipelines:
            await p.stop()
            await p.transport.close()
        for server in servers:
            server.stop()


async def _publish_h(p: Pipeline) -> None:
    await p.publish(T, _payloads(10), [f"a{i}" for i in range(10)])
    await p.publish(T, _payloads(5), [f"b{i}" for i in range(5)])
    await p.publish(T, _payloads(3), ["a0", "a1", "a2"])


@pytest.fixture
def closed(_prepared: list[tuple[Pipeline, int]]) -> tuple[Pipeline, int]:
    """A pipeline of its own with buckets H and H+1 closed (see ``_prepared``), and H."""
    return _prepared.pop()


async def _recloser(p: Pipeline, **kw) -> BucketRecloser:
    catalog = Catalog(await p.transport.key_value(CATALOG_KV), "repair", 30.0)
    return BucketRecloser(p.settings, p.transport, catalog, **kw)


def _ids(p: Pipeline, start: int) -> list[str]:
    return p.reader.read(T, start, start + 1).column("id").to_pylist()


async def test_a_bucket_that_lost_its_part_file_is_rebuilt_from_the_stream_as_version_2(closed):
    p, h = closed
    key = BucketKey(T, h)
    before = read_manifest(p.reader.layout.manifest_path(key))
    assert before.events == 15 and before.version == 1
    next_ids = _ids(p, h + p.settings.bucket_width_secs)
    assert sorted(next_ids) == ["c0", "c1", "c2"]
    for part in p.reader.layout.bucket_dir(key).glob("part-*.parquet"):
        part.unlink()  # lost on storage

    result = await (await _recloser(p)).reclose(
        key, p.compiled[T], repair_id="r1", reason="part lost", now=time.time()
    )

    after = read_manifest(p.reader.layout.manifest_path(key))
    assert after == result.manifest
    assert after.version == 2 and after.events == 15
    assert after.repair is not None and after.repair.previous_events == 15
    assert after.repair.previous_manifest == "_SUCCESS.v1"
    assert read_manifest(p.reader.layout.bucket_dir(key) / "_SUCCESS.v1") == before
    assert sorted(_ids(p, h)) == sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(5)])
    assert sorted(_ids(p, h + p.settings.bucket_width_secs)) == next_ids  # untouched
    names = sorted(x.name for x in p.reader.layout.bucket_dir(key).glob("part-*"))
    assert names == [f.name for f in after.files] == ["part-v2-00000.parquet"]
    catalog = Catalog(await p.transport.key_value(CATALOG_KV), "repair", 30.0)
    entry = await catalog.get(key)
    assert entry is not None and entry[0].events == 15
    notices = await _closed_notices(p)
    assert [(n["version"], n["events"]) for n in notices if n["bucket_start_epoch"] == h] == [
        (1, 15),
        (2, 15),
    ]


async def _closed_notices(p: Pipeline) -> list[dict[str, object]]:
    """Every close notice on ``courier.closed.PlaySong``, in order."""
    info = await p.transport.js.stream_info(CLOSED_STREAM)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await p.transport.js.get_msg(CLOSED_STREAM, seq)
        if msg.subject == f"courier.closed.{T}" and msg.data:
            doc = json.loads(msg.data)
            doc.setdefault("version", 1)
            out.append(doc)
    return out


async def test_a_re_close_never_repeats_an_id_the_next_bucket_holds(closed):
    p, h = closed
    width = p.settings.bucket_width_secs
    key = BucketKey(T, h)
    # H+1 is re-closed: a5 (published in H+1, a retry of an H event) must stay out.
    result = await (await _recloser(p)).reclose(
        BucketKey(T, h + width), p.compiled[T], repair_id="r2", reason="check", now=time.time()
    )
    assert result.manifest.events == 3
    assert result.manifest.duplicates_dropped_previous_bucket == 1
    all_ids = _ids(p, h) + _ids(p, h + width)
    assert len(all_ids) == len(set(all_ids)) == 18
    assert read_manifest(p.reader.layout.manifest_path(key)).version == 1


async def test_a_crash_during_a_re_close_is_repaired_by_running_it_again(closed):
    p, h = closed
    key = BucketKey(T, h)

    def crash_after(step: int):
        def hook(at: int) -> None:
            if at == step:
                raise RuntimeError(f"crash after step {at}")

        return hook

    for step in (3, 4):
        with pytest.raises(RuntimeError):
            await (await _recloser(p, after_step=crash_after(step))).reclose(
                key, p.compiled[T], repair_id="r3", reason="x", now=1.0e9
            )
    result = await (await _recloser(p)).reclose(
        key, p.compiled[T], repair_id="r3", reason="x", now=1.0e9
    )
    assert result.manifest.version == 2 and result.manifest.events == 15
    names = sorted(x.name for x in p.reader.layout.bucket_dir(key).glob("part-*"))
    assert names == ["part-v2-00000.parquet"]  # version 1's part went at step 5
    assert len(_ids(p, h)) == 15


async def test_a_re_close_is_refused_when_the_stream_lost_a_message_of_the_bucket(closed):
    p, h = closed
    key = BucketKey(T, h)
    before = p.reader.layout.manifest_path(key).read_bytes()
    first = read_manifest(p.reader.layout.manifest_path(key)).stream_seq_ranges[0].first
    await p.transport.js.delete_msg(stream_name(T), first)
    with pytest.raises(RepairRefusedError, match="no longer retains 1 of the 3 messages"):
        await (await _recloser(p)).reclose(
            key, p.compiled[T], repair_id="r4", reason="x", now=time.time()
        )
    assert p.reader.layout.manifest_path(key).read_bytes() == before
    assert len(_ids(p, h)) == 15


async def test_an_open_bucket_is_not_re_closed(closed):
    p, _ = closed
    far = bucket_start(time.time(), p.settings.bucket_width_secs) + 3600
    with pytest.raises(RepairRefusedError, match="only closed buckets are re-closed"):
        await (await _recloser(p)).reclose(
            BucketKey(T, far), p.compiled[T], repair_id="r5", reason="x", now=time.time()
        )


def _courier(p: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(p.settings)}
    return subprocess.run(
        [sys.executable, "-m", "courier.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_courier_repair_reclose_rebuilds_the_bucket_and_records_the_repair(closed):
    p, h = closed
    key = BucketKey(T, h)
    for part in p.reader.layout.bucket_dir(key).glob("part-*.parquet"):
        part.unlink()
    done = await asyncio.to_thread(
        _courier, p, "repair", "reclose", T, iso_utc(h + 0.5), "--reason", "disk lost a file"
    )
    assert done.returncode == 0, done.stderr
    assert f"re-closed {key.label()} as version 2: 15 events (was 15)" in done.stdout
    assert len(_ids(p, h)) == 15
    manifest = read_manifest(p.reader.layout.manifest_path(key))
    assert manifest.repair is not None and manifest.repair.reason == "disk lost a file"
    (record,) = await RepairLog(await p.transport.key_value(REPAIRS_KV)).list()
    assert (record.operation, record.outcome, record.event_type) == ("reclose", "done", T)
    assert record.principal.startswith("local:") and record.id == manifest.repair.repair_id
    assert record.counts["events_after"] == 15

    refused = await asyncio.to_thread(
        _courier, p, "repair", "reclose", "NoSuchType", iso_utc(h), "--reason", "x"
    )
    assert refused.returncode == 1
    assert "re-close refused: 'NoSuchType' is not a registered event type" in refused.stderr


async def test_a_re_close_that_would_drop_an_id_the_bucket_holds_is_refused(closed):
    p, h = closed
    key = BucketKey(T, h)
    layout = p.reader.layout
    # Version 1 holds an id no retained message carries (as if its message no longer
    # decoded with the current schema): rebuilding would lose it.
    part = layout.bucket_dir(key) / "part-00000.parquet"
    ghost = pq.read_table(part).slice(0, 1)
    ghost = ghost.set_column(0, "id", pa.array(["ghost"]))
    info = write_parquet_atomic(layout.bucket_dir(key) / "part-00001.parquet", ghost)
    manifest = read_manifest(layout.manifest_path(key))
    manifest.files.append(
        ManifestFile(name=info.name, bytes=info.bytes, rows=info.rows, sha256=info.sha256)
    )
    write_manifest(layout.manifest_path(key), manifest)
    before = layout.manifest_path(key).read_bytes()
    with pytest.raises(RepairRefusedError, match="would drop 1 ids that version 1 holds"):
        await (await _recloser(p)).reclose(
            key, p.compiled[T], repair_id="r6", reason="x", now=time.time()
        )
    assert layout.manifest_path(key).read_bytes() == before
    assert sorted(x.name for x in layout.bucket_dir(key).glob("part-*")) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert "ghost" in _ids(p, h)


async def test_a_re_close_never_repeats_an_id_a_bucket_several_buckets_earlier_holds(
    make_settings,
):
    # The dedup horizon (G2) holds for a re-close as for a close: a retry published three
    # buckets after its first copy stays out of the rebuilt version too.
    p = await open_pipeline(make_settings(**FAST), example_definitions(T))
    try:
        width = p.settings.bucket_width_secs
        h = await _at_start_of_a_bucket(width)
        await p.publish(T, _payloads(5), [f"a{i}" for i in range(5)])
        later = h + 3 * width
        await asyncio.sleep(max(0.0, later - time.time()) + 0.05)
        await p.publish(T, _payloads(3), ["a1", "a3", "d0"])
        p.start_writer()
        await p.start_closer()
        await p.wait_until(lambda: p.reader.manifest(T, later) is not None, 30)
        key = BucketKey(T, later)
        assert _ids(p, later) == ["d0"]
        assert (
            read_manifest(p.reader.layout.manifest_path(key)).duplicates_dropped_other_buckets == 2
        )
        for part in p.reader.layout.bucket_dir(key).glob("part-*.parquet"):
            part.unlink()  # lost on storage
        result = await (await _recloser(p)).reclose(
            key, p.compiled[T], repair_id="r9", reason="part lost", now=time.time()
        )
        assert result.manifest.version == 2 and _ids(p, later) == ["d0"]
        assert result.manifest.duplicates_dropped_other_buckets == 2
        assert sorted(_ids(p, h)) == [f"a{i}" for i in range(5)]
    finally:
        await p.stop()
        await p.transport.close()


async def test_a_re_close_switches_nothing_when_the_manifest_changed_meanwhile(closed):
    p, h = closed
    key = BucketKey(T, h)
    path = p.reader.layout.manifest_path(key)
    theirs = read_manifest(path)
    theirs.closed_at = "2000-01-01T00:00:00.000Z"  # what another repair wrote meanwhile

    def someone_else_writes_the_manifest(step: int) -> None:
        if step == 3:  # version 2's parts are written, the switch comes next
            write_manifest(path, theirs)

    recloser = await _recloser(p, after_step=someone_else_writes_the_manifest)
    with pytest.raises(RepairRefusedError, match="changed while"):
        await recloser.reclose(key, p.compiled[T], repair_id="r9", reason="x", now=time.time())
    assert read_manifest(path) == theirs, "the compare-and-swap kept the other write"
    assert len(_ids(p, h)) == 15

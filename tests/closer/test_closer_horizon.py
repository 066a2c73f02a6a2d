"""The dedup horizon (G2): a copy of an id is dropped against every closed bucket of its
type within the horizon, however many buckets later it arrives; beyond the horizon it is
delivered again and counted."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from courier.closer import BucketCloser, Catalog
from courier.closer.horizon import DedupHorizon, write_index_file
from courier.errors import ConfigError
from courier.model import BucketKey
from courier.schema import compile_type
from courier.settings import CloserSettings, load_settings
from courier.storage import BucketReader, Layout, write_parquet_atomic
from courier.transport import MemoryKeyValue
from courier_testing import example_definitions

WIDTH = 10
DAY = 86_400
START = 1_795_000_000 - 1_795_000_000 % DAY
T = "PlaySong"


def _compiled():
    d = example_definitions(T)[0]
    return compile_type(d.name, d.avro, 1, d.settings)


def v7(at: float, n: int) -> str:
    """A UUIDv7 whose embedded time is ``at`` (distinct per ``n``)."""
    ms = int(at * 1000)
    value = (ms << 80) | (0x7 << 76) | (0b10 << 62) | n
    return str(uuid.UUID(int=value))


class Stack:
    """A closer over a data root, with staging files written as the writer writes them."""

    def __init__(self, root: Path, horizon_secs: int = 7 * DAY) -> None:
        self.layout = Layout(root, WIDTH)
        self.compiled = _compiled()
        self.closer = BucketCloser(
            self.layout,
            Catalog(MemoryKeyValue(), "c", 60.0),
            CloserSettings(dedup_horizon_secs=horizon_secs),
            lambda k, b: None,
        )
        self.seq = 0

    def stage(self, start: int, ids: list[str]) -> None:
        """A staging file of bucket ``start``: ids published one second into it."""
        ct = self.compiled
        dec = msgspec.json.Decoder(ct.event_struct)
        events = [
            dec.decode(
                msgspec.json.encode({"type": T, "id": i, "data": {"track_id": "t", "ms_played": 1}})
            )
            for i in ids
        ]
        body = ct.encode_stored(events, ids, None, dt.datetime.fromtimestamp(start, dt.UTC))
        published = pa.array([(start + 1) * 1_000_000] * len(ids), pa.int64()).cast(
            pa.timestamp("us", tz="UTC")
        )
        table = ct.decode_stored(body, published)
        seqs = range(self.seq + 1, self.seq + 1 + len(ids))
        table = table.append_column("_seq", pa.array(seqs, pa.uint64()))
        table = table.append_column("_idx", pa.array([0] * len(ids), pa.uint32()))
        key = BucketKey(T, start)
        write_parquet_atomic(self.layout.staging_file(key, "w", seqs[0], seqs[-1]), table)
        self.seq += len(ids)

    async def close(self, start: int):
        result = await self.closer.close(BucketKey(T, start), self.compiled, start + WIDTH + 5)
        assert result is not None
        return result.manifest

    def ids(self, start: int) -> list[str]:
        return (
            BucketReader(self.layout.root, WIDTH).read(T, start, start + 1).column("id").to_pylist()
        )


@pytest.mark.parametrize("later", [1, 2, 5])
async def test_a_retry_that_lands_buckets_later_is_delivered_once(tmp_path, later):
    s = Stack(tmp_path)
    first = [v7(START + 1, i) for i in range(20)] + [f"tailer-{i}" for i in range(5)]
    s.stage(START, first)
    await s.close(START)
    for k in range(1, later):  # buckets in between, with other events
        s.stage(START + k * WIDTH, [v7(START + k * WIDTH, 100 + k)])
        await s.close(START + k * WIDTH)
    retry = START + later * WIDTH
    s.stage(retry, [*first[:10], first[-1], v7(retry, 999)])
    m = await s.close(retry)
    assert s.ids(retry) == [v7(retry, 999)]
    assert (m.events, m.input_events, m.duplicates_dropped) == (1, 12, 11)
    if later == 1:
        assert (m.duplicates_dropped_previous_bucket, m.duplicates_dropped_other_buckets) == (11, 0)
    else:
        assert (m.duplicates_dropped_previous_bucket, m.duplicates_dropped_other_buckets) == (0, 11)
    assert m.duplicates_dropped_within_bucket == 0


async def test_a_retry_a_day_later_across_thousands_of_small_buckets_is_delivered_once(tmp_path):
    s = Stack(tmp_path)
    first = [v7(START + 1, i) for i in range(50)] + [f"log-{i}" for i in range(50)]
    s.stage(START, first)
    await s.close(START)
    # A day of 10-second buckets: 8,640 of them, every 432nd with events (the rest empty).
    for k in range(1, DAY // WIDTH, 432):
        at = START + k * WIDTH
        s.stage(at, [v7(at, k), f"log-{k}-x"])
        await s.close(at)
    later = START + DAY
    s.stage(later, [*first, first[0], v7(later, 1)])
    m = await s.close(later)
    assert s.ids(later) == [v7(later, 1)]
    # Both copies of first[0] count against the closed bucket that holds the id.
    assert m.duplicates_dropped_other_buckets == 101
    assert m.duplicates_dropped_within_bucket == 0


async def test_a_redelivered_message_of_an_old_closed_bucket_is_dropped_when_it_is_closed_again(
    tmp_path,
):
    # `courier repair redeliver` makes the writer stage a closed bucket's messages again;
    # the next close takes them as skewed rows and must not deliver them twice, also when
    # the bucket they came from is many buckets old.
    s = Stack(tmp_path)
    ids = [v7(START + 1, i) for i in range(10)]
    s.stage(START, ids)
    await s.close(START)
    for k in range(1, 6):
        s.stage(START + k * WIDTH, [v7(START + k * WIDTH, 50 + k)])
        await s.close(START + k * WIDTH)
    s.stage(START, ids)  # redelivered into its own (closed) bucket's staging directory
    s.stage(START + 6 * WIDTH, [v7(START + 6 * WIDTH, 7)])
    m = await s.close(START + 6 * WIDTH)
    assert s.ids(START + 6 * WIDTH) == [v7(START + 6 * WIDTH, 7)]
    assert m.duplicates_dropped_other_buckets == 10 and m.skewed_in == 0


async def test_an_id_older_than_the_horizon_is_delivered_again_and_counted(tmp_path):
    s = Stack(tmp_path, horizon_secs=3600)
    ids = [v7(START + 1, i) for i in range(4)]
    s.stage(START, ids)
    await s.close(START)
    later = START + 2 * 3600  # two hours later: the first bucket is outside a 1 h horizon
    s.stage(later, ids)
    m = await s.close(later)
    assert sorted(s.ids(later)) == sorted(ids)
    assert m.duplicates_dropped == 0 and m.ids_older_than_horizon == 4


async def test_a_bucket_closed_without_an_index_gets_one_and_its_ids_still_count(tmp_path):
    s = Stack(tmp_path)
    ids = [v7(START + 1, i) for i in range(5)]
    s.stage(START, ids)
    await s.close(START)
    index = DedupHorizon(s.layout, 7 * DAY).index_path(BucketKey(T, START))
    assert pq.read_table(index).num_rows == 5
    index.unlink()  # as a bucket closed by a Courier before the horizon
    fresh = Stack(tmp_path)  # a new closer process
    fresh.seq = s.seq
    fresh.stage(START + 3 * WIDTH, ids[:2])
    m = await fresh.close(START + 3 * WIDTH)
    assert m.events == 0 and m.duplicates_dropped_other_buckets == 2
    assert index.exists()


async def test_an_index_entry_without_the_id_in_the_bucket_never_drops_an_event(tmp_path):
    # A stale or wrong index (a crash between index and manifest, a hash collision) costs
    # a read, never an event: every hit is checked against the bucket's own parts.
    s = Stack(tmp_path)
    s.stage(START, [v7(START + 1, 0)])
    await s.close(START)
    horizon = DedupHorizon(s.layout, 7 * DAY)
    victim = v7(START + 2 * WIDTH, 5)
    import duckdb

    from courier.closer.horizon import keys_query

    con = duckdb.connect()
    wrong = con.sql(
        f"SELECT p, h FROM ({keys_query(f'(SELECT {victim!r} AS id)')})"
    ).to_arrow_table()
    write_index_file(horizon.index_path(BucketKey(T, START)), wrong)
    s.stage(START + 2 * WIDTH, [victim])
    m = await s.close(START + 2 * WIDTH)
    assert s.ids(START + 2 * WIDTH) == [victim] and m.duplicates_dropped == 0


def test_a_horizon_shorter_than_the_stream_retention_is_refused():
    with pytest.raises(ConfigError, match="dedup_horizon_secs"):
        load_settings(closer={"dedup_horizon_secs": 3600}, nats={"stream_max_age_secs": 7200})


async def test_the_index_costs_a_few_bytes_per_id(tmp_path):
    s = Stack(tmp_path)
    import random

    rng = random.Random(3)
    ids = [
        str(
            uuid.UUID(
                int=(int((START + i / 1000) * 1000) << 80)
                | (0x7 << 76)
                | (0b10 << 62)
                | rng.getrandbits(62)
            )
        )
        for i in range(20_000)
    ]
    s.stage(START, ids)
    await s.close(START)
    size = DedupHorizon(s.layout, 7 * DAY).index_path(BucketKey(T, START)).stat().st_size
    assert size / len(ids) < 4


def test_id_keys_are_keys_query_s_for_every_kind_of_id():
    """The numpy reading of canonical UUIDv7 text and the SQL definition agree, and every
    other id (the tailer's, malformed, non-ASCII, upper case, null) goes by the SQL one."""
    import random

    import duckdb

    from courier.closer.horizon import id_keys, keys_query

    rng = random.Random(7)
    canonical = [str(uuid.UUID(int=(rng.getrandbits(128) & ~(0xF << 76)) | (0x7 << 76)))]
    canonical += [v7(START + i * 977.3, rng.getrandbits(62)) for i in range(500)]
    canonical += ["ffffffff-ffff-7fff-ffff-ffffffffffff", "00000000-0000-7000-0000-000000000000"]
    odd = [
        "tailer-1",
        "",
        "ABCDEF01-2345-7ABC-8DEF-0123456789AB",  # upper case: still hex, still v7
        "0123456_-89ab-7cde-8f01-23456789abcd",  # DuckDB reads 0x..._ as hex: SQL decides
        "01234567-89ab-7cde-8f01-23456789abc ",
        "01234567x89ab-7cde-8f01-23456789abcd",
        "01234567-89ab-6cde-8f01-23456789abcd",
        "01234567-89abx7cdex8f01x23456789abcd",  # only - at 9 and 7 at 15 are required
        "\u00e91234567-89ab-7cde-8f01-23456789abc",
        "01234567-89ab-7cd\u00e9-8f01-23456789ab",
        "01234567-89ab-7cde-8f01-23\u00e9456789ab",  # 36 bytes, 35 characters: not v7
        "01234567-89ab-7cde-8f01-23456789abcdef",
        "01234567-89ab-7cde-8f01-23456789abcg",
        None,
    ]
    ids = pa.array(rng.sample(canonical + odd, len(canonical + odd)), pa.string())
    con = duckdb.connect()
    con.register("ids", pa.table({"id": ids}))
    want = con.sql(keys_query("ids")).to_arrow_table()
    for got in (
        id_keys(ids),
        id_keys(pa.chunked_array([ids.slice(0, 100), ids.slice(100)])),
        id_keys(ids.slice(3)),
    ):
        offset = len(ids) - got.num_rows
        assert got.column("id").to_pylist() == want.column("id").to_pylist()[offset:]
        for col in ("p", "h"):
            assert got.column(col).to_pylist() == want.column(col).to_pylist()[offset:]
    # Only canonical ids: every one read with numpy (no DuckDB), same keys.
    only = pa.array(canonical, pa.string())
    con.register("only_v7", pa.table({"id": only}))
    assert id_keys(only).column("h").to_pylist() == (
        con.sql(keys_query("only_v7")).to_arrow_table().column("h").to_pylist()
    )


async def test_the_index_holds_each_key_of_the_bucket_s_ids_once(tmp_path):
    """With no id closed already (keys counted at make_keys) and with some (the fresh ids)."""
    import duckdb

    from courier.closer.horizon import keys_query

    s = Stack(tmp_path)
    first = [v7(START + 1, i) for i in range(30)] + ["tailer-1", "tailer-2"]
    s.stage(START, first + first[:5])  # repeated within the bucket
    await s.close(START)
    second = [v7(START + WIDTH + 1, 100 + i) for i in range(10)] + ["tailer-3"]
    s.stage(START + WIDTH, second + first[:3])  # retries of closed ids: not in its index
    m = await s.close(START + WIDTH)
    assert m.duplicates_dropped_previous_bucket == 3
    horizon = DedupHorizon(s.layout, 7 * DAY)
    con = duckdb.connect()
    for start, ids in ((START, first), (START + WIDTH, second)):
        con.register("bucket_ids", pa.table({"id": ids}))
        want = con.sql(f"SELECT DISTINCT p, h FROM ({keys_query('bucket_ids')}) ORDER BY p, h")
        got = pq.read_table(horizon.index_path(BucketKey(T, start)))
        assert got.select(["p", "h"]).to_pylist() == want.to_arrow_table().to_pylist()

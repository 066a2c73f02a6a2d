"""Committing closed buckets to Iceberg tables, in process against the embedded SQLite
catalog: one snapshot per bucket, idempotent, overwrite on re-close, schema evolution with
stable field ids, loud failure on a wrong field mapping, expiry that keeps bucket files."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyiceberg.io.pyarrow import schema_to_pyarrow
from tables_testing import WIDTH, H, T, close, play_song, rows, settings

from courier.errors import TableError, TableMappingError, TableSchemaError
from courier.model import BucketKey
from courier.schema import TypeSettings, compile_type
from courier.storage import Layout, read_manifest
from courier.tables import BucketTables, catalog_properties, commit_bucket, expire_snapshots
from courier.tables.index import SUMMARY_BUCKET, SUMMARY_VERSION

V1 = play_song(1)


@pytest.fixture
def env(tmp_path: Path) -> tuple[BucketTables, Layout]:
    s = settings(tmp_path)
    layout = Layout(s.data_dir, WIDTH)
    return BucketTables(s, layout), layout


def _shift_ids(schema: pa.Schema, by: int) -> pa.Schema:
    def field(f: pa.Field) -> pa.Field:
        t = f.type
        if pa.types.is_struct(t):
            t = pa.struct([field(c) for c in t])
        elif pa.types.is_list(t):
            t = pa.list_(field(t.value_field))
        meta = dict(f.metadata or {})
        meta[b"PARQUET:field_id"] = str(int(meta[b"PARQUET:field_id"]) + by).encode()
        return pa.field(f.name, t, f.nullable, meta)

    return pa.schema([field(f) for f in schema])


def _ids(table) -> list[str]:
    return sorted(table.scan().to_arrow().column("id").to_pylist())


def test_a_closed_bucket_becomes_one_append_snapshot_naming_the_bucket_and_version(env):
    tables, layout = env
    key = BucketKey(T, H)
    close(layout, key, [rows(V1, ["a", "b"], H + 1), rows(V1, ["c"], H + 2)], closed_at=time.time())

    result = tables.sync(key, V1.arrow_schema)

    assert result.outcome == "appended"
    table = tables.table(T)
    assert _ids(table) == ["a", "b", "c"]
    [snap] = table.snapshots()
    assert snap.summary is not None
    assert snap.summary[SUMMARY_BUCKET] == key.label() and snap.summary[SUMMARY_VERSION] == "1"
    assert snap.summary.operation.value == "append"
    assert table.spec().is_unpartitioned()
    # Every column reads back (not NULL): the files carry no field ids, the name mapping works.
    part = pq.read_schema(layout.bucket_dir(key) / "part-00000.parquet")
    assert not any(f.metadata and b"PARQUET:field_id" in f.metadata for f in part)
    got = table.scan().to_arrow().sort_by("id").to_pylist()[0]
    assert got["track_id"] == "t" and got["context"] == {"device": "PHONE", "country": "SE"}
    assert got["tags"] == ["a", "b"] and got["published_at"] is not None


def test_committing_a_bucket_again_adds_nothing_even_from_a_fresh_process(env, tmp_path):
    tables, layout = env
    key = BucketKey(T, H)
    close(layout, key, [rows(V1, ["a", "b"], H + 1)], closed_at=time.time())
    tables.sync(key, V1.arrow_schema)

    # A closer that crashed after the commit runs the step again, in a new process.
    again = BucketTables(settings(tmp_path), layout).sync(key, V1.arrow_schema)

    assert again.outcome == "already"
    table = tables.table(T)
    assert _ids(table) == ["a", "b"] and len(table.snapshots()) == 1


def test_a_bucket_with_skewed_rows_from_an_earlier_hour_commits(env):
    tables, layout = env
    key = BucketKey(T, H)
    skewed = rows(V1, ["late"], H - 2 * WIDTH + 5)  # published two hours earlier
    close(layout, key, [pa.concat_tables([skewed, rows(V1, ["a"], H + 1)])], closed_at=time.time())

    assert tables.sync(key, V1.arrow_schema).outcome == "appended"
    assert _ids(tables.table(T)) == ["a", "late"]


def test_a_re_close_replaces_the_bucket_files_in_one_overwrite_snapshot(env):
    tables, layout = env
    k1, k2 = BucketKey(T, H), BucketKey(T, H + WIDTH)
    close(layout, k1, [rows(V1, ["a", "b"], H + 1)], closed_at=time.time())
    close(layout, k2, [rows(V1, ["c"], H + WIDTH + 1)], closed_at=time.time())
    tables.sync(k1, V1.arrow_schema)
    tables.sync(k2, V1.arrow_schema)
    before = tables.table(T).current_snapshot()
    assert before is not None

    v1 = read_manifest(layout.manifest_path(k1))
    close(layout, k1, [rows(V1, ["a", "b", "x"], H + 1)], version=2, closed_at=time.time())
    result = tables.sync(k1, V1.arrow_schema)

    assert result.outcome == "overwritten"
    table = tables.table(T)
    snaps = table.snapshots()
    assert len(snaps) == 3
    assert snaps[-1].summary is not None and snaps[-1].summary.operation.value == "overwrite"
    assert snaps[-1].summary[SUMMARY_VERSION] == "2"
    assert _ids(table) == ["a", "b", "c", "x"]  # version 1's rows are gone, not doubled
    # The snapshot before the re-close still reads version 1 (its files are still here).
    old = table.scan(snapshot_id=before.snapshot_id).to_arrow()
    assert sorted(old.column("id").to_pylist()) == ["a", "b", "c"]
    assert tables.sync(k1, V1.arrow_schema).outcome == "already"
    # A commit that read version 1's manifest before the re-close brings nothing back.
    stale = commit_bucket(table, layout, k1, v1, V1.arrow_schema, skew_secs=0.5)
    assert stale.outcome == "already" and len(tables.table(T).snapshots()) == 3


def test_a_new_schema_version_adds_a_column_and_keeps_every_field_id(env):
    tables, layout = env
    v2 = play_song(2)
    k1, k2 = BucketKey(T, H), BucketKey(T, H + WIDTH)
    close(layout, k1, [rows(V1, ["a"], H + 1)], closed_at=time.time())
    tables.sync(k1, V1.arrow_schema)
    ids_before = {f.name: f.field_id for f in tables.table(T).schema().fields}

    close(layout, k2, [rows(v2, ["b"], H + WIDTH + 1)], closed_at=time.time())
    tables.sync(k2, v2.arrow_schema)

    table = tables.table(T)
    ids_after = {f.name: f.field_id for f in table.schema().fields}
    assert {n: ids_after[n] for n in ids_before} == ids_before
    assert ids_after["skipped"] > max(ids_before.values())
    got = {r["id"]: r["skipped"] for r in table.scan().to_arrow().to_pylist()}
    assert got == {"a": None, "b": True}
    # The old snapshot reads with the schema of its time: no "skipped" column.
    first = table.snapshots()[0]
    assert "skipped" not in table.scan(snapshot_id=first.snapshot_id).to_arrow().column_names


def test_a_table_made_before_received_dc_takes_the_column_on_the_next_commit(env):
    tables, layout = env
    old_schema = V1.arrow_schema.remove(V1.arrow_schema.get_field_index("received_dc"))
    k1, k2 = BucketKey(T, H), BucketKey(T, H + WIDTH)
    before = rows(V1, ["a"], H + 1).drop_columns(["received_dc"])
    close(layout, k1, [before], closed_at=time.time())
    tables.sync(k1, old_schema)
    assert "received_dc" not in tables.table(T).schema().column_names
    now = rows(V1, ["b"], H + WIDTH + 1)
    now = now.set_column(
        now.schema.get_field_index("received_dc"), "received_dc", pa.array(["dcA"])
    )
    close(layout, k2, [now], closed_at=time.time())
    tables.sync(k2, V1.arrow_schema)

    got = {r["id"]: r["received_dc"] for r in tables.table(T).scan().to_arrow().to_pylist()}
    assert got == {"a": None, "b": "dcA"}


def test_a_file_whose_field_ids_point_at_other_columns_is_refused_loudly(env):
    tables, layout = env
    k1, k2 = BucketKey(T, H), BucketKey(T, H + WIDTH)
    close(layout, k1, [rows(V1, ["a"], H + 1)], closed_at=time.time())
    tables.sync(k1, V1.arrow_schema)
    # A writer with its own copy of the ids, drifted: every id off by 100. pyiceberg's
    # add_files accepts such a file and every column then reads back NULL.
    with_ids = schema_to_pyarrow(tables.table(T).schema(), include_field_ids=True)
    drifted = _shift_ids(with_ids, 100)
    close(layout, k2, [rows(V1, ["b"], H + WIDTH + 1).cast(drifted)], closed_at=time.time())
    assert pq.read_schema(layout.bucket_dir(k2) / "part-00000.parquet").field("id").metadata

    with pytest.raises(TableMappingError, match="would read wrong columns"):
        tables.sync(k2, V1.arrow_schema)

    table = tables.table(T)
    assert _ids(table) == ["a"] and len(table.snapshots()) == 1  # nothing was committed


def test_a_name_mapping_that_points_at_other_columns_is_refused_loudly(env):
    tables, layout = env
    k1, k2 = BucketKey(T, H), BucketKey(T, H + WIDTH)
    close(layout, k1, [rows(V1, ["a"], H + 1)], closed_at=time.time())
    tables.sync(k1, V1.arrow_schema)
    table = tables.table(T)
    mapping = table.properties["schema.name-mapping.default"]
    swapped = mapping.replace('["track_id"]', '["TMP"]').replace('["ms_played"]', '["track_id"]')
    with table.transaction() as tx:
        tx.set_properties(
            {"schema.name-mapping.default": swapped.replace('["TMP"]', '["ms_played"]')}
        )
    close(layout, k2, [rows(V1, ["b"], H + WIDTH + 1)], closed_at=time.time())

    with pytest.raises(TableMappingError, match="track_id -> id"):
        tables.sync(k2, V1.arrow_schema)


def test_expiry_removes_old_snapshots_and_never_a_file_a_manifest_lists(env):
    tables, layout = env
    keys = [BucketKey(T, H + i * WIDTH) for i in range(3)]
    for i, key in enumerate(keys):
        close(layout, key, [rows(V1, [f"e{i}"], key.start + 1)], closed_at=time.time())
        tables.sync(key, V1.arrow_schema)
    close(layout, keys[0], [rows(V1, ["e0", "e0b"], H + 1)], version=2, closed_at=time.time())
    tables.sync(keys[0], V1.arrow_schema)
    table = tables.table(T)
    assert len(table.snapshots()) == 4

    expired = expire_snapshots(table, retention_secs=0.0, now=time.time() + 1)

    assert expired == 3
    table = tables.table(T)
    assert len(table.snapshots()) == 1
    for key in keys:
        for f in read_manifest(layout.manifest_path(key)).files:
            assert (layout.bucket_dir(key) / f.name).exists(), f"{key.label()} lost {f.name}"
    assert _ids(table) == ["e0", "e0b", "e1", "e2"]
    # With the history gone, the lookup falls back to the files: still idempotent.
    for key in keys:
        assert tables.sync(key, V1.arrow_schema).outcome == "already"


def test_old_buckets_are_found_committed_from_the_files_when_the_history_starts_later(env):
    tables, layout = env
    old = BucketKey(T, H)
    close(layout, old, [rows(V1, ["a"], H + 1)], closed_at=H + WIDTH + 10)  # days ago
    assert tables.sync(old, V1.arrow_schema).outcome == "appended"
    with tables.table(T).transaction() as tx:  # history rewritten: no courier summary left
        tx.set_properties({"unrelated": "x"})
    table = tables.table(T)
    expire_snapshots(table, retention_secs=0.0, now=time.time() + 1)
    assert tables.sync(old, V1.arrow_schema).outcome == "already"
    assert tables.uncommitted(T) == []


def test_uncommitted_lists_closed_buckets_the_table_lacks(env):
    tables, layout = env
    keys = [BucketKey(T, H + i * WIDTH) for i in range(3)]
    close(layout, keys[0], [rows(V1, ["a"], H + 1)], closed_at=time.time())
    close(layout, keys[1], [], closed_at=time.time())  # empty: nothing to commit
    close(layout, keys[2], [rows(V1, ["c"], H + 2 * WIDTH + 1)], closed_at=time.time())
    assert tables.uncommitted(T) == [keys[0], keys[2]]  # no table yet
    tables.sync(keys[0], V1.arrow_schema)
    assert tables.uncommitted(T) == [keys[2]]
    assert tables.sync(keys[1], V1.arrow_schema).outcome == "already"
    assert pc.sum(tables.table(T).scan().to_arrow().column("ms_played")).as_py() == 7


def test_two_closers_racing_on_one_bucket_add_its_files_once(env, tmp_path):
    tables, layout = env
    k0, k1 = BucketKey(T, H), BucketKey(T, H + WIDTH)
    close(layout, k0, [rows(V1, ["a"], H + 1)], closed_at=time.time())
    tables.sync(k0, V1.arrow_schema)
    close(layout, k1, [rows(V1, ["b"], H + WIDTH + 1)], closed_at=time.time())
    other = BucketTables(settings(tmp_path), layout)
    stale = other.table(T)  # loaded before the first closer commits k1
    assert stale is not None
    assert tables.sync(k1, V1.arrow_schema).outcome == "appended"

    # The second closer looked k1 up in its stale view, found nothing, and appends: the
    # catalog refuses (no automatic replay on top of the winner), so nothing is added twice.
    stale.refresh = lambda: stale  # type: ignore[method-assign]
    with pytest.raises(TableError, match="concurrent commit"):
        commit_bucket(
            stale,
            layout,
            k1,
            read_manifest(layout.manifest_path(k1)),
            V1.arrow_schema,
            skew_secs=0.5,
        )
    assert other.sync(k1, V1.arrow_schema).outcome == "already"  # its retry
    assert _ids(tables.table(T)) == ["a", "b"]


def _tick(version: int, n_type: str):
    avro = {"type": "record", "name": "Tick", "fields": [{"name": "n", "type": n_type}]}
    return compile_type("Tick", avro, version, TypeSettings())


def _tick_rows(compiled, ids: list[str], n: float, at: float) -> pa.Table:
    us = int(at * 1_000_000)
    schema = compiled.arrow_schema
    cols = {
        "id": pa.array(ids),
        "published_at": pa.array([us] * len(ids), pa.int64()).cast(
            schema.field("published_at").type
        ),
        "schema_version": pa.array([compiled.version] * len(ids), pa.int32()),
        "n": pa.array([n] * len(ids)).cast(schema.field("n").type),
    }
    return pa.table([cols.get(f.name, pa.nulls(len(ids), f.type)) for f in schema], schema=schema)


def test_int_to_long_becomes_an_iceberg_promotion_and_int_to_double_stops_commits_loudly(env):
    tables, layout = env
    v1, v2, v3 = _tick(1, "int"), _tick(2, "long"), _tick(3, "double")
    keys = [BucketKey("Tick", H + i * WIDTH) for i in range(3)]
    close(layout, keys[0], [_tick_rows(v1, ["a"], 1, H + 1)], closed_at=time.time())
    tables.sync(keys[0], v1.arrow_schema)
    close(layout, keys[1], [_tick_rows(v2, ["b"], 2**40, H + WIDTH + 1)], closed_at=time.time())
    tables.sync(keys[1], v2.arrow_schema)
    table = tables.table("Tick")
    assert str(table.schema().find_field("n").field_type) == "long"
    got = table.scan().to_arrow()
    assert dict(zip(got["id"].to_pylist(), got["n"].to_pylist(), strict=True)) == {
        "a": 1,
        "b": 2**40,
    }

    # A bucket closed before the promotion (an int file) still commits under the long column.
    late = BucketKey("Tick", H - WIDTH)
    close(layout, late, [_tick_rows(v1, ["z"], 3, H - WIDTH + 1)], closed_at=time.time())
    assert tables.sync(late, v2.arrow_schema).outcome == "appended"
    assert str(tables.table("Tick").schema().find_field("n").field_type) == "long"

    # Avro allows int -> double; Iceberg does not: refused, the table keeps what it had.
    close(layout, keys[2], [_tick_rows(v3, ["c"], 0.5, H + 2 * WIDTH + 1)], closed_at=time.time())
    with pytest.raises(TableMappingError, match="cannot take schema"):
        tables.sync(keys[2], v3.arrow_schema)
    assert sorted(tables.table("Tick").scan().to_arrow()["id"].to_pylist()) == ["a", "b", "z"]


def test_the_catalog_is_embedded_sqlite_under_the_data_root_unless_a_uri_is_set(tmp_path):
    root = (tmp_path / "data").absolute()
    default = catalog_properties(settings(tmp_path).tables, root)
    assert default["type"] == "sql" and default["uri"] == f"sqlite:///{root}/_iceberg/catalog.db"
    assert default["warehouse"] == f"file://{root}/_iceberg/warehouse"
    rest = catalog_properties(
        settings(tmp_path, tables={"catalog_uri": "https://cat.example/api"}).tables, root
    )
    assert rest == {"type": "rest", "uri": "https://cat.example/api"}


def test_a_type_with_a_nanosecond_column_gets_no_table_and_says_why(env):
    tables, layout = env
    avro = {
        "type": "record",
        "name": "Nano",
        "fields": [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-nanos"}}],
    }
    nano = compile_type("Nano", avro, 1, TypeSettings())
    assert nano.arrow_schema.field("at").type == pa.timestamp("ns", tz="UTC")
    key = BucketKey("Nano", H)
    empty = nano.arrow_schema.empty_table()
    close(
        layout,
        key,
        [
            pa.table(
                [pa.array(["n"]) if f.name == "id" else pa.nulls(1, f.type) for f in empty.schema],
                schema=empty.schema,
            )
        ],
        closed_at=time.time(),
    )

    with pytest.raises(TableSchemaError, match=r"Nano cannot be an Iceberg table .*timestamp\[ns"):
        tables.sync(key, nano.arrow_schema)
    assert tables.table("Nano") is None
    assert tables.uncommitted("Nano") == [key]  # the audit lists it as not in a table

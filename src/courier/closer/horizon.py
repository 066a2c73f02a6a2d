"""The dedup horizon (G2): which of a bucket's ids a closed bucket of its type already holds.

A retried batch can be stored again long after its first copy (a client whose
answer was lost retries once the gateway is back; a phone retries days later),
so the closer checks a bucket's ids against every closed bucket of the type whose
start lies within ``closer.dedup_horizon_secs`` (default 7 days, never less than
the stream's retention), not only against the previous bucket.

The id index. Every closed bucket has one object in the bucket store,
``_index/<Type>/<bucket_start>.parquet``, with one row per id of the bucket:

- ``p`` (int64), the id's partition: for a UUIDv7 id, the UTC hour its embedded
  time names (``unix_ms // 3600000``); for any other id, ``-1 - (16 bits of its
  MD5)``;
- ``h`` (int64), 32 bits: of a UUIDv7, two slices of its random bits XORed; of
  any other id, 32 bits of its MD5 (:func:`keys_query`).

Rows are sorted by ``(p, h)`` and delta-encoded in small row groups, so an index
costs about 2-3 bytes per id. Both columns are functions of the id alone, so every
copy of an id maps to the same ``(p, h)``; a lookup reads only the row groups whose
``p`` range holds a ``p`` of the new bucket (Parquet statistics). UUIDv7 ids of
one bucket share an hour or two, so a bucket's lookup reads little of an index that
holds 100 M ids; other ids (the tailer's) read every hash partition: correct, slower.

A match of ``(p, h)`` is a candidate, never a verdict: the exact check reads the
``id`` column of the matched bucket's parts, as its current ``_SUCCESS`` lists
them, and only ids found there are dropped. So a stale index (a crash between
writing it and writing ``_SUCCESS``, a re-close that rewrote it) can cost a read,
never an event.

Protocol (within a close, DESIGN §6):

- step 3 computes the bucket's keys, looks them up (:meth:`DedupHorizon.find_closed`)
  and drops the confirmed ids;
- step 4b writes the bucket's index (:meth:`DedupHorizon.write_index`) after its
  parts and before ``_SUCCESS`` (step 5), so every closed bucket has one; a re-close
  writes the new version's index before it switches the manifest.

On an object store, the index objects and the parts an exact check reads are
copied to this process's scratch directory for the lookup and deleted after it.

Closed buckets without an index (closed by an older Courier) get one built from
their parts the first time a closer of this process looks at their type. An id
whose first copy is in a bucket older than the horizon is delivered again; when
its UUIDv7 time says it is that old, the manifest counts it
(``ids_older_than_horizon``).
"""

from __future__ import annotations

import io
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from courier.closer.dedup import sql_list
from courier.errors import ManifestError, StorageError
from courier.model import INVALID_TYPE, BucketKey
from courier.storage import Layout, write_bytes_atomic
from courier.storage.copies import LocalCopies

log = logging.getLogger("courier.closer")

INDEX_DIR = "_index"
INDEX_FORMAT = b"courier-id-index/1 p=uuid7-hour|md5-16 h=uuid7-random-xor|md5-32"
_INDEX_ROW_GROUP_ROWS = 16 * 1024
#: Beyond this many distinct partitions the ``p IN (...)`` prune list costs more than it saves.
_MAX_PRUNE_VALUES = 20_000

_IS_UUID7 = "length(id) = 36 AND substr(id, 15, 1) = '7' AND substr(id, 9, 1) = '-'"


def keys_query(source: str) -> str:
    """``SELECT id, p, h`` over the ``id`` column of ``source`` (see the module docstring).

    A UUIDv7 already carries 74 random bits, so its ``h`` is 32 of them (two 32-bit
    slices XORed, which also spreads ids made from one random prefix and a counter);
    only other ids pay for an MD5.
    """
    v7_p = (
        f"CASE WHEN {_IS_UUID7} THEN "
        "TRY_CAST('0x' || substr(id, 1, 8) || substr(id, 10, 4) AS BIGINT) // 3600000 END"
    )
    v7_h = (
        f"CASE WHEN {_IS_UUID7} THEN xor("
        "TRY_CAST('0x' || substr(id, 16, 3) || substr(id, 21, 3) || substr(id, 25, 2) AS BIGINT), "
        "TRY_CAST('0x' || substr(id, 29, 8) AS BIGINT)) END"
    )
    v7 = "p7 IS NOT NULL AND h7 IS NOT NULL"
    return f"""
        SELECT id,
          CASE WHEN {v7} THEN p7
               ELSE -1 - CAST((md5_number(id) >> 64) & 65535 AS BIGINT) END AS p,
          CASE WHEN {v7} THEN h7 ELSE CAST(md5_number(id) & 4294967295 AS BIGINT) END AS h
        FROM (SELECT id, {v7_p} AS p7, {v7_h} AS h7 FROM {source})
    """


#: Byte -> hex digit value; 255 for any other byte.
_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
#: The 0-based positions :func:`keys_query` reads hex digits from: 12 for ``p`` (the
#: UUIDv7's milliseconds), then 8 and 8 for the two halves of ``h``.
_DIGITS = [*range(0, 8), *range(9, 13), *range(15, 18), *range(20, 23), 24, 25, *range(28, 36)]
#: The other positions but 8 (``-``) and 14 (``7``): any byte there, but one byte a character.
_OTHER = [13, 18, 19, 23, 26, 27]
_ID_KEYS_SCHEMA = pa.schema([("id", pa.string()), ("p", pa.int64()), ("h", pa.int64())])


def id_keys(ids: pa.Array | pa.ChunkedArray) -> pa.Table:
    """``id``, ``p``, ``h`` of every id (a row each, in order): exactly what
    :func:`keys_query` gives, which stays the definition. Ids in the canonical text
    form (36 ASCII bytes, ``-`` and ``7`` where a UUIDv7 has them, hex digits where the
    keys come from: every id the gateway mints) are read with numpy, several times
    faster than DuckDB's string functions; any other id goes through :func:`keys_query`."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    if ids.type != pa.string():
        ids = ids.cast(pa.string())
    n = len(ids)
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32, count=n + 1, offset=4 * ids.offset)
    data = ids.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    fits = np.diff(offsets) == 36
    if ids.null_count:
        fits &= ids.is_valid().to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(fits)
    if len(rows) == n and n and offsets[-1] - offsets[0] == 36 * n:
        text = raw[offsets[0] : offsets[-1]].reshape(n, 36)  # every id 36 bytes: a view
    else:
        text = raw[offsets[rows][:, None] + np.arange(36)]
    nibbles = _HEX[text[:, _DIGITS]]
    canonical = (
        (nibbles.max(axis=1, initial=0) < 16)
        & (text[:, 8] == ord("-"))
        & (text[:, 14] == ord("7"))
        & (text[:, _OTHER].max(axis=1, initial=0) < 128)
    )
    # Two hex digits a byte: 6 bytes of milliseconds, 4 and 4 of the halves of h.
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    ms = np.zeros((len(rows), 8), dtype=np.uint8)
    ms[:, 2:] = packed[:, :6]
    p = np.zeros(n, dtype=np.int64)
    h = np.zeros(n, dtype=np.int64)
    p[rows] = ms.view(">u8").ravel().astype(np.int64) // 3_600_000
    halves = np.ascontiguousarray(packed[:, 6:]).view(">u4")
    h[rows] = (halves[:, 0] ^ halves[:, 1]).astype(np.int64)
    done = np.zeros(n, dtype=bool)
    done[rows[canonical]] = True
    other = np.flatnonzero(~done)
    valid = None
    if len(other):
        con = duckdb.connect()
        try:
            con.register("other_ids", pa.table({"id": ids.take(pa.array(other))}))
            keys = con.sql(keys_query("other_ids")).to_arrow_table()
        finally:
            con.close()
        p[other] = keys.column("p").fill_null(0).to_numpy()
        h[other] = keys.column("h").fill_null(0).to_numpy()
        if keys.column("p").null_count:  # a null id has null keys
            valid = np.ones(n, dtype=bool)
            valid[other] = keys.column("p").is_valid().to_numpy(zero_copy_only=False)
    mask = None if valid is None else ~valid
    return pa.Table.from_arrays(
        [ids, pa.array(p, mask=mask), pa.array(h, mask=mask)], schema=_ID_KEYS_SCHEMA
    )


@dataclass(frozen=True)
class ClosedIds:
    """Rows of a bucket whose ids a closed bucket already holds, by where they are."""

    previous_bucket_rows: int = 0
    other_buckets_rows: int = 0
    #: Distinct ids found in a closed bucket.
    ids: int = 0


class DedupHorizon:
    """The closed buckets of one type within the horizon of one bucket, and their ids."""

    def __init__(
        self, layout: Layout, horizon_secs: int, *, scratch_dir: Path | None = None
    ) -> None:
        """``scratch_dir``: where this process copies index objects and parts of an
        object store for a lookup (default :meth:`Layout.default_scratch_dir`; a local
        store copies nothing)."""
        self.layout = layout
        self.store = layout.store
        self.horizon_secs = horizon_secs
        self.scratch_dir = scratch_dir
        self._backfilled: set[str] = set()

    # -- where the index lives ----------------------------------------------------

    def index_prefix(self, event_type: str) -> str:
        return f"{INDEX_DIR}/{event_type}"

    def index_key(self, key: BucketKey) -> str:
        return f"{self.index_prefix(key.event_type)}/{key.start}.parquet"

    def index_dir(self, event_type: str) -> Path:
        """:meth:`index_prefix` on a local store."""
        return self.layout.root / self.index_prefix(event_type)

    def index_path(self, key: BucketKey) -> Path:
        """:meth:`index_key` on a local store."""
        return self.layout.root / self.index_key(key)

    def _copies(self) -> LocalCopies:
        scratch = self.scratch_dir or self.layout.default_scratch_dir()
        return LocalCopies(self.store, scratch / f"horizon-{secrets.token_hex(4)}")

    def lower_bound(self, key: BucketKey) -> int:
        """The oldest bucket start whose ids ``key`` is checked against.

        ``_invalid`` records rejections, not events: a rejected event replayed after a
        schema fix and rejected again is a second record with its own reason, so only
        the previous bucket (a retried request) is checked there.
        """
        if key.event_type == INVALID_TYPE:
            return key.start - self.layout.width
        return key.start - self.horizon_secs

    def indexed_starts(self, event_type: str) -> list[int]:
        starts = []
        for o in self.layout.objects_in(self.index_prefix(event_type), ".parquet"):
            try:
                starts.append(int(o.key.rsplit("/", 1)[-1].removesuffix(".parquet")))
            except ValueError:
                continue
        return sorted(starts)

    # -- step 3 -------------------------------------------------------------------

    def find_closed(
        self, con: duckdb.DuckDBPyConnection, keys_table: str, key: BucketKey
    ) -> ClosedIds:
        """Fill the temp table ``closed_ids(id, bucket_start)`` with the ids of
        ``keys_table`` (columns ``id``, ``p``, ``h``; a row per staged row) that a closed
        bucket of the type within the horizon holds, and count the rows they account for."""
        con.execute(
            "CREATE OR REPLACE TEMP TABLE closed_ids (id VARCHAR, bucket_start BIGINT)"
        ).fetchall()
        self._backfill(key)
        lower = self.lower_bound(key)
        starts = [s for s in self.indexed_starts(key.event_type) if s >= lower and s != key.start]
        if not starts:
            return ClosedIds()
        with self._copies() as copies:
            return self._find_closed(con, keys_table, key, starts, copies)

    def _find_closed(
        self,
        con: duckdb.DuckDBPyConnection,
        keys_table: str,
        key: BucketKey,
        starts: list[int],
        copies: LocalCopies,
    ) -> ClosedIds:
        by_key = {self.index_key(BucketKey(key.event_type, s)): s for s in starts}
        # An index deleted since the listing (by hand) has nothing to look up: left out.
        files = {str(path): by_key[k] for k, path in copies.fetch(by_key).items()}
        if not files:
            return ClosedIds()
        ps = [int(r[0]) for r in con.execute(f"SELECT DISTINCT p FROM {keys_table}").fetchall()]
        prune = (
            f"WHERE p IN ({', '.join(map(str, ps))})" if 0 < len(ps) <= _MAX_PRUNE_VALUES else ""
        )
        con.register(
            "_index_files",
            pa.table({"filename": list(files), "bucket_start": list(files.values())}),
        )
        try:
            con.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE _candidates AS
                SELECT DISTINCT k.id, f.bucket_start FROM {keys_table} k
                JOIN (SELECT p, h, filename FROM read_parquet({sql_list(files)}, filename = true)
                      {prune}) i ON k.p = i.p AND k.h = i.h
                JOIN _index_files f ON f.filename = i.filename
                """
            ).fetchall()
        except duckdb.Error as exc:
            raise StorageError(
                f"cannot read the id index of {key.event_type} under "
                f"{self.layout.where(self.index_prefix(key.event_type))}: {exc}; the bucket stays "
                "open and the close "
                "is retried"
            ) from exc
        finally:
            con.unregister("_index_files")
        hit = con.execute("SELECT DISTINCT bucket_start FROM _candidates ORDER BY 1").fetchall()
        for (start,) in hit:
            self._confirm(con, BucketKey(key.event_type, int(start)), copies)
        if not hit:
            return ClosedIds()  # the usual case: no copy of any id is closed already
        previous = key.previous(self.layout.width).start
        rows = con.execute(
            f"""
            SELECT
              count(*) FILTER (WHERE c.previous),
              count(*) FILTER (WHERE NOT c.previous),
              (SELECT count(DISTINCT id) FROM closed_ids)
            FROM {keys_table} s JOIN (
                SELECT id, bool_or(bucket_start = {previous}) AS previous
                FROM closed_ids GROUP BY id
            ) c ON s.id = c.id
            """
        ).fetchall()
        prev_rows, older_rows, ids_found = rows[0] if rows else (0, 0, 0)
        return ClosedIds(int(prev_rows or 0), int(older_rows or 0), int(ids_found or 0))

    def _confirm(
        self, con: duckdb.DuckDBPyConnection, closed: BucketKey, copies: LocalCopies
    ) -> None:
        """The exact check: which candidates of ``closed`` its parts really hold."""
        parts = self._part_paths(self.closed_part_keys(closed), copies)
        if not parts:
            return
        con.execute(
            f"""
            INSERT INTO closed_ids
            SELECT DISTINCT c.id, c.bucket_start FROM _candidates c
            SEMI JOIN (SELECT id FROM read_parquet({sql_list(parts)})) b
            ON c.id = b.id
            WHERE c.bucket_start = {closed.start}
            """
        ).fetchall()

    def closed_part_keys(self, closed: BucketKey) -> list[str]:
        """Keys of the parts the current ``_SUCCESS`` of ``closed`` lists and the store
        holds (none if not closed)."""
        try:
            m = self.layout.read_manifest(closed)
        except ManifestError:
            return []  # an index without a manifest: a close that has not finished
        prefix = self.layout.bucket_prefix(closed)
        stored = {o.key for o in self.store.list_objects(prefix)}
        parts = [f"{prefix}/{f.name}" for f in m.files]
        present = [p for p in parts if p in stored]
        if len(present) < len(parts):
            # A closed bucket lost a file (deleted by hand, storage fault): its ids cannot
            # be deduplicated against; redelivered copies of them land in the new bucket
            # (``courier repair redeliver``), not nowhere.
            log.warning(
                "closed bucket %s is missing %s listed in its manifest; not deduplicating "
                "against them",
                closed.label(),
                ", ".join(sorted(p.rsplit("/", 1)[-1] for p in parts if p not in stored)),
            )
        return present

    def _part_paths(self, keys: list[str], copies: LocalCopies) -> list[Path]:
        got = copies.fetch(keys)
        for k in keys:
            if k not in got:
                # Deleted since the listing: as missing as above, and as harmless.
                log.warning("part %s vanished while being read; not deduplicating against it", k)
        return [got[k] for k in keys if k in got]

    def older_than_horizon(
        self, con: duckdb.DuckDBPyConnection, ids_table: str, key: BucketKey
    ) -> int:
        """UUIDv7 ids of ``ids_table`` whose own time is older than the horizon."""
        hour = self.lower_bound(key) // 3600
        rows = con.execute(
            f"SELECT count(DISTINCT id) FROM {ids_table} WHERE p >= 0 AND p < {hour}"
        ).fetchall()
        return int(rows[0][0]) if rows else 0

    # -- step 4b ------------------------------------------------------------------

    def write_index(
        self, con: duckdb.DuckDBPyConnection, query: str, key: BucketKey, *, distinct: bool = False
    ) -> int:
        """Write the index of ``key`` from ``query`` (columns ``p``, ``h``; a row per id,
        or with ``distinct``, already a row per key)."""
        pick = "" if distinct else "DISTINCT "
        table = con.sql(f"SELECT {pick}p, h FROM ({query}) ORDER BY p, h").to_arrow_table()
        self.store.put(self.index_key(key), index_bytes(table))
        return table.num_rows

    # -- buckets closed without an index ----------------------------------------

    def _backfill(self, key: BucketKey) -> None:
        if key.event_type in self._backfilled:
            return
        have = set(self.indexed_starts(key.event_type))
        lower = self.lower_bound(key)
        missing = [
            s
            for s in self.layout.closed_bucket_starts(key.event_type)
            if s >= lower and s not in have and s != key.start
        ]
        for s in missing:
            closed = BucketKey(key.event_type, s)
            con = duckdb.connect()
            try:
                with self._copies() as copies:
                    parts = self._part_paths(self.closed_part_keys(closed), copies)
                    if parts:
                        src = f"(SELECT id FROM read_parquet({sql_list(parts)}))"
                        self.write_index(con, keys_query(src), closed)
                    else:
                        self.store.put(self.index_key(closed), index_bytes(_empty_index()))
            finally:
                con.close()
            log.info("built the missing id index of closed bucket %s", closed.label())
        self._backfilled.add(key.event_type)


def _empty_index() -> pa.Table:
    return pa.table({"p": pa.array([], pa.int64()), "h": pa.array([], pa.int64())})


def write_index_file(path: Path, table: pa.Table) -> None:
    """One bucket's index as a local file, atomically (:func:`index_bytes`)."""
    write_bytes_atomic(path, index_bytes(table))


def index_bytes(table: pa.Table) -> bytes:
    """One bucket's index: sorted ``(p, h)``, delta-encoded, small row groups."""
    table = table.replace_schema_metadata({b"courier.id_index": INDEX_FORMAT})
    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        compression="zstd",
        use_dictionary=False,
        column_encoding={"p": "DELTA_BINARY_PACKED", "h": "DELTA_BINARY_PACKED"},
        row_group_size=_INDEX_ROW_GROUP_ROWS,
        write_statistics=True,
    )
    return buf.getvalue()

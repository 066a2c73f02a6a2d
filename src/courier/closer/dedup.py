"""Step 3 of a close, out of core: order, deduplicate and stream a bucket's rows with DuckDB.

A bucket can be far larger than memory (an hour of a busy type), so the rows
never sit in one Arrow table: DuckDB reads the staging files, keeps the first
row of every ``id`` in stream order (``_seq``, ``_idx``: the earliest
``published_at``), drops ids that closed buckets within the dedup horizon hold
(:mod:`courier.closer.horizon`), and streams the result
in that order, spilling to disk under its memory limit. The order is a total
order on unique keys, so the output is the same on every run.

Most closes need no sort: when every staging file is in stream order itself and
the files do not overlap (one writer, or writers that took turns), reading them
one after another already gives stream order (:func:`in_stream_order`). Then only
the positions of the rows to drop are computed (a few per cent of the rows), and
the rows stream straight from the files, checked in order as they pass. Files
that overlap (several writers at once) take the sort; both give the same rows in
the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

STAGING_COLUMNS = ("_seq", "_idx")
#: Beyond this many rows to drop, the positions held in memory (8 bytes each) would cost
#: more than the sort they save: such a bucket (a replay, say) takes the sort.
MAX_DROPPED_IN_MEMORY = 4_000_000


class StreamOrderError(Exception):
    """Rows read file after file came out of stream order (:meth:`BucketDedup.rows`)."""


@dataclass(frozen=True)
class FileOrder:
    """Staging files whose rows, read one file after another, are in stream order."""

    paths: list[Path]
    #: Rows of each file, in ``paths`` order.
    rows: list[int]


def _strictly_increasing(seq: np.ndarray, idx: np.ndarray) -> bool:
    """Whether the ``(seq, idx)`` pairs are strictly increasing."""
    return bool(np.all((seq[1:] > seq[:-1]) | ((seq[1:] == seq[:-1]) & (idx[1:] > idx[:-1]))))


def in_stream_order(staging: list[Path]) -> FileOrder | None:
    """The staging files in the order that reads their rows in stream order
    (``(_seq, _idx)`` strictly increasing within each file and from one file to the
    next), or None when no order does (files that overlap, a file out of order itself,
    a missing or null ``_seq``/``_idx``). Reads only those two columns."""
    spans: list[tuple[tuple[int, int], tuple[int, int], Path, int]] = []
    empty: list[Path] = []
    for path in staging:
        pf = pq.ParquetFile(path)
        if any(c not in pf.schema_arrow.names for c in STAGING_COLUMNS):
            return None
        first: tuple[int, int] | None = None
        last: tuple[int, int] | None = None
        for b in pf.iter_batches(batch_size=1 << 20, columns=list(STAGING_COLUMNS)):
            if b.num_rows == 0:
                continue
            s_col, i_col = b.column(0), b.column(1)
            if s_col.null_count or i_col.null_count:
                return None
            seq, idx = s_col.to_numpy(), i_col.to_numpy()
            here = (int(seq[0]), int(idx[0]))
            if (last is not None and here <= last) or not _strictly_increasing(seq, idx):
                return None
            first = first or here
            last = (int(seq[-1]), int(idx[-1]))
        if first is None or last is None:
            empty.append(path)
        else:
            spans.append((first, last, path, pf.metadata.num_rows))
    spans.sort()
    if any(a[1] >= b[0] for a, b in pairwise(spans)):
        return None
    return FileOrder(empty + [s[2] for s in spans], [0] * len(empty) + [s[3] for s in spans])


def sql_list(paths: Iterable[Path | str]) -> str:
    """A DuckDB list literal of file paths (quotes escaped)."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


@dataclass(frozen=True)
class SeqSpan:
    first: int
    last: int


class BucketDedup:
    """One bucket's input (staging files), deduplicated within itself and against the
    ids of closed buckets that :class:`courier.closer.horizon.DedupHorizon` confirms."""

    def __init__(
        self,
        staging: list[Path],
        *,
        memory_limit_bytes: int,
        spill_dir: Path,
        threads: int,
    ) -> None:
        spill_dir.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(
            config={
                "memory_limit": f"{max(64 * 1024 * 1024, memory_limit_bytes) // (1024 * 1024)}MB",
                "temp_directory": str(spill_dir),
                "threads": max(1, threads),
                "preserve_insertion_order": True,
            }
        )
        self.staging = staging
        #: The temp table of :meth:`make_keys`'s distinct keys (``p``, ``h``) and their rows (``n``).
        self.key_counts = "bucket_key_counts"
        #: The staging files as one relation (SQL).
        self.staged = f"read_parquet({sql_list(staging)}, union_by_name = true)"
        #: The files in an order that reads their rows in stream order, if there is one.
        self.order = in_stream_order(staging)
        # Until a horizon fills it: no id is in a closed bucket.
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE closed_ids (id VARCHAR, bucket_start BIGINT)"
        ).fetchall()

    def close(self) -> None:
        self.con.close()

    def input_rows(self) -> int:
        return self._count(f"SELECT count(*) FROM {self.staged}")

    def _count(self, query: str) -> int:
        # fetchall, not fetchone: an unfinished result would block the next query.
        rows = self.con.execute(query).fetchall()
        return int(rows[0][0]) if rows else 0

    def seq_spans(self) -> list[SeqSpan]:
        """The stream sequences covered, as maximal contiguous ranges."""
        rows = self.con.execute(
            f"""
            SELECT min(seq), max(seq) FROM (
                SELECT seq, seq - row_number() OVER (ORDER BY seq) AS grp
                FROM (SELECT DISTINCT CAST(_seq AS BIGINT) AS seq FROM {self.staged})
            ) GROUP BY grp ORDER BY 1
            """
        ).fetchall()
        return [SeqSpan(int(a), int(b)) for a, b in rows]

    def make_keys(self, id_keys: Callable[[pa.Array], pa.Table]) -> str:
        """A temp table of the bucket's ids (one row per staged row) with their index
        keys (``id_keys`` of an array of ids: a table ``id``, ``p``, ``h``) and ``pos``,
        the row's position in the files read one after another (in :attr:`order`, when
        there is one: then its position in the stream); its name. The ids are read
        straight from the files, a row group at a time. Also fills :attr:`key_counts`."""
        files = self.order.paths if self.order is not None else self.staging

        def batches() -> Iterator[pa.RecordBatch]:
            at = 0
            for path in files:
                for b in pq.ParquetFile(path).iter_batches(batch_size=1 << 20, columns=["id"]):
                    keys = id_keys(b.column(0))
                    pos = pa.array(np.arange(at, at + keys.num_rows, dtype=np.int64))
                    at += keys.num_rows
                    yield from keys.append_column("pos", pos).to_batches()

        schema = id_keys(pa.array([], pa.string())).schema.append(pa.field("pos", pa.int64()))
        self.con.register("_id_keys", pa.RecordBatchReader.from_batches(schema, batches()))
        try:
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE bucket_keys AS SELECT * FROM _id_keys"
            ).fetchall()
        finally:
            self.con.unregister("_id_keys")
        # Rows a key: the repeated-id search and (when no id is closed) the index read it.
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {self.key_counts} AS "
            "SELECT p, h, count(*) AS n FROM bucket_keys GROUP BY p, h"
        ).fetchall()
        return "bucket_keys"

    def rows(
        self, batch_rows: int, keys: str, *, any_closed: bool = True, sort: bool = False
    ) -> Iterator[pa.RecordBatch]:
        """The bucket's unique rows in stream order, without the staging columns.

        ``keys`` is the table of :meth:`make_keys`. Most ids occur once, so only the rows
        of ids that occur more than once (found by their index keys first, then by id)
        go through the per-id window that keeps the earliest copy; the rest stream
        straight through. ``any_closed=False``: no id is in ``closed_ids``, that join is
        skipped. Without ``sort``, files already in stream order (:attr:`order`) are read
        one after another instead of sorted; raises :class:`StreamOrderError` if their rows
        then come out of order (never expected: then call again with ``sort=True``).
        """
        self.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE repeated_ids AS
            SELECT id FROM {keys}
            SEMI JOIN (SELECT p, h FROM {self.key_counts} WHERE n > 1) USING (p, h)
            GROUP BY id HAVING count(*) > 1
            """
        ).fetchall()
        dropped = None if sort or self.order is None else self._dropped(keys, any_closed)
        if self.order is not None and dropped is not None:
            yield from self._rows_in_file_order(batch_rows, self.order, dropped)
            return
        anti = "ANTI JOIN closed_ids c ON u.id = c.id" if any_closed else ""
        rel = self.con.sql(
            f"""
            SELECT u.* EXCLUDE (_seq, _idx) FROM (
                SELECT s.* FROM {self.staged} s ANTI JOIN repeated_ids r ON s.id = r.id
                UNION ALL
                SELECT * FROM (
                    SELECT s.* FROM {self.staged} s SEMI JOIN repeated_ids r ON s.id = r.id
                    QUALIFY row_number() OVER (PARTITION BY id ORDER BY _seq, _idx) = 1
                )
            ) u {anti}
            ORDER BY u._seq, u._idx
            """
        )
        yield from _arrow_reader(rel, batch_rows)

    def _dropped(self, keys: str, any_closed: bool) -> np.ndarray | None:
        """Positions in the stream (``pos`` of ``keys``, files in :attr:`order`) of the
        rows to drop: all but the earliest copy of a repeated id, every copy of an id in
        ``closed_ids``; sorted. None when there are more than
        :data:`MAX_DROPPED_IN_MEMORY`."""
        closed = (
            f"UNION SELECT pos FROM {keys} k SEMI JOIN closed_ids c ON k.id = c.id"
            if any_closed
            else ""
        )
        self.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE dropped_rows AS
            SELECT pos FROM (
                SELECT k.id, k.pos FROM {keys} k SEMI JOIN repeated_ids r ON k.id = r.id
            ) QUALIFY row_number() OVER (PARTITION BY id ORDER BY pos) > 1
            {closed}
            """
        ).fetchall()
        if self._count("SELECT count(*) FROM dropped_rows") > MAX_DROPPED_IN_MEMORY:
            return None
        got = self.con.execute("SELECT pos FROM dropped_rows ORDER BY pos").fetchnumpy()
        return np.asarray(got["pos"], dtype=np.int64)

    def _rows_in_file_order(
        self, batch_rows: int, order: FileOrder, dropped: np.ndarray
    ) -> Iterator[pa.RecordBatch]:
        """The rows of ``order``'s files read one after another, but those at the
        ``dropped`` positions; each batch checked to continue the stream order."""
        rel = self.con.sql(
            f"SELECT * FROM read_parquet({sql_list(order.paths)}, union_by_name = true)"
        )
        at = 0
        last: tuple[int, int] | None = None
        for b in _arrow_reader(rel, batch_rows):
            n = b.num_rows
            if n == 0:
                continue
            seq, idx = b.column("_seq").to_numpy(), b.column("_idx").to_numpy()
            if (last is not None and (int(seq[0]), int(idx[0])) <= last) or not (
                _strictly_increasing(seq, idx)
            ):
                raise StreamOrderError(f"staging rows read out of stream order near row {at}")
            last = (int(seq[-1]), int(idx[-1]))
            lo, hi = np.searchsorted(dropped, [at, at + n])
            b = b.drop_columns(list(STAGING_COLUMNS))
            if hi > lo:
                keep = np.ones(n, dtype=bool)
                keep[dropped[lo:hi] - at] = False
                b = b.filter(pa.array(keep))
            at += n
            yield b
        if at != sum(order.rows):
            raise StreamOrderError(f"read {at} staging rows, the files hold {sum(order.rows)}")


def _arrow_reader(rel: duckdb.DuckDBPyRelation, batch_rows: int) -> Iterator[pa.RecordBatch]:
    reader = (
        rel.to_arrow_reader(batch_rows)
        if hasattr(rel, "to_arrow_reader")
        else (rel.fetch_record_batch(batch_rows))
    )
    try:
        yield from reader
    finally:
        reader.close()  # the connection runs no other query while a result is open


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The bucket's columns in schema order; columns a row's version lacks become null."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, type=f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def exact_chunks(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Re-cut a stream of batches into tables of exactly ``rows`` rows (the last may be short).

    Row-group boundaries then depend only on the data, not on how the engine
    happened to batch it, which keeps output files byte-identical across runs.
    """
    pending: list[pa.RecordBatch] = []
    have = 0
    for b in batches:
        if b.num_rows == 0:
            continue
        pending.append(b)
        have += b.num_rows
        while have >= rows:
            t = pa.Table.from_batches(pending)
            yield t.slice(0, rows).combine_chunks()
            rest = t.slice(rows)
            pending = rest.to_batches()
            have = rest.num_rows
    if have:
        yield pa.Table.from_batches(pending).combine_chunks()

"""Step 3 of a close, out of core: order, deduplicate and stream a bucket's rows with DuckDB.

A bucket can be far larger than memory (an hour of a busy type), so the rows
never sit in one Arrow table: DuckDB reads the staging files, keeps the first
row of every ``id`` in stream order (``_seq``, ``_idx``: the earliest
``published_at``), drops ids that closed buckets within the dedup horizon hold
(:mod:`courier.closer.horizon`), and streams the result
in that order, spilling to disk under its memory limit. The order is a total
order on unique keys, so the output is the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

STAGING_COLUMNS = ("_seq", "_idx")


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
        #: The staging files as one relation (SQL).
        self.staged = f"read_parquet({sql_list(staging)}, union_by_name = true)"
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

    def make_keys(self, keys_query: Callable[[str], str]) -> str:
        """A temp table of the bucket's ids (one row per staged row) with their index
        keys (``keys_query`` over a relation); its name."""
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE bucket_keys AS {keys_query(self.staged)}"
        ).fetchall()
        return "bucket_keys"

    def rows(
        self, batch_rows: int, keys: str, *, any_closed: bool = True
    ) -> Iterator[pa.RecordBatch]:
        """The bucket's unique rows in stream order, without the staging columns.

        ``keys`` is the table of :meth:`make_keys`. Most ids occur once, so only the rows
        of ids that occur more than once (found by their index keys first, then by id)
        go through the per-id window that keeps the earliest copy; the rest stream
        straight through. ``any_closed=False``: no id is in ``closed_ids``, that join is
        skipped.
        """
        self.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE repeated_ids AS
            SELECT id FROM {keys}
            SEMI JOIN (SELECT p, h FROM {keys} GROUP BY p, h HAVING count(*) > 1) USING (p, h)
            GROUP BY id HAVING count(*) > 1
            """
        ).fetchall()
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
        reader = (
            rel.to_arrow_reader(batch_rows)
            if hasattr(rel, "to_arrow_reader")
            else (rel.fetch_record_batch(batch_rows))
        )
        yield from reader


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

"""Pure Arrow steps of a close: order, deduplicate, conform to the schema, split into files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

STAGING_COLUMNS = ("_seq", "_idx")


def order(table: pa.Table) -> pa.Table:
    """Rows in stream order: (stream sequence, line in message). A total, stable order."""
    if table.num_rows == 0:
        return table
    return table.take(pc.sort_indices(table, [("_seq", "ascending"), ("_idx", "ascending")]))


def first_occurrences(table: pa.Table) -> pa.Table:
    """Keep the first row of each ``id`` in the table's order (= earliest published_at)."""
    if table.num_rows == 0:
        return table
    ids = table.column("id")
    rows = pa.table({"id": ids, "_row": pa.array(range(table.num_rows), type=pa.int64())})
    firsts = rows.group_by("id", use_threads=False).aggregate([("_row", "min")])
    keep = pc.sort_indices(firsts.column("_row_min"))
    return table.take(firsts.column("_row_min").take(keep))


def drop_ids(table: pa.Table, ids: pa.Array | pa.ChunkedArray | None) -> pa.Table:
    """Rows whose id is not in ``ids``."""
    if ids is None or len(ids) == 0 or table.num_rows == 0:
        return table
    present = pc.is_in(table.column("id"), value_set=pa.chunked_array(ids).combine_chunks())
    return table.filter(pc.invert(present))


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


def split_rows(table: pa.Table, max_rows: int, target_bytes: int) -> list[pa.Table]:
    """Deterministic, right-sized slices: few large files, none above the bounds.

    Parquet with zstd is typically 4x smaller than Arrow in memory, so the byte
    bound is applied to the in-memory size times four.
    """
    n = table.num_rows
    if n == 0:
        return []
    per_row = max(1.0, table.nbytes / n / 4)
    rows = max(1, min(max_rows, int(target_bytes / per_row)))
    return [table.slice(i, rows) for i in range(0, n, rows)]

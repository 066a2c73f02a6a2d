"""Commit one closed bucket to its type's table: one snapshot, idempotent.

The table follows ``_SUCCESS``: committing bucket K makes the table hold exactly
the files K's current manifest lists, in one snapshot whose summary records K
and the manifest version. The bucket files are added where the closer wrote
them (no copy); the bucket is complete when ``_SUCCESS`` exists, whether or not
the table has caught up.

Steps:

1. refresh the table and look K up (:class:`~courier.tables.index.TableIndex`):
   already at this version -> done;
2. merge the type's schema and the files' schemas into the table's schema;
3. check that every file's columns resolve to the table's columns of the same
   name (a wrong mapping would read NULL silently: refused, loudly);
4. one snapshot: an append of K's files (first commit of K), or an overwrite that
   removes the files of K's previous version and adds the new ones (re-close).
   Readers see the old version or the new, never both.

A crash before step 4's catalog update leaves the table as it was (maybe with
a schema update, which is harmless); a crash after it is found by step 1 of the
next attempt. Two committers of the same bucket race in step 4: the table's
``commit.retry.num-retries = 0`` makes the loser fail instead of replaying its
append on top of the winner's, and its next attempt finds K in step 1.

Partitioning: none. ``add_files`` takes partition values from each file's footer
statistics, and one bucket file can hold rows from two hours (skewed rows, DESIGN
§6), which a time partition refuses. An unpartitioned table takes every bucket;
scans still skip files by their ``published_at`` bounds, which the manifests keep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from courier.errors import StorageError, TableError
from courier.model import BucketKey
from courier.storage import Layout, Manifest
from courier.tables.index import (
    SUMMARY_BUCKET,
    SUMMARY_EVENTS,
    SUMMARY_VERSION,
    TableIndex,
    bucket_file_uris,
)
from courier.tables.schema import check_file_mapping, check_representable, evolve

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

log = logging.getLogger("courier.tables")

Outcome = Literal["appended", "overwritten", "already", "empty"]


@dataclass(frozen=True)
class CommitResult:
    key: BucketKey
    version: int
    outcome: Outcome
    snapshot_id: int | None


def snapshot_summary(key: BucketKey, manifest: Manifest) -> dict[str, str]:
    return {
        SUMMARY_BUCKET: key.label(),
        SUMMARY_VERSION: str(manifest.version),
        SUMMARY_EVENTS: str(manifest.events),
    }


def commit_bucket(
    table: Table,
    layout: Layout,
    key: BucketKey,
    manifest: Manifest,
    schema: pa.Schema,
    *,
    skew_secs: float,
) -> CommitResult:
    """Make ``table`` hold exactly the files of ``manifest`` for ``key`` (module docstring).

    Raises :class:`TableMappingError` for files that would read wrong columns, and
    :class:`TableError` when the catalog refuses the commit (retry later)."""
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.io.pyarrow import parquet_file_to_data_file

    # Step 1: look the bucket up.
    table.refresh()
    index = TableIndex(table, layout, skew_secs=skew_secs)
    if index.committed(key, manifest):
        return CommitResult(key, manifest.version, "already", None)
    paths = bucket_file_uris(layout, key, manifest)
    # The files of an earlier version (re-close), or of this one when the history was
    # expired; a first commit within the retained history has none: skip the manifest scan.
    first = manifest.version == 1 and index.history_authoritative(manifest)
    old: dict[str, DataFile] = {} if first else index.files_of(key)
    if not paths and not old:
        return CommitResult(key, manifest.version, "empty", None)
    # Step 2: the table's schema takes the type's and the files' columns.
    file_schemas = [_file_schema(layout, key, name) for name in (f.name for f in manifest.files)]
    for file_schema in file_schemas:  # a column an older version had, since removed
        check_representable(key.event_type, file_schema)
    evolve(table, [schema, *file_schemas])
    # Step 3: every column reads back as itself.
    for path, file_schema in zip(paths, file_schemas, strict=True):
        check_file_mapping(table, path, file_schema)
    # Step 4: one snapshot.
    tx = table.transaction()
    if table.metadata.name_mapping() is None:
        mapping: dict[str, Any] = {
            "schema.name-mapping.default": table.schema().name_mapping.model_dump_json()
        }
        tx.set_properties(mapping)
    update = tx.update_snapshot(snapshot_properties=snapshot_summary(key, manifest))
    removed = [f for p, f in old.items() if p not in paths]
    producer = update.overwrite() if removed else update.merge_append()
    outcome: Outcome = "overwritten" if removed else "appended"
    with producer:
        for data_file in removed:
            producer.delete_data_file(data_file)
        for path in paths:
            if path not in old:
                producer.append_data_file(
                    parquet_file_to_data_file(table.io, tx.table_metadata, path)
                )
    try:
        tx.commit_transaction()
    except CommitFailedException as exc:
        raise TableError(
            f"committing {key.label()} v{manifest.version} to {'.'.join(table.name())} lost to "
            f"a concurrent commit ({exc}); retrying"
        ) from exc
    snapshot = table.current_snapshot()
    log.info(
        "table %s: %s %s v%d (%d files)",
        ".".join(table.name()),
        outcome,
        key.label(),
        manifest.version,
        len(paths),
    )
    return CommitResult(key, manifest.version, outcome, snapshot.snapshot_id if snapshot else None)


def _file_schema(layout: Layout, key: BucketKey, name: str) -> pa.Schema:
    path: Path = layout.bucket_dir(key) / name
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StorageError(
            f"cannot read the footer of {path} listed in {key.label()}'s manifest ({exc}); "
            "not committed to its table"
        ) from exc

"""Closed buckets as Apache Iceberg table commits: one table per event type.

Each closed bucket becomes one snapshot of its type's table that adds the
bucket's part files where they are; a re-close becomes one overwrite snapshot.
The bucket contract does not change: a bucket is complete when ``_SUCCESS``
exists, and the table catches up (:class:`TableSync`, run by the closer).

- ``catalog``: the catalog named by settings (embedded SQLite by default) and the tables;
- ``schema``: table schemas from Arrow schemas, and the field-id check of every file;
- ``index``: which buckets a table holds, from its snapshot history;
- ``commit``: the idempotent commit of one bucket (append, or overwrite on re-close);
- ``expire``: snapshot expiry that deletes no bucket file;
- ``sync``: the blocking commits and the closer's background worker;
- ``status``: the audit's question, "is this closed bucket in its table yet?".

pyiceberg is imported only when a catalog is used, never at import time.
"""

from courier.tables.catalog import catalog_properties, iceberg_dir, open_catalog
from courier.tables.commit import CommitResult, commit_bucket
from courier.tables.expire import expire_snapshots
from courier.tables.index import TableIndex, bucket_file_uris, file_uri
from courier.tables.metrics import TableMetrics
from courier.tables.schema import check_file_mapping, evolve
from courier.tables.status import TableStatus
from courier.tables.sync import BucketTables, TableSync

__all__ = [
    "BucketTables",
    "CommitResult",
    "TableIndex",
    "TableMetrics",
    "TableStatus",
    "TableSync",
    "bucket_file_uris",
    "catalog_properties",
    "check_file_mapping",
    "commit_bucket",
    "evolve",
    "expire_snapshots",
    "file_uri",
    "iceberg_dir",
    "open_catalog",
]

"""Storage: bucket layout, atomic writes, manifests and readers (local filesystem).

Object stores (S3, GCS) come later behind the same layout and protocols.
"""

from courier.storage.atomic import (
    FileInfo,
    fsync_dir,
    move_durable,
    remove_stale_temps,
    sha256_file,
    write_bytes_atomic,
    write_parquet_atomic,
    write_parquet_chunks_atomic,
)
from courier.storage.layout import Layout
from courier.storage.manifest import (
    Manifest,
    ManifestFile,
    ManifestRepair,
    SeqRange,
    read_manifest,
    seq_ranges,
    write_manifest,
)
from courier.storage.reader import BucketReader, BucketState

__all__ = [
    "BucketReader",
    "BucketState",
    "FileInfo",
    "Layout",
    "Manifest",
    "ManifestFile",
    "ManifestRepair",
    "SeqRange",
    "fsync_dir",
    "move_durable",
    "read_manifest",
    "remove_stale_temps",
    "seq_ranges",
    "sha256_file",
    "write_bytes_atomic",
    "write_manifest",
    "write_parquet_atomic",
    "write_parquet_chunks_atomic",
]

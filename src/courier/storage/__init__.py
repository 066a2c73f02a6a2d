"""Storage: the bucket store (local, S3, GCS), bucket layout, atomic writes, manifests, readers."""

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
from courier.storage.store import BucketStore, open_store

__all__ = [
    "BucketReader",
    "BucketState",
    "BucketStore",
    "FileInfo",
    "Layout",
    "Manifest",
    "ManifestFile",
    "ManifestRepair",
    "SeqRange",
    "fsync_dir",
    "move_durable",
    "open_store",
    "read_manifest",
    "remove_stale_temps",
    "seq_ranges",
    "sha256_file",
    "write_bytes_atomic",
    "write_manifest",
    "write_parquet_atomic",
    "write_parquet_chunks_atomic",
]

"""Storage: the bucket store (local, S3, GCS), bucket layout, atomic writes, manifests, readers.

The names below load on first use, so that a module needing only the atomic
writes (the SDK's spool) does not pay for the readers' pyarrow and duckdb.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: The modules holding those names, cheapest to import first (the reader loads duckdb).
_MODULES = ("layout", "atomic", "manifest", "store", "reader")


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module in _MODULES:
            value = getattr(importlib.import_module(f"courier.storage.{module}"), name, None)
            if value is not None:
                globals()[name] = value  # later lookups skip this function
                return value
    raise AttributeError(f"module 'courier.storage' has no attribute {name!r}")

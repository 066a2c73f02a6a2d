"""The bucket store: one interface for a local directory, S3 and GCS, chosen by URL.

See :mod:`courier.storage.store.base` for the guarantees every backend keeps.
The S3 and GCS backends (extras ``s3`` and ``gcs``) are imported only when a
URL asks for them.
"""

from courier.storage.store.base import (
    BucketStore,
    ObjectInfo,
    Versioned,
    open_store,
)
from courier.storage.store.local import LocalStore
from courier.storage.store.memory import MemoryStore

__all__ = [
    "BucketStore",
    "LocalStore",
    "MemoryStore",
    "ObjectInfo",
    "Versioned",
    "open_store",
]

"""Closer: watermark → close protocol → manifest (DESIGN §6)."""

from courier.closer.catalog import Catalog, CatalogEntry
from courier.closer.protocol import CRASH_AFTER_STEP_ENV, BucketCloser, CloseResult
from courier.closer.service import Closer, default_closer_id

__all__ = [
    "CRASH_AFTER_STEP_ENV",
    "BucketCloser",
    "Catalog",
    "CatalogEntry",
    "CloseResult",
    "Closer",
    "default_closer_id",
]

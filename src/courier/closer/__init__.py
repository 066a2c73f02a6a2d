"""Closer: watermark → close protocol → manifest (DESIGN §6)."""

from courier.closer.catalog import Catalog, CatalogEntry
from courier.closer.protocol import BucketCloser, CloseResult
from courier.closer.service import Closer, default_closer_id

__all__ = [
    "BucketCloser",
    "Catalog",
    "CatalogEntry",
    "CloseResult",
    "Closer",
    "default_closer_id",
]

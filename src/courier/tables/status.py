"""Is a closed bucket in its table yet? The audit's question, answered from the catalog."""

from __future__ import annotations

import logging

from courier.errors import TableError
from courier.model import BucketKey
from courier.settings import Settings
from courier.storage import Layout, Manifest
from courier.tables.index import TableIndex
from courier.tables.sync import BucketTables

log = logging.getLogger("courier.tables")


class TableStatus:
    """Answers per closed bucket whether its table holds it, loading each table once.

    A catalog that cannot be reached answers None (unknown), never False: the audit
    must not report buckets missing from a table it could not look at.
    """

    def __init__(self, settings: Settings, layout: Layout) -> None:
        self._tables = BucketTables(settings, layout)
        self._layout = layout
        self._skew_secs = settings.max_clock_skew_secs
        self._index: dict[str, TableIndex | None] = {}
        self.error: str | None = None

    def __call__(self, key: BucketKey, manifest: Manifest) -> bool | None:
        name = key.event_type
        if name not in self._index:
            self._index[name] = self._load(name)
        index = self._index[name]
        if index is None:
            return None if self.error else (not manifest.files and manifest.version == 1)
        return index.committed(key, manifest)

    def _load(self, name: str) -> TableIndex | None:
        if self.error:
            return None
        try:
            table = self._tables.table(name)
        except TableError as exc:
            self.error = str(exc)
            log.warning("audit: %s", exc)
            return None
        return None if table is None else TableIndex(table, self._layout, skew_secs=self._skew_secs)

"""Keeping every type's table in step with its closed buckets.

:class:`BucketTables` is the blocking part (the catalog connection, one commit,
the list of closed buckets a table lacks); :class:`TableSync` runs it in the
closer, off the close path:

- after every close, the closer hands the bucket over (:meth:`TableSync.submit`,
  which never blocks and never fails);
- at start, a catch-up pass queues every closed bucket the table lacks (a closer
  that crashed between ``_SUCCESS`` and the commit, a catalog that was down);
- one worker commits the queue in bucket order, in a thread. A failure backs the
  type off (1 s doubling to ``tables.backoff_max_secs``) while other types go on;
  the bucket stays queued. A file that would read wrong columns
  (:class:`TableMappingError`) is logged as an error on every attempt; a type whose
  schema no Iceberg v2 table can hold (:class:`TableSchemaError`) is logged once per
  schema version and gets no table;
- every ``tables.catch_up_interval_secs`` the catch-up runs again (a re-close
  whose own commit failed while the catalog was down is found there);
- every ``tables.expire_interval_secs``, and after every ``tables.max_snapshots / 2``
  commits to a table, old snapshots are expired.

The close never waits for any of this: the bucket is complete when ``_SUCCESS``
exists, and the table catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import pyarrow as pa

from courier.errors import (
    CourierError,
    ManifestError,
    TableError,
    TableMappingError,
    TableSchemaError,
)
from courier.model import BucketKey
from courier.settings import Settings
from courier.storage import Layout, read_manifest
from courier.tables.catalog import create_table, load_table, open_catalog
from courier.tables.commit import CommitResult, commit_bucket
from courier.tables.expire import expire_snapshots
from courier.tables.index import TableIndex
from courier.tables.metrics import TableMetrics
from courier.tables.schema import check_representable

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog as IcebergCatalog
    from pyiceberg.table import Table

log = logging.getLogger("courier.tables")

_BACKOFF_FIRST_SECS = 1.0
_T = TypeVar("_T")


class BucketTables:
    """The catalog and the commits of one process (blocking; one thread at a time)."""

    def __init__(self, settings: Settings, layout: Layout) -> None:
        self.settings = settings
        self.cfg = settings.tables
        self.layout = layout
        self._catalog: IcebergCatalog | None = None

    def catalog(self) -> IcebergCatalog:
        if self._catalog is None:
            self._catalog = open_catalog(self.settings)
        return self._catalog

    def table(self, event_type: str, schema: pa.Schema | None = None) -> Table | None:
        """The type's table; created from ``schema`` when missing (None: not created)."""
        return self._guard(
            f"loading the table of {event_type}", lambda: self._load(event_type, schema)
        )

    def _load(self, event_type: str, schema: pa.Schema | None) -> Table | None:
        catalog = self.catalog()
        table = load_table(catalog, self.cfg, event_type)
        if table is None and schema is not None:
            table = create_table(catalog, self.cfg, event_type, schema)
        return table

    def sync(self, key: BucketKey, schema: pa.Schema) -> CommitResult:
        """Make the table of ``key``'s type hold the files its ``_SUCCESS`` lists now."""
        check_representable(key.event_type, schema)
        manifest = read_manifest(self.layout.manifest_path(key))
        return self._guard(
            f"committing {key.label()}",
            lambda: commit_bucket(
                self._table(key.event_type, schema),
                self.layout,
                key,
                manifest,
                schema,
                skew_secs=self.settings.max_clock_skew_secs,
            ),
        )

    def _table(self, event_type: str, schema: pa.Schema) -> Table:
        table = self._load(event_type, schema)
        assert table is not None
        return table

    def uncommitted(self, event_type: str) -> list[BucketKey]:
        """Closed buckets of ``event_type`` its table does not hold (at their current version)."""

        def find() -> list[BucketKey]:
            table = self._load(event_type, None)
            index = (
                TableIndex(table, self.layout, skew_secs=self.settings.max_clock_skew_secs)
                if table is not None
                else None
            )
            out = []
            for start in self.layout.closed_bucket_starts(event_type):
                key = BucketKey(event_type, start)
                try:
                    manifest = read_manifest(self.layout.manifest_path(key))
                except ManifestError:
                    continue  # the audit reports unreadable manifests
                if index is None:
                    if manifest.files:
                        out.append(key)
                elif not index.committed(key, manifest):
                    out.append(key)
            return out

        return self._guard(f"listing the uncommitted buckets of {event_type}", find)

    def expire(self, event_type: str) -> int:
        def run() -> int:
            table = self._load(event_type, None)
            if table is None:
                return 0
            return expire_snapshots(
                table,
                retention_secs=self.cfg.snapshot_retention_secs,
                max_snapshots=self.cfg.max_snapshots,
            )

        return self._guard(f"expiring snapshots of {event_type}", run)

    def _guard(self, what: str, call: Callable[[], _T]) -> _T:
        """Run a catalog call; anything the catalog's clients raise becomes TableError."""
        try:
            return call()
        except CourierError:
            raise
        except Exception as exc:
            # pyiceberg surfaces SQLAlchemy, HTTP, pydantic and OS errors alike; all of
            # them mean "not now": the caller backs off and retries. Reconnect next time.
            self._catalog = None
            raise TableError(f"{what} failed ({type(exc).__name__}: {exc}); will retry") from exc


SchemaSource = Callable[[], Awaitable[dict[str, pa.Schema]]]


class TableSync:
    """Commits closed buckets to their tables in the background (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        layout: Layout,
        *,
        metrics: TableMetrics | None = None,
        tables: BucketTables | None = None,
    ) -> None:
        self.cfg = settings.tables
        self.tables = tables or BucketTables(settings, layout)
        self.metrics = metrics or TableMetrics()
        self._pending: dict[BucketKey, pa.Schema | None] = {}
        self._wake = asyncio.Event()
        self._backoff_secs: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}
        self._caught: set[str] = set()
        self._since_expiry: dict[str, int] = {}
        self._unsupported: dict[str, pa.Schema] = {}
        self._known: set[str] | None = None
        self.results: list[CommitResult] = []

    def submit(self, key: BucketKey, schema: pa.Schema | None = None) -> None:
        """Queue ``key`` for a commit (never blocks, never raises)."""
        self._pending[key] = schema or self._pending.get(key)
        self._wake.set()

    def pending(self) -> list[BucketKey]:
        return sorted(self._pending, key=lambda k: (k.start, k.event_type))

    @property
    def caught_up(self) -> bool:
        """True once the start-up catch-up pass has run for every known type."""
        return self._known is not None and self._known <= self._caught

    async def run(self, stop: asyncio.Event, schemas: SchemaSource) -> None:
        """Catch up, then commit what :meth:`submit` queues, until ``stop``."""
        next_expiry = time.monotonic() + self.cfg.expire_interval_secs
        next_catch_up = time.monotonic() + self.cfg.catch_up_interval_secs
        while not stop.is_set():
            self._wake.clear()
            wait = self.cfg.backoff_max_secs
            try:
                known = await schemas()
                if time.monotonic() >= next_catch_up:
                    next_catch_up = time.monotonic() + self.cfg.catch_up_interval_secs
                    self._caught.clear()
                await self._catch_up(known)
                await self._drain(known, stop)
                if time.monotonic() >= next_expiry:
                    next_expiry = time.monotonic() + self.cfg.expire_interval_secs
                    await self._expire(list(known))
                wait = self._next_wait()
            except CourierError as exc:
                log.warning("table sync pass failed (%s); retrying in %.1fs", exc, wait)
            except Exception:
                # A bug here must not stop the closer that runs us: log it, retry later.
                log.exception("table sync pass failed unexpectedly; retrying in %.1fs", wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop, self._wake), wait)

    def _next_wait(self) -> float:
        now = time.monotonic()
        waiting = {k.event_type for k in self._pending} | (self._known or set()) - self._caught
        due = [self._retry_at.get(name, now) - now for name in waiting]
        return max(0.05, min(due, default=self.cfg.expire_interval_secs))

    async def _catch_up(self, known: dict[str, pa.Schema]) -> None:
        """Queue the closed buckets each type's table lacks (once per type per process)."""
        for name in sorted(set(known) - self._caught):
            if not self._ready(name):
                continue
            try:
                missing = await asyncio.to_thread(self.tables.uncommitted, name)
            except CourierError as exc:
                self._fail(name, "catalog", exc)
                continue
            for key in missing:
                self.submit(key, known[name])
            self.metrics.uncommitted.labels(name).set(len(missing))
            if missing:
                log.info("table %s: catching up %d closed buckets", name, len(missing))
            self._caught.add(name)
        self._known = set(known)

    async def _drain(self, known: dict[str, pa.Schema], stop: asyncio.Event) -> None:
        for key in self.pending():
            if stop.is_set():
                return
            name = key.event_type
            if not self._ready(name):
                continue
            schema = known.get(name) or self._pending.get(key)
            if schema is None:  # a type the registry no longer lists: wait, do not spin
                self._fail(name, "schema", TableError(f"{name} is not in the schema registry"))
                continue
            if self._unsupported.get(name) == schema:
                self._pending.pop(key, None)  # said once; the audit lists it as not in a table
                continue
            started = time.perf_counter()
            try:
                result = await asyncio.to_thread(self.tables.sync, key, schema)
            except TableSchemaError as exc:
                self.metrics.failures.labels(name, "unsupported").inc()
                log.error("table commits of %s: %s", name, exc)
                self._unsupported[name] = schema  # until a new schema version
                self._pending.pop(key, None)
                continue
            except TableMappingError as exc:
                self._fail(name, "mapping", exc)
                continue
            except ManifestError as exc:
                self._fail(name, "manifest", exc)
                continue
            except CourierError as exc:
                self._fail(name, "error", exc)
                continue
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
            self.metrics.commits.labels(name, result.outcome).inc()
            self._pending.pop(key, None)
            if result.snapshot_id is not None:
                self._since_expiry[name] = self._since_expiry.get(name, 0) + 1
            if self._since_expiry.get(name, 0) >= max(1, self.cfg.max_snapshots // 2):
                await self._expire([name])  # a long catch-up would slow every commit
            self._backoff_secs.pop(name, None)
            self._retry_at.pop(name, None)
            self.results.append(result)
            del self.results[:-1000]
            self.metrics.uncommitted.labels(name).set(
                sum(1 for k in self._pending if k.event_type == name)
            )

    async def _expire(self, names: list[str]) -> None:
        for name in names:
            self._since_expiry[name] = 0
            try:
                await asyncio.to_thread(self.tables.expire, name)
            except CourierError as exc:
                log.warning("expiring snapshots of %s failed: %s", name, exc)

    def _ready(self, name: str) -> bool:
        return self._retry_at.get(name, 0.0) <= time.monotonic()

    def _fail(self, name: str, reason: str, exc: Exception) -> None:
        self.metrics.failures.labels(name, reason).inc()
        prev = self._backoff_secs.get(name, 0.0)
        delay = min(self.cfg.backoff_max_secs, max(_BACKOFF_FIRST_SECS, prev * 2))
        self._backoff_secs[name] = delay
        self._retry_at[name] = time.monotonic() + delay
        level = logging.ERROR if isinstance(exc, TableMappingError) else logging.WARNING
        log.log(level, "table commit of %s: %s; retrying in %.1fs", name, exc, delay)


async def _first(*events: asyncio.Event) -> None:
    """Return when any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()

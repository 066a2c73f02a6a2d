"""The data consumers' interface (DESIGN §7): read buckets, list states, wait, SQL.

A bucket is complete iff its ``_SUCCESS`` manifest exists; only the files it
lists are read, so a half-finished close (files written, manifest not yet)
is invisible. Open buckets are read from staging only when asked, and then
contain duplicates (staging is deduplicated by the closer, not here).

Everything is read through the bucket store, so a reader works on a local
directory, ``s3://`` or ``gs://`` alike; Parquet objects of an object store are
read from scratch copies (deleted after each read, or, for
:meth:`BucketReader.duckdb`, when its connection goes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from courier.errors import (
    BucketNotClosedError,
    ManifestError,
    ObjectNotFoundError,
    StorageError,
)
from courier.model import INVALID_TYPE, BucketKey, bucket_start, iso_utc
from courier.storage.layout import Layout
from courier.storage.manifest import DcTransfer, Manifest, decode_manifest
from courier.storage.store import BucketStore, LocalStore

#: Columns staging files carry on top of the bucket columns.
STAGING_COLUMNS: tuple[str, ...] = ("_seq", "_idx")


@dataclass(frozen=True)
class BucketState:
    """One bucket as seen on disk: closed (has a manifest) or open (has staging files)."""

    event_type: str
    start: int
    end: int
    state: Literal["closed", "open"]
    #: Rows in the closed bucket; None while open.
    events: int | None
    #: Final files listed by the manifest (0 while open).
    files: int
    close_delay_secs: float | None
    #: Staging files present (normally 0 once closed).
    staging_files: int
    #: Per accepting DC: events and transfer delay (the manifest's ``dcs``; empty while open).
    dcs: dict[str, DcTransfer] = field(default_factory=dict)


class BucketReader:
    """Read-only access to the buckets in a bucket store."""

    def __init__(
        self,
        root: Path | str | BucketStore,
        bucket_width_secs: int,
        *,
        scratch_dir: Path | None = None,
    ) -> None:
        """``root``: a data directory, a store URL or a store. ``scratch_dir`` holds the
        short-lived copies of Parquet objects read from an object store (a new
        temporary directory per read when None)."""
        self.layout = Layout(root, bucket_width_secs)
        self.store = self.layout.store
        self.scratch_dir = scratch_dir

    @property
    def width(self) -> int:
        return self.layout.width

    def read(
        self,
        event_type: str,
        start: float,
        end: float,
        *,
        include_open: bool = False,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Rows of the buckets of ``event_type`` whose start is in ``[bucket_start(start), end)``.

        Closed buckets are read from the files their manifest lists. Open
        buckets are skipped unless ``include_open``, which adds their staging
        files (``_seq``/``_idx`` dropped, duplicates kept). Files written under
        older schema versions are merged by column name, missing columns as
        nulls. ``columns`` selects and orders columns; names present in no file
        are left out. With nothing to read, the result is an empty table with
        the schema of the type's latest closed file (no columns if none exists).
        """
        first = bucket_start(start, self.width)
        closed = [s for s in self.layout.closed_bucket_starts(event_type) if first <= s < end]
        open_: list[int] = []
        if include_open:
            closed_set = set(closed)
            open_ = [
                s
                for s in self.layout.staging_bucket_starts(event_type)
                if first <= s < end and s not in closed_set
            ]
        open_set = set(open_)
        tables: list[pa.Table] = []
        for s in sorted([*closed, *open_]):
            key = BucketKey(event_type, s)
            if s in open_set:
                tables.extend(self._read_open(key, columns))
            else:
                tables.extend(self._read_closed(key, columns))
        if not tables:
            return self._empty(event_type, columns)
        try:
            # "permissive": a compatible type change (int -> long, a widened decimal, a union
            # branch added) widens the column instead of failing the read.
            table = pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowException, ValueError) as exc:
            raise StorageError(
                f"files of {event_type} in [{iso_utc(first)}, {iso_utc(end)}) have "
                f"incompatible schemas: {exc}"
            ) from exc
        return _select(table, columns)

    def states(
        self, event_type: str | None = None, *, since: float | None = None
    ) -> list[BucketState]:
        """Closed and open buckets, sorted by (type, start); ``since`` keeps buckets ending after it.

        Without ``event_type`` every event type is listed (not ``_invalid``).
        """
        types = [event_type] if event_type is not None else self.layout.event_types()
        out: list[BucketState] = []
        for t in types:
            closed = set(self.layout.closed_bucket_starts(t))
            starts = closed | set(self.layout.staging_bucket_starts(t))
            for s in sorted(starts):
                if since is not None and s + self.width <= since:
                    continue
                out.append(self._state(BucketKey(t, s), closed=s in closed))
        return out

    def wait_closed(
        self, event_type: str, start: float, timeout_secs: float, poll_secs: float = 0.2
    ) -> Manifest:
        """Block until the bucket containing ``start`` is closed; return its manifest.

        Raises BucketNotClosedError when ``timeout_secs`` pass first.
        """
        key = BucketKey(event_type, bucket_start(start, self.width))
        deadline = time.monotonic() + timeout_secs
        while True:
            # The manifest is put whole (atomically), so existing means readable.
            manifest = self._manifest_or_none(key)
            if manifest is not None:
                return manifest
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BucketNotClosedError(
                    f"bucket {event_type} {iso_utc(key.start)} was not closed within "
                    f"{timeout_secs}s (no {self.store.url}/{self.layout.manifest_key(key)}); "
                    "it may still be inside its grace period"
                )
            time.sleep(min(poll_secs, remaining))

    def manifest(self, event_type: str, start: float) -> Manifest | None:
        """The manifest of the bucket containing ``start``, or None while it is open."""
        return self._manifest_or_none(BucketKey(event_type, bucket_start(start, self.width)))

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per type over its closed files.

        View names are the type names (``_invalid`` included when it has
        closed data); a type with no closed file gets no view. The file list
        is taken now: buckets closed later need a new connection. On an object
        store the closed files are copied to scratch first (DuckDB's httpfs
        cannot be installed here) and kept until the connection is garbage
        collected: the scratch disk holds every closed file, so prefer
        :meth:`read` with a time range for large datasets.
        """
        con = duckdb.connect(":memory:")
        local_dir: Path | None = None
        if not isinstance(self.store, LocalStore):
            local_dir = Path(tempfile.mkdtemp(prefix="courier-sql-", dir=self.scratch_dir))
            weakref.finalize(con, shutil.rmtree, local_dir, True)
        try:
            for t in [*self.layout.event_types(), INVALID_TYPE]:
                paths = [str(self._sql_file(k, local_dir)) for k in self._closed_keys(t)]
                if not paths:
                    continue
                files_sql = ", ".join(_sql_string(p) for p in paths)
                con.execute(
                    f"CREATE VIEW {_sql_identifier(t)} AS "
                    f"SELECT * FROM read_parquet([{files_sql}], union_by_name = true, hive_partitioning = false)"
                )
        except duckdb.Error as exc:
            con.close()
            raise StorageError(
                f"could not create the DuckDB views of {self.store.url}: {exc}"
            ) from exc
        except BaseException:
            con.close()
            raise
        return con

    def _sql_file(self, key: str, local_dir: Path | None) -> Path:
        """A local path of ``key`` that outlives this call: the file itself, or a scratch copy."""
        if local_dir is None:
            assert isinstance(self.store, LocalStore)
            return self.store.root / key
        dest = local_dir / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.store.local_file(key, local_dir) as downloaded:
            os.link(
                downloaded, dest
            )  # same directory tree: keeps the bytes after the copy's name goes
        return dest

    # -- helpers -------------------------------------------------------------

    def _manifest(self, key: BucketKey) -> Manifest:
        try:
            return self.layout.read_manifest(key)
        except StorageError as exc:
            where = self.layout.where(self.layout.manifest_key(key))
            raise ManifestError(f"could not read manifest {where}: {exc}") from exc

    def _manifest_or_none(self, key: BucketKey) -> Manifest | None:
        try:
            data = self.store.get(self.layout.manifest_key(key))
        except ObjectNotFoundError:
            return None
        return decode_manifest(data, f"{self.store.url}/{self.layout.manifest_key(key)}")

    def _closed_keys(self, event_type: str) -> list[str]:
        keys: list[str] = []
        for s in self.layout.closed_bucket_starts(event_type):
            key = BucketKey(event_type, s)
            prefix = self.layout.bucket_prefix(key)
            keys.extend(f"{prefix}/{f.name}" for f in self._manifest(key).files)
        return keys

    def _read_closed(self, key: BucketKey, columns: list[str] | None) -> list[pa.Table]:
        prefix = self.layout.bucket_prefix(key)
        return [self._read_object(f"{prefix}/{f.name}", columns) for f in self._manifest(key).files]

    def _read_open(self, key: BucketKey, columns: list[str] | None) -> list[pa.Table]:
        try:
            tables = [
                _drop_staging_columns(self._read_object(o.key, columns, missing_ok=False))
                for o in self.layout.list_staging(key)
            ]
        except ObjectNotFoundError:
            # The closer deletes staging files only after writing the manifest
            # (close step 7), so a vanished file means the bucket just closed.
            if self._manifest_or_none(key) is not None:
                return self._read_closed(key, columns)
            raise StorageError(
                f"staging files of {key.label()} vanished while reading and the bucket "
                "has no manifest; retry the read"
            ) from None
        return tables

    def _read_object(
        self, key: str, columns: list[str] | None, *, missing_ok: bool = True
    ) -> pa.Table:
        """Read one Parquet object; StorageError on failure.

        With ``missing_ok=False`` a missing object raises ObjectNotFoundError for the caller.
        """
        where = f"{self.store.url}/{key}"
        try:
            with self._scratch() as scratch, self.store.local_file(key, scratch) as path:
                return _read_file(path, columns, where)
        except ObjectNotFoundError:
            if not missing_ok:
                raise
            raise StorageError(f"{where} is listed by its bucket's manifest but missing") from None

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[Path]:
        if self.scratch_dir is not None or isinstance(self.store, LocalStore):
            yield self.scratch_dir or Path(tempfile.gettempdir())  # a local store copies nothing
            return
        with tempfile.TemporaryDirectory(prefix="courier-read-") as tmp:
            yield Path(tmp)

    def _state(self, key: BucketKey, *, closed: bool) -> BucketState:
        staging = len(self.layout.list_staging(key))
        end = key.end(self.width)
        if not closed:
            return BucketState(
                key.event_type,
                key.start,
                end,
                "open",
                events=None,
                files=0,
                close_delay_secs=None,
                staging_files=staging,
            )
        m = self._manifest(key)
        return BucketState(
            key.event_type,
            key.start,
            end,
            "closed",
            events=m.events,
            files=len(m.files),
            close_delay_secs=m.close_delay_secs,
            staging_files=staging,
            dcs=m.dcs,
        )

    def _empty(self, event_type: str, columns: list[str] | None) -> pa.Table:
        for s in reversed(self.layout.closed_bucket_starts(event_type)):
            key = BucketKey(event_type, s)
            for f in self._manifest(key).files:
                part = f"{self.layout.bucket_prefix(key)}/{f.name}"
                return _select(self._read_object(part, columns).schema.empty_table(), columns)
        return pa.table({})


def _read_file(path: Path, columns: list[str] | None, where: str) -> pa.Table:
    """Read one local Parquet file (only the wanted columns it has); StorageError naming ``where``."""
    try:
        # ParquetFile reads exactly this file: no Hive partition columns from its path.
        with pq.ParquetFile(path) as f:
            wanted = None
            if columns is not None:
                names = set(f.schema_arrow.names)
                wanted = [c for c in columns if c in names]
            return f.read(columns=wanted)
    except FileNotFoundError:
        raise ObjectNotFoundError(f"{where} does not exist") from None
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"could not read {where}: {exc}") from exc


def _drop_staging_columns(table: pa.Table) -> pa.Table:
    return table.drop_columns([c for c in STAGING_COLUMNS if c in table.column_names])


def _select(table: pa.Table, columns: list[str] | None) -> pa.Table:
    if columns is None:
        return table
    return table.select([c for c in columns if c in table.column_names])


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

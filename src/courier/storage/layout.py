"""Where everything lives in the bucket store.

::

    <Type>/<partition>/part-00000.parquet   final bucket files
    <Type>/<partition>/_SUCCESS              manifest, written last
    _invalid/<partition>/...                 rejected events, laid out like a type
    _staging/<Type>/<partition>/<writer>-<first_seq>-<last_seq>[-<flush>].parquet
    _quarantine/<Type>/...                   undecodable messages
    _index/<Type>/<bucket_start>.parquet     id index of a closed bucket (closer/horizon.py)

``<partition>`` is :func:`courier.model.partition_path`, e.g.
``date=2026-11-26/hour=10``. Names starting with ``_`` or ``.`` are ignored by
Hive-style readers; the local store's temp files start with ``.tmp-`` and are
never listed.

Every place is declared once, as an object key (``*_key``, ``*_prefix``);
the ``Path`` methods (``bucket_dir``, ``manifest_path``, ...) are the same
places on a local store, for the components that still write files directly,
and fail with ConfigError on an object store. Listings go through the store.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from courier.errors import ConfigError, ManifestError, ObjectNotFoundError
from courier.model import BucketKey, parse_partition_path, partition_path, validate_bucket_width
from courier.storage.store import BucketStore, LocalStore, ObjectInfo, open_store

if TYPE_CHECKING:
    from courier.settings import Settings
    from courier.storage.manifest import Manifest

MANIFEST_NAME = "_SUCCESS"
STAGING_DIR = "_staging"
QUARANTINE_DIR = "_quarantine"
PARQUET_SUFFIX = ".parquet"


def _is_hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def open_layout(settings: Settings, *, retry_deadline_secs: float | None = None) -> Layout:
    """The layout of the process's bucket store (``store_url``, default ``data_dir``).

    ``retry_deadline_secs`` bounds each S3/GCS call's retries (see
    :func:`courier.storage.store.open_store`); a local store ignores it.
    """
    root: Path | str | BucketStore = settings.store_url or settings.data_dir
    if isinstance(root, str) and "://" in root and not root.lower().startswith("file://"):
        root = open_store(root, retry_deadline_secs=retry_deadline_secs)
    return Layout(root, settings.bucket_width_secs)


class Layout:
    """Where everything lives in a bucket store (a local directory by default)."""

    def __init__(self, root: Path | str | BucketStore, bucket_width_secs: int) -> None:
        """``root`` is a directory, a store URL (``s3://bucket/prefix``, ...) or a store."""
        self.width = validate_bucket_width(bucket_width_secs)
        if isinstance(root, BucketStore):
            self.store = root
            self._root = root.root if isinstance(root, LocalStore) else None
        elif isinstance(root, Path) or "://" not in root:
            self._root = Path(root)
            self.store = LocalStore(self._root)
        else:
            self.store = open_store(root)
            self._root = self.store.root if isinstance(self.store, LocalStore) else None

    def __repr__(self) -> str:
        return f"Layout(store={self.store.url!r}, bucket_width_secs={self.width})"

    @property
    def root(self) -> Path:
        """The local directory of a local store; ConfigError on an object store."""
        if self._root is None:
            raise ConfigError(
                f"this component reads and writes local files, but the bucket store is "
                f"{self.store.url}; it cannot run on an object store yet"
            )
        return self._root

    # -- final buckets -------------------------------------------------------

    def bucket_prefix(self, key: BucketKey) -> str:
        """``<Type>/<partition>``; also right for ``_invalid``."""
        return f"{key.event_type}/{partition_path(key.start, self.width)}"

    def manifest_key(self, key: BucketKey) -> str:
        """The ``_SUCCESS`` manifest of a bucket; its existence means the bucket is closed."""
        return f"{self.bucket_prefix(key)}/{MANIFEST_NAME}"

    def part_key(self, key: BucketKey, index: int) -> str:
        """The ``index``-th final file of a bucket."""
        return f"{self.bucket_prefix(key)}/{self.part_name(index)}"

    def part_name(self, index: int) -> str:
        """Deterministic name of the ``index``-th final file: ``part-00000.parquet``."""
        return f"part-{index:05d}{PARQUET_SUFFIX}"

    def objects_in(self, prefix: str, suffix: str) -> list[ObjectInfo]:
        """The objects directly under the directory ``prefix`` (not in its subdirectories)
        whose names end in ``suffix``, sorted by key."""
        start = len(prefix) + 1
        return [
            o
            for o in self.store.list_objects(prefix)
            if o.key.endswith(suffix) and "/" not in o.key[start:]
        ]

    def part_keys(self, key: BucketKey) -> list[str]:
        """Every ``part-*.parquet`` object of a bucket, listed or not by its manifest, sorted."""
        prefix = self.bucket_prefix(key)
        return [
            o.key
            for o in self.objects_in(prefix, PARQUET_SUFFIX)
            if o.key[len(prefix) + 1 :].startswith("part-")
        ]

    def bucket_dir(self, key: BucketKey) -> Path:
        """:meth:`bucket_prefix` on a local store."""
        return self.root / self.bucket_prefix(key)

    def manifest_path(self, key: BucketKey) -> Path:
        """:meth:`manifest_key` on a local store."""
        return self.root / self.manifest_key(key)

    def where(self, key: str) -> str:
        """``key`` as a place to name in messages: ``<store url>/<key>``."""
        return f"{self.store.url}/{key}"

    @property
    def local_root(self) -> Path | None:
        """The directory of a local store; None on an object store."""
        return self._root

    def default_scratch_dir(self) -> Path:
        """Where a component given no scratch dir keeps its temporary files: ``<root>/_tmp``
        of a local store, else a ``courier-scratch`` directory in the system's temp dir."""
        if self._root is not None:
            return self._root / "_tmp"
        return Path(tempfile.gettempdir()) / "courier-scratch"

    def read_manifest(self, key: BucketKey) -> Manifest:
        """The bucket's current ``_SUCCESS``; ManifestError when the bucket is not closed
        or its manifest is unusable, StorageError when the store cannot be read (retry)."""
        from courier.storage.manifest import decode_manifest

        mkey = self.manifest_key(key)
        try:
            data = self.store.get(mkey)
        except ObjectNotFoundError as exc:
            raise ManifestError(
                f"manifest {self.where(mkey)} does not exist: the bucket is not closed"
            ) from exc
        return decode_manifest(data, self.where(mkey))

    def closed_bucket_starts(self, event_type: str) -> list[int]:
        """Starts of the buckets of ``event_type`` that have a ``_SUCCESS``, sorted."""
        suffix = f"/{MANIFEST_NAME}"
        manifests = (
            o.key[: -len(suffix)]
            for o in self.store.list_objects(event_type)
            if o.key.endswith(suffix)
        )
        return _partition_starts(event_type, manifests)

    def event_types(self) -> list[str]:
        """Type directories at the root, sorted; excludes ``_invalid``, ``_staging``, ..."""
        return [d for d in self.store.list_dirs("") if not _is_hidden(d)]

    # -- staging -------------------------------------------------------------

    def staging_prefix(self, key: BucketKey) -> str:
        """``_staging/<Type>/<partition>``."""
        return f"{STAGING_DIR}/{key.event_type}/{partition_path(key.start, self.width)}"

    def staging_key(
        self,
        key: BucketKey,
        writer_id: str,
        first_seq: int,
        last_seq: int,
        flush_id: str | None = None,
    ) -> str:
        """Staging object of one flush: ``<writer>-<first_seq:020d>-<last_seq:020d>[-<flush_id>].parquet``.

        The writer passes a ``flush_id`` unique to the flush: after a redelivery
        (``courier repair redeliver``) the same writer may stage the same range of
        a closed bucket again, and that file must not take the name of one the
        bucket's manifest already consumed (the closer would take it for a leftover).
        """
        suffix = f"-{flush_id}" if flush_id else ""
        name = f"{writer_id}-{first_seq:020d}-{last_seq:020d}{suffix}{PARQUET_SUFFIX}"
        return f"{self.staging_prefix(key)}/{name}"

    def staging_dir(self, key: BucketKey) -> Path:
        """:meth:`staging_prefix` on a local store."""
        return self.root / self.staging_prefix(key)

    def staging_file(
        self,
        key: BucketKey,
        writer_id: str,
        first_seq: int,
        last_seq: int,
        flush_id: str | None = None,
    ) -> Path:
        """:meth:`staging_key` on a local store."""
        return self.root / self.staging_key(key, writer_id, first_seq, last_seq, flush_id)

    def list_staging(self, key: BucketKey) -> list[ObjectInfo]:
        """Complete staging objects of a bucket, sorted by key."""
        return self.objects_in(self.staging_prefix(key), PARQUET_SUFFIX)

    def list_staging_files(self, key: BucketKey) -> list[Path]:
        """:meth:`list_staging` on a local store, as paths."""
        return [self.root / o.key for o in self.list_staging(key)]

    def staging_bucket_starts(self, event_type: str) -> list[int]:
        """Starts of the buckets of ``event_type`` with at least one staging object, sorted."""
        type_prefix = f"{STAGING_DIR}/{event_type}"
        dirs = (
            o.key.rsplit("/", 1)[0]
            for o in self.store.list_objects(type_prefix)
            if o.key.endswith(PARQUET_SUFFIX)
        )
        return _partition_starts(type_prefix, dirs)

    # -- quarantine ----------------------------------------------------------

    def quarantine_prefix(self, event_type: str) -> str:
        """``_quarantine/<Type>``: raw undecodable messages with their reason."""
        return f"{QUARANTINE_DIR}/{event_type}"

    def quarantine_key(self, event_type: str, seq: int) -> str:
        """The quarantine record of stream message ``seq`` of ``event_type``."""
        return f"{self.quarantine_prefix(event_type)}/{seq:020d}.json"


def _partition_starts(type_prefix: str, dirs: Iterable[str]) -> list[int]:
    """Bucket starts of the partition directories ``dirs`` (keys under ``type_prefix``)."""
    starts: set[int] = set()
    for d in dirs:
        try:
            starts.add(parse_partition_path(d[len(type_prefix) + 1 :]))
        except ValueError:
            continue  # not a bucket directory (stray object); not ours to judge
    return sorted(starts)

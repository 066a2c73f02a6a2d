"""Where everything lives under the data root.

::

    <root>/<Type>/<partition>/part-00000.parquet   final bucket files
    <root>/<Type>/<partition>/_SUCCESS              manifest, written last
    <root>/_invalid/<partition>/...                 rejected events, laid out like a type
    <root>/_staging/<Type>/<partition>/<writer>-<first_seq>-<last_seq>[-<flush>].parquet
    <root>/_quarantine/<Type>/...                   undecodable messages
    <root>/_index/<Type>/<bucket_start>.parquet     id index of a closed bucket (closer/horizon.py)

``<partition>`` is :func:`courier.model.partition_path`, e.g.
``date=2026-11-26/hour=10``. Names starting with ``_`` or ``.`` are ignored by
Hive-style readers; temp files start with ``.tmp-`` and are never listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from courier.model import BucketKey, parse_partition_path, partition_path, validate_bucket_width

MANIFEST_NAME = "_SUCCESS"
STAGING_DIR = "_staging"
QUARANTINE_DIR = "_quarantine"
PARQUET_SUFFIX = ".parquet"


def _is_hidden(name: str) -> bool:
    return name.startswith(("_", "."))


class Layout:
    """Where everything lives under the data root."""

    def __init__(self, root: Path, bucket_width_secs: int) -> None:
        self.root = Path(root)
        self.width = validate_bucket_width(bucket_width_secs)

    def __repr__(self) -> str:
        return f"Layout(root={self.root!r}, bucket_width_secs={self.width})"

    # -- final buckets -------------------------------------------------------

    def bucket_dir(self, key: BucketKey) -> Path:
        """``<root>/<Type>/<partition>``; also right for ``_invalid``."""
        return self.root / key.event_type / partition_path(key.start, self.width)

    def manifest_path(self, key: BucketKey) -> Path:
        """The ``_SUCCESS`` manifest of a bucket; its existence means the bucket is closed."""
        return self.bucket_dir(key) / MANIFEST_NAME

    def part_name(self, index: int) -> str:
        """Deterministic name of the ``index``-th final file: ``part-00000.parquet``."""
        return f"part-{index:05d}{PARQUET_SUFFIX}"

    def closed_bucket_starts(self, event_type: str) -> list[int]:
        """Starts of the buckets of ``event_type`` that have a ``_SUCCESS``, sorted."""
        type_dir = self.root / event_type
        return self._partition_starts(type_dir, type_dir.rglob(MANIFEST_NAME))

    def event_types(self) -> list[str]:
        """Type directories under the root, sorted; excludes ``_invalid``, ``_staging``, ..."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not _is_hidden(p.name))

    # -- staging -------------------------------------------------------------

    def staging_dir(self, key: BucketKey) -> Path:
        """``<root>/_staging/<Type>/<partition>``."""
        return self.root / STAGING_DIR / key.event_type / partition_path(key.start, self.width)

    def staging_file(
        self,
        key: BucketKey,
        writer_id: str,
        first_seq: int,
        last_seq: int,
        flush_id: str | None = None,
    ) -> Path:
        """Staging file of one flush: ``<writer>-<first_seq:020d>-<last_seq:020d>[-<flush_id>].parquet``.

        The writer passes a ``flush_id`` unique to the flush: after a redelivery
        (``courier repair redeliver``) the same writer may stage the same range of
        a closed bucket again, and that file must not take the name of one the
        bucket's manifest already consumed (the closer would take it for a leftover).
        """
        suffix = f"-{flush_id}" if flush_id else ""
        name = f"{writer_id}-{first_seq:020d}-{last_seq:020d}{suffix}{PARQUET_SUFFIX}"
        return self.staging_dir(key) / name

    def list_staging_files(self, key: BucketKey) -> list[Path]:
        """Complete staging files of a bucket, sorted by name (temp files excluded)."""
        directory = self.staging_dir(key)
        if not directory.is_dir():
            return []
        return sorted(
            (
                p
                for p in directory.iterdir()
                if p.name.endswith(PARQUET_SUFFIX) and not p.name.startswith(".") and p.is_file()
            ),
            key=lambda p: p.name,
        )

    def staging_bucket_starts(self, event_type: str) -> list[int]:
        """Starts of the buckets of ``event_type`` with at least one staging file, sorted."""
        type_dir = self.root / STAGING_DIR / event_type
        files = (p for p in type_dir.rglob(f"*{PARQUET_SUFFIX}") if not p.name.startswith("."))
        return self._partition_starts(type_dir, files)

    # -- quarantine ----------------------------------------------------------

    def quarantine_dir(self, event_type: str) -> Path:
        """``<root>/_quarantine/<Type>``: raw undecodable messages with their reason."""
        return self.root / QUARANTINE_DIR / event_type

    # -- helpers -------------------------------------------------------------

    @staticmethod
    def _partition_starts(type_dir: Path, files: Iterable[Path]) -> list[int]:
        """Bucket starts of the partition directories holding ``files`` (under ``type_dir``)."""
        if not type_dir.is_dir():
            return []
        starts: set[int] = set()
        for f in files:
            rel = f.parent.relative_to(type_dir).as_posix()
            try:
                starts.add(parse_partition_path(rel))
            except ValueError:
                continue  # not a bucket directory (stray file); not ours to judge
        return sorted(starts)

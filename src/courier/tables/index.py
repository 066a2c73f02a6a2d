"""Which closed buckets a table already holds, and at which manifest version.

Every commit records the bucket (``courier.bucket`` = ``<Type>.<start>``) and its
manifest version (``courier.manifest-version``) in the snapshot summary, so the
snapshot history answers "is this bucket committed?" without reading a manifest.

The history is only complete while no snapshot the answer needs has been
expired. Expiry (ours, Spark's or any engine's) removes the oldest snapshots, so
the retained history is a suffix in time; a bucket's commit always comes after
the bucket was decided (``closed_at``, or ``repaired_at`` for a re-closed version).
So when the oldest retained snapshot is older than that decision (less the
allowed clock skew), the history is authoritative. Otherwise the answer comes
from the files the current snapshot lists under the bucket's directory, compared
with the files its ``_SUCCESS`` lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from courier.model import BucketKey, parse_time
from courier.storage import Layout, Manifest

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

SUMMARY_BUCKET = "courier.bucket"
SUMMARY_VERSION = "courier.manifest-version"
SUMMARY_EVENTS = "courier.events"


def file_uri(path: Path) -> str:
    """The path recorded in the table: ``file://`` + absolute path, unescaped
    (``date=``/``hour=`` stay readable; pyiceberg, Spark and Trino accept it)."""
    return f"file://{path.absolute()}"


def bucket_file_uris(layout: Layout, key: BucketKey, manifest: Manifest) -> list[str]:
    """The files a manifest lists, as the table records them."""
    directory = layout.bucket_dir(key)
    return [file_uri(directory / f.name) for f in manifest.files]


def decided_at(manifest: Manifest) -> float:
    """When this manifest version was decided: no commit of it can be older."""
    return parse_time(manifest.repair.repaired_at if manifest.repair else manifest.closed_at)


class TableIndex:
    """What one loaded table holds of its type's buckets (see the module docstring)."""

    def __init__(self, table: Table, layout: Layout, *, skew_secs: float) -> None:
        self.table = table
        self.layout = layout
        self.skew_secs = skew_secs
        self.history: dict[str, int] = {}
        snapshots = table.metadata.snapshots
        self.history_since_ms = min((s.timestamp_ms for s in snapshots), default=None)
        for s in snapshots:
            summary = s.summary
            if summary is None or (label := summary.get(SUMMARY_BUCKET)) is None:
                continue
            version = int(summary.get(SUMMARY_VERSION) or "1")
            self.history[label] = max(version, self.history.get(label, 0))
        self._files: dict[str, DataFile] | None = None

    def committed(self, key: BucketKey, manifest: Manifest) -> bool:
        """True when the table holds this manifest version's files of ``key`` (or a later
        version's)."""
        if not manifest.files and manifest.version == 1:
            return True  # an empty bucket adds nothing: there is nothing to commit
        if self.history.get(key.label(), 0) >= manifest.version:
            # This version, or a later one (a re-close committed while this commit was on
            # its way: its manifest is stale, and adding it would bring back deleted files).
            return True
        if self.history_authoritative(manifest):
            return False
        return set(self.files_of(key)) == set(bucket_file_uris(self.layout, key, manifest))

    def history_authoritative(self, manifest: Manifest) -> bool:
        if self.history_since_ms is None:
            return True  # no snapshot ever retained: nothing was committed
        return self.history_since_ms <= (decided_at(manifest) - self.skew_secs) * 1000

    def current_files(self) -> dict[str, DataFile]:
        """Every data file of the current snapshot, by path (reads all its manifests)."""
        if self._files is None:
            files: dict[str, DataFile] = {}
            snapshot = self.table.current_snapshot()
            if snapshot is not None:
                io = self.table.io
                for m in snapshot.manifests(io):
                    for entry in m.fetch_manifest_entry(io, discard_deleted=True):
                        files[entry.data_file.file_path] = entry.data_file
            self._files = files
        return self._files

    def files_of(self, key: BucketKey) -> dict[str, DataFile]:
        """The current snapshot's data files in ``key``'s bucket directory."""
        prefix = file_uri(self.layout.bucket_dir(key)) + "/"
        return {
            p: f
            for p, f in self.current_files().items()
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        }

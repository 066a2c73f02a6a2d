"""Snapshot expiry: bounded table metadata, and never a bucket file deleted.

Each closed bucket adds a snapshot, so the table's metadata grows by one
snapshot per bucket; expiry removes snapshots older than the retention and all
but the newest ``max_snapshots`` (pyiceberg copies the snapshot list several
times per commit, so a long list makes every commit slower).

What it must never do is delete a file that a ``_SUCCESS`` manifest still lists:
bucket files belong to the bucket contract, not to the table. pyiceberg's
``expire_snapshots`` removes snapshots from the metadata and deletes no files at
all, and Courier runs nothing else: files of a re-closed bucket's previous version
are deleted by the re-close itself (after the overwrite commit), never by expiry.
Other engines' expiry (Spark's ``expire_snapshots``) deletes only files no retained
snapshot references, and the current snapshot references every listed file.
Don't run ``remove_orphan_files`` with a location that covers the data root: to it,
``_SUCCESS`` and staging files are orphans.

Time travel reaches back as far as the retention (and, for a re-closed bucket,
only to its current version: the previous version's files are gone).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from courier.errors import TableError

if TYPE_CHECKING:
    from pyiceberg.table import Table

log = logging.getLogger("courier.tables")


def expire_snapshots(
    table: Table,
    *,
    retention_secs: float,
    max_snapshots: int | None = None,
    now: float | None = None,
) -> int:
    """Expire the table's snapshots older than ``retention_secs`` and beyond the newest
    ``max_snapshots`` (never the current one); returns how many were expired."""
    from pyiceberg.exceptions import CommitFailedException

    now = time.time() if now is None else now
    cutoff_ms = int((now - retention_secs) * 1000)
    table.refresh()
    current = table.current_snapshot()
    keep = {current.snapshot_id} if current is not None else set()
    newest_first = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms, reverse=True)
    if max_snapshots is not None:
        keep |= {s.snapshot_id for s in newest_first[:max_snapshots] if s.timestamp_ms >= cutoff_ms}
        old = [s.snapshot_id for s in newest_first if s.snapshot_id not in keep]
    else:
        old = [
            s.snapshot_id
            for s in newest_first
            if s.timestamp_ms < cutoff_ms and s.snapshot_id not in keep
        ]
    if not old:
        return 0
    try:
        table.maintenance.expire_snapshots().by_ids(old).commit()
    except CommitFailedException as exc:
        raise TableError(
            f"expiring {len(old)} snapshots of {'.'.join(table.name())} lost to a concurrent "
            f"commit ({exc}); next round"
        ) from exc
    log.info("table %s: expired %d snapshots", ".".join(table.name()), len(old))
    return len(old)

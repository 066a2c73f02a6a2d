"""The close protocol of one bucket (DESIGN §6), each step idempotent and resumable.

1. claim (T, H) in the bucket catalog (compare-and-set; one closer wins);
2. list the staging files of (T, H), plus stray files of already-closed
   buckets (skewed), and record the list in the claim;
3. read them, order by stream position, drop duplicate ids (keep the earliest)
   and ids already in the closed bucket (T, H-1) (skewed rows also against
   their own closed bucket);
4. write the final files ``part-NNNNN.parquet`` (deterministic names and bytes,
   right-sized, zstd), each atomically;
5. write ``_SUCCESS`` last: the manifest;
6. mark the catalog entry closed and publish the close notification;
7. delete the staging files.

A crash between any two steps is resumed by re-running the close: the claim
holds the decision time, watermark and file list, so steps 3-5 rewrite the
same bytes; a present manifest skips to step 6; a closed entry skips to 7.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from courier.closer.catalog import Catalog, CatalogEntry
from courier.closer.dedup import (
    STAGING_COLUMNS,
    conform,
    drop_ids,
    first_occurrences,
    order,
    split_rows,
)
from courier.errors import ManifestError, StorageError
from courier.model import BucketKey, iso_utc, parse_partition_path
from courier.schema import CompiledType
from courier.settings import CloserSettings
from courier.storage import (
    Layout,
    Manifest,
    ManifestFile,
    read_manifest,
    seq_ranges,
    write_manifest,
    write_parquet_atomic,
)

log = logging.getLogger("courier.closer")

#: Fault injection for the crash tests and the fault suite: SIGKILL ourselves
#: right after the given step (1-7). Never set in production.
CRASH_AFTER_STEP_ENV = "COURIER_FAULT_CLOSER_CRASH_AFTER_STEP"


def _crash_hook_from_env() -> Callable[[int], None]:
    target = os.environ.get(CRASH_AFTER_STEP_ENV)

    def hook(step: int) -> None:
        if target is not None and int(target) == step:
            log.warning("fault injection: killing the closer after step %d", step)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


@dataclass(frozen=True)
class CloseResult:
    key: BucketKey
    manifest: Manifest


class BucketCloser:
    """Runs the close protocol for buckets of any type."""

    def __init__(
        self,
        layout: Layout,
        catalog: Catalog,
        cfg: CloserSettings,
        notify: Callable[[BucketKey, bytes], object],
        *,
        after_step: Callable[[int], None] | None = None,
    ) -> None:
        self.layout = layout
        self.width = layout.width
        self.catalog = catalog
        self.cfg = cfg
        self._notify = notify
        self._after_step = after_step or _crash_hook_from_env()

    async def close(
        self, key: BucketKey, compiled: CompiledType, watermark: float
    ) -> CloseResult | None:
        """Close ``key``; None when another closer holds its claim."""
        # Step 1: claim.
        claimed = await self.catalog.claim(key, watermark)
        if claimed is None:
            return None
        entry, rev = claimed
        self._after_step(1)
        manifest_path = self.layout.manifest_path(key)
        if entry.state == "closed":
            # Resume at step 6's notification (a crash may have come between the
            # catalog update and the publish; notifications are at least once).
            manifest = read_manifest(manifest_path)
            await self._notify_closed(key, manifest)
            await asyncio.to_thread(self._delete_staging, entry)
            return CloseResult(key, manifest)
        # Step 2: list (once; a resumed close reuses the recorded list).
        if entry.staging_files is None:
            files, skewed = self._list_inputs(key)
            updated = await self.catalog.update(
                key, replace(entry, staging_files=files, skewed_files=skewed), rev
            )
            if updated is None:
                return None
            entry, rev = updated
        self._after_step(2)
        try:
            manifest = read_manifest(manifest_path)
        except ManifestError:
            # Steps 3-5 (pure functions of the claim and the staging files).
            manifest = await asyncio.to_thread(self._write_bucket, key, compiled, entry)
        else:
            self._after_step(3)
            self._after_step(4)
            self._after_step(5)
        # Step 6: catalog closed, then notify (idempotent: Nats-Msg-Id per bucket).
        closed = replace(entry, state="closed", events=manifest.events)
        if await self.catalog.update(key, closed, rev) is None:
            return None
        await self._notify_closed(key, manifest)
        self._after_step(6)
        # Step 7: staging files go last.
        await asyncio.to_thread(self._delete_staging, closed)
        self._after_step(7)
        return CloseResult(key, manifest)

    async def _notify_closed(self, key: BucketKey, manifest: Manifest) -> None:
        result = self._notify(key, msgspec.json.encode(manifest))
        if asyncio.iscoroutine(result):
            await result

    # -- step 2 -------------------------------------------------------------------

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.layout.root).as_posix()

    def _list_inputs(self, key: BucketKey) -> tuple[list[str], list[str]]:
        files = [self._rel(p) for p in self.layout.list_staging_files(key)]
        skewed: list[str] = []
        for start in self.layout.staging_bucket_starts(key.event_type):
            if start >= key.start:
                continue
            old = BucketKey(key.event_type, start)
            try:
                consumed = set(read_manifest(self.layout.manifest_path(old)).staging_files)
            except ManifestError:
                consumed = set()
            skewed += [
                r
                for p in self.layout.list_staging_files(old)
                if (r := self._rel(p)) not in consumed
            ]
        return sorted(files + skewed), sorted(skewed)

    # -- steps 3-5 ----------------------------------------------------------------

    def _read_staging(self, rels: list[str]) -> pa.Table | None:
        tables = []
        for rel in rels:
            try:
                tables.append(pq.read_table(self.layout.root / rel))
            except FileNotFoundError as exc:
                raise StorageError(
                    f"staging file {rel} listed in the claim is missing; the close cannot be "
                    "reproduced (was it deleted by hand?); bucket left open"
                ) from exc
            except (OSError, pa.ArrowException) as exc:
                raise StorageError(f"cannot read staging file {rel}: {exc}; will retry") from exc
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")

    def _closed_ids(self, key: BucketKey) -> pa.ChunkedArray | None:
        try:
            m = read_manifest(self.layout.manifest_path(key))
        except ManifestError:
            return None
        bdir = self.layout.bucket_dir(key)
        cols = [pq.read_table(bdir / f.name, columns=["id"]).column("id") for f in m.files]
        return pa.chunked_array([c for col in cols for c in col.chunks], type=pa.string())

    def _write_bucket(
        self, key: BucketKey, compiled: CompiledType, entry: CatalogEntry
    ) -> Manifest:
        rels = entry.staging_files or []
        staged = self._read_staging(rels)
        schema = compiled.arrow_schema
        input_events = 0 if staged is None else staged.num_rows
        skewed_in = 0
        dup_prev = 0
        dup_within = 0
        seqs: pa.ChunkedArray | list[int] = []
        versions: list[int] = []
        final = schema.empty_table()
        if staged is not None and staged.num_rows:
            # Step 3: order, dedup within, then against closed buckets.
            seqs = staged.column("_seq")
            table = first_occurrences(order(staged))
            dup_within = input_events - table.num_rows
            before = table.num_rows
            table = drop_ids(table, self._closed_ids(key.previous(self.width)))
            table = self._drop_skewed_duplicates(table, key, entry)
            dup_prev = before - table.num_rows
            if entry.skewed_files:
                skewed_in = self._count_skewed(table, key)
            final = conform(table.drop_columns(list(STAGING_COLUMNS)), schema)
            versions = sorted(
                int(v)
                for v in pc.unique(final.column("schema_version")).to_pylist()
                if v is not None
            )
        self._after_step(3)
        # Step 4: final files, deterministic names and bytes.
        bdir = self.layout.bucket_dir(key)
        files = []
        parts = split_rows(final, self.cfg.max_rows_per_file, self.cfg.target_file_bytes)
        for i, part in enumerate(parts):
            info = write_parquet_atomic(bdir / self.layout.part_name(i), part)
            files.append(
                ManifestFile(name=info.name, bytes=info.bytes, rows=info.rows, sha256=info.sha256)
            )
        self._remove_extra_parts(bdir, len(parts))
        self._after_step(4)
        # Step 5: the manifest, last.
        end = key.end(self.width)
        manifest = Manifest(
            event_type=key.event_type,
            bucket_start=iso_utc(key.start),
            bucket_end=iso_utc(end),
            bucket_start_epoch=key.start,
            bucket_width_secs=self.width,
            events=final.num_rows,
            input_events=input_events,
            duplicates_dropped=dup_within + dup_prev,
            duplicates_dropped_previous_bucket=dup_prev,
            skewed_in=skewed_in,
            stream_seq_ranges=seq_ranges(seqs),
            files=files,
            staging_files=rels,
            schema_versions=versions,
            watermark=iso_utc(entry.watermark),
            closed_at=iso_utc(entry.claimed_at),
            close_delay_secs=round(entry.claimed_at - end, 3),
        )
        write_manifest(self.layout.manifest_path(key), manifest)
        self._after_step(5)
        return manifest

    def _skewed_origins(self, key: BucketKey, entry: CatalogEntry) -> set[int]:
        return {parse_partition_path(str(Path(r).parent)) for r in entry.skewed_files}

    def _drop_skewed_duplicates(
        self, table: pa.Table, key: BucketKey, entry: CatalogEntry
    ) -> pa.Table:
        """Rows from stray files of closed bucket K may duplicate K's rows: drop those."""
        for start in sorted(self._skewed_origins(key, entry)):
            if start != key.previous(self.width).start:
                table = drop_ids(table, self._closed_ids(BucketKey(key.event_type, start)))
        return table

    def _count_skewed(self, table: pa.Table, key: BucketKey) -> int:
        """Kept rows whose published_at lies before this bucket: they arrived late."""
        start = pa.scalar(key.start * 1_000_000, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        return int(pc.sum(pc.less(table.column("published_at"), start)).as_py() or 0)

    def _remove_extra_parts(self, bdir: Path, count: int) -> None:
        if not bdir.exists():
            return
        for p in bdir.glob("part-*.parquet"):
            if p.name >= self.layout.part_name(count):
                p.unlink()

    # -- step 7 -------------------------------------------------------------------

    def _delete_staging(self, entry: CatalogEntry) -> None:
        dirs = set()
        for rel in entry.staging_files or []:
            path = self.layout.root / rel
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning(
                    "cannot delete staging file %s (%s); will retry on next close", path, exc
                )
            dirs.add(path.parent)
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            while d != self.layout.root and d.name != "_staging":
                try:
                    d.rmdir()
                except OSError:
                    break
                d = d.parent

"""The close protocol of one bucket (DESIGN §6), each step idempotent and resumable.

Everything goes through the bucket store (:mod:`courier.storage.store`), so the
same steps run on a local directory, S3 or GCS; no step assumes a disk shared with
another process.

1. claim (T, H) in the bucket catalog (compare-and-set; one closer wins);
2. list the staging objects of (T, H), plus stray ones of already-closed
   buckets (skewed), and record the list in the claim;
3. read them (local scratch copies on an object store, for DuckDB), order by
   stream position, drop duplicate ids (keep the earliest) and ids that any
   closed bucket of T within the dedup horizon holds (G2; the id index and its
   exact check: :mod:`courier.closer.horizon`);
4. write the final files ``part-NNNNN.parquet`` (deterministic names and bytes,
   right-sized, zstd), each one atomic ``put_file``; then (4b) the bucket's id index;
5. write ``_SUCCESS`` last with the store's ``create`` (create-only: S3
   ``If-None-Match: *``, GCS ``ifGenerationMatch=0``, a hard link locally). When
   it already exists, the stored bytes are compared with the manifest this close
   meant to write: equal means a retried request found its own earlier write;
   different means someone else closed the bucket, and their manifest stands
   (logged, never overwritten);
6. mark the catalog entry closed and publish the close notification;
7. delete the staging objects.

A crash between any two steps is resumed by re-running the close: the claim
holds the decision time, watermark and file list, so steps 3-5 rewrite the
same bytes; a present manifest skips to step 6; a closed entry skips to 7.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from courier.closer.catalog import Catalog, CatalogEntry
from courier.closer.dedup import BucketDedup, StreamOrderError, conform, exact_chunks
from courier.closer.horizon import ClosedIds, DedupHorizon, id_keys
from courier.closer.transfer import TransferStats
from courier.errors import ManifestError, ObjectExistsError, StorageError
from courier.model import BucketKey, iso_utc
from courier.schema import CompiledType
from courier.settings import CloserSettings
from courier.storage import (
    Layout,
    Manifest,
    ManifestFile,
    SeqRange,
    write_parquet_chunks_atomic,
)
from courier.storage.copies import LocalCopies
from courier.storage.manifest import decode_manifest, encode_manifest

log = logging.getLogger("courier.closer")


@dataclass(frozen=True)
class CloseResult:
    key: BucketKey
    manifest: Manifest


def prefer_jemalloc() -> None:
    """Arrow's buffers from jemalloc rather than pyarrow's default (mimalloc), unless
    ``ARROW_DEFAULT_MEMORY_POOL`` chooses. A close allocates and frees hundreds of MB of
    batches; mimalloc gives freed pages back to the OS at once and faults them in again
    (the kernel zeroing pages was a fifth to a third of a large close's profile), jemalloc
    keeps them for the next batch. A no-op where pyarrow is built without jemalloc."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    with contextlib.suppress(NotImplementedError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())


class BucketCloser:
    """Runs the close protocol for buckets of any type."""

    def __init__(
        self,
        layout: Layout,
        catalog: Catalog,
        cfg: CloserSettings,
        notify: Callable[[BucketKey, bytes], object],
        *,
        scratch_dir: Path | None = None,
        after_step: Callable[[int], None] | None = None,
    ) -> None:
        """``scratch_dir``: this process's own directory for DuckDB's spill files and
        the local copies of an object store's staging objects (default
        :meth:`Layout.default_scratch_dir`)."""
        self.layout = layout
        self.store = layout.store
        self.width = layout.width
        self.catalog = catalog
        self.cfg = cfg
        self._notify = notify
        self._after_step = after_step or (lambda step: None)
        self.scratch_dir = scratch_dir or layout.default_scratch_dir()
        self.horizon = DedupHorizon(layout, cfg.dedup_horizon_secs, scratch_dir=self.scratch_dir)
        prefer_jemalloc()

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
        if entry.state == "closed":
            # Resume at step 6's notification (a crash may have come between the
            # catalog update and the publish; notifications are at least once).
            manifest = await asyncio.to_thread(self.layout.read_manifest, key)
            await self._notify_closed(key, manifest)
            await asyncio.to_thread(self._delete_staging, entry)
            return CloseResult(key, manifest)
        # Step 2: list (once; a resumed close reuses the recorded list).
        if entry.staging_files is None:
            files, skewed = await asyncio.to_thread(self._list_inputs, key)
            updated = await self.catalog.update(
                key, replace(entry, staging_files=files, skewed_files=skewed), rev
            )
            if updated is None:
                return None
            entry, rev = updated
        self._after_step(2)
        try:
            manifest = await asyncio.to_thread(self.layout.read_manifest, key)
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

    def _list_inputs(self, key: BucketKey) -> tuple[list[str], list[str]]:
        files = [o.key for o in self.layout.list_staging(key)]
        skewed: list[str] = []
        for start in self.layout.staging_bucket_starts(key.event_type):
            if start >= key.start:
                continue
            old = BucketKey(key.event_type, start)
            try:
                consumed = set(self.layout.read_manifest(old).staging_files)
            except ManifestError:
                consumed = set()
            skewed += [o.key for o in self.layout.list_staging(old) if o.key not in consumed]
        return sorted(files + skewed), sorted(skewed)

    # -- steps 3-5 ----------------------------------------------------------------

    def _paths(self, rels: list[str], copies: LocalCopies) -> list[Path]:
        got = copies.fetch(rels)
        for rel in rels:
            if rel not in got:
                raise StorageError(
                    f"staging file {self.layout.where(rel)} listed in the claim is missing; the "
                    "close cannot be reproduced (was it deleted by hand?); bucket left open"
                )
        return [got[rel] for rel in rels]

    def _write_bucket(
        self, key: BucketKey, compiled: CompiledType, entry: CatalogEntry
    ) -> Manifest:
        rels = entry.staging_files or []
        work = self.scratch_dir / f"close-{secrets.token_hex(6)}"
        try:
            with LocalCopies(self.store, work / "in") as copies:
                written = self._write_parts(key, compiled, self._paths(rels, copies), work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self._after_step(4)
        # Step 5: the manifest, last.
        end = key.end(self.width)
        manifest = Manifest(
            event_type=key.event_type,
            bucket_start=iso_utc(key.start),
            bucket_end=iso_utc(end),
            bucket_start_epoch=key.start,
            bucket_width_secs=self.width,
            staging_files=rels,
            **written.manifest_fields(),
            watermark=iso_utc(entry.watermark),
            closed_at=iso_utc(entry.claimed_at),
            close_delay_secs=round(entry.claimed_at - end, 3),
            renamed_columns=compiled.renamed_columns,
        )
        manifest = self._create_manifest(key, manifest)
        self._after_step(5)
        return manifest

    def _write_parts(
        self, key: BucketKey, compiled: CompiledType, inputs: list[Path], work: Path
    ) -> WrittenParts:
        """Steps 3-4b: order and deduplicate (streamed, spills under memory pressure),
        then the final files (deterministic names and bytes) and the id index."""
        part_path, publish = part_targets(self.layout, key, work / "out", self.layout.part_name)
        written = write_deduplicated(
            self.cfg,
            compiled.arrow_schema,
            inputs,
            self.horizon,
            key,
            spill_dir=work / "spill",
            part_path=part_path,
            before_writing=lambda: self._after_step(3),
            publish_part=publish,
        )
        self._remove_extra_parts(key, len(written.files))
        return written

    def _create_manifest(self, key: BucketKey, manifest: Manifest) -> Manifest:
        """Step 5: create ``_SUCCESS``, never overwrite it; the manifest that stands."""
        mkey = self.layout.manifest_key(key)
        data = encode_manifest(manifest)
        try:
            self.store.create(mkey, data)
            return manifest
        except ObjectExistsError:
            stored = self.store.get(mkey)
        if stored == data:
            log.info("%s: found its own earlier _SUCCESS (a retried create)", key.label())
            return manifest
        existing = decode_manifest(stored, self.layout.where(mkey))
        log.warning(
            "%s was closed by someone else meanwhile: its _SUCCESS (%d events, closed at %s) "
            "differs from the one this closer meant to write (%d events); it stands, nothing "
            "was overwritten, and this close goes on with it",
            key.label(),
            existing.events,
            existing.closed_at,
            manifest.events,
        )
        return existing

    def _remove_extra_parts(self, key: BucketKey, count: int) -> None:
        """Parts beyond ``count`` left by an earlier attempt that cut the rows differently."""
        last = self.layout.part_key(key, count)
        for part in self.layout.part_keys(key):
            if part >= last:
                self.store.delete(part)

    # -- step 7 -------------------------------------------------------------------

    def _delete_staging(self, entry: CatalogEntry) -> None:
        for rel in entry.staging_files or []:
            try:
                self.store.delete(rel)
            except StorageError as exc:
                log.warning("cannot delete staging file (%s); will retry on next close", exc)
        local = self.layout.local_root
        if local is None:
            return  # an object store has no directories to tidy
        dirs = {(local / rel).parent for rel in entry.staging_files or []}
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            while d != local and d.name != "_staging":
                try:
                    d.rmdir()
                except OSError:
                    break
                d = d.parent


def part_targets(
    layout: Layout, key: BucketKey, out_dir: Path, name: Callable[[int], str]
) -> tuple[Callable[[int], Path], Callable[[Path], None] | None]:
    """Where the ``i``-th part of ``key`` is written, and how it is then published.

    On a local store each part is written in place (temp, fsync, rename) and there
    is nothing more to do; on an object store it is written to ``out_dir`` (scratch)
    and published with one atomic ``put_file``, then the scratch file goes.
    """
    local = layout.local_root
    prefix = layout.bucket_prefix(key)
    if local is not None:
        bdir = local / prefix
        return (lambda i: bdir / name(i)), None
    store = layout.store

    def publish(path: Path) -> None:
        store.put_file(f"{prefix}/{path.name}", path)
        path.unlink()

    def part_path(i: int) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir / name(i)

    return part_path, publish


def chunk_rows(cfg: CloserSettings) -> int:
    """Rows per row group of a final file (also the unit files are cut in)."""
    return max(1, min(cfg.row_group_rows, cfg.max_rows_per_file))


def rows_per_file(cfg: CloserSettings, input_bytes: int, input_rows: int) -> int:
    """Right-sized files from the inputs' compressed bytes per row (deterministic)."""
    chunk = chunk_rows(cfg)
    if input_rows == 0:
        return chunk
    per_row = max(1.0, input_bytes / input_rows)
    cap = max(chunk, min(cfg.max_rows_per_file, int(cfg.target_file_bytes / per_row)))
    # Spread the rows evenly over the fewest files under the cap (no tiny last file),
    # in whole chunks so row groups stay uniform.
    files = -(-input_rows // cap)
    per_file = -(-input_rows // files)
    per_file = -(-per_file // chunk) * chunk
    if files == 1:
        return per_file  # the one file holds at most input_rows <= cap rows
    return per_file - chunk if per_file > cap and per_file > chunk else per_file


class BucketStats:
    """Counts taken while the bucket's rows stream past (no second pass)."""

    def __init__(self, bucket_start: int) -> None:
        self.rows = 0
        self.skewed = 0
        self.versions: set[int] = set()
        self.transfer = TransferStats()
        self._start = pa.scalar(bucket_start * 1_000_000, type=pa.int64()).cast(
            pa.timestamp("us", tz="UTC")
        )

    def observe(self, t: pa.Table) -> pa.Table:
        self.rows += t.num_rows
        # Rows published before this bucket began arrived from closed buckets: skewed.
        self.skewed += int(pc.sum(pc.less(t.column("published_at"), self._start)).as_py() or 0)
        self.versions.update(
            v for v in pc.unique(t.column("schema_version")).to_pylist() if v is not None
        )
        self.transfer.observe(t)
        return t


def split_parts(chunks: Iterator[pa.Table], chunks_per_part: int) -> Iterator[Iterator[pa.Table]]:
    """Group a stream of chunks into parts of ``chunks_per_part`` chunks, never an empty part."""
    it = iter(chunks)
    for first in it:

        def part(first: pa.Table = first) -> Iterator[pa.Table]:
            yield first
            for _ in range(chunks_per_part - 1):
                nxt = next(it, None)
                if nxt is None:
                    return
                yield nxt

        yield part()


@dataclass(frozen=True)
class WrittenParts:
    """What steps 3-4 of a close produced: the final files and the counts of their rows."""

    files: list[ManifestFile]
    stats: BucketStats
    input_events: int
    stream_seq_ranges: list[SeqRange]
    closed: ClosedIds = field(default_factory=ClosedIds)
    ids_older_than_horizon: int = 0

    def manifest_fields(self) -> dict[str, Any]:
        """The manifest fields these parts decide."""
        dropped = self.input_events - self.stats.rows
        against_closed = self.closed.previous_bucket_rows + self.closed.other_buckets_rows
        return {
            "events": self.stats.rows,
            "input_events": self.input_events,
            "duplicates_dropped": dropped,
            "duplicates_dropped_within_bucket": dropped - against_closed,
            "duplicates_dropped_previous_bucket": self.closed.previous_bucket_rows,
            "duplicates_dropped_other_buckets": self.closed.other_buckets_rows,
            "ids_older_than_horizon": self.ids_older_than_horizon,
            "skewed_in": self.stats.skewed,
            "stream_seq_ranges": self.stream_seq_ranges,
            "files": self.files,
            "schema_versions": sorted(self.stats.versions),
            "dcs": self.stats.transfer.result(),
        }


def write_deduplicated(
    cfg: CloserSettings,
    schema: pa.Schema,
    inputs: list[Path],
    horizon: DedupHorizon,
    key: BucketKey,
    *,
    spill_dir: Path,
    part_path: Callable[[int], Path],
    before_writing: Callable[[], None],
    publish_part: Callable[[Path], None] | None = None,
) -> WrittenParts:
    """Steps 3-4b of a close (also of a re-close) of bucket ``key``: order the rows of
    the staging-form ``inputs``, keep one per id and none that a closed bucket of the
    type within the ``horizon`` holds (DuckDB, out of core), write right-sized parts at
    ``part_path(0)``, ``part_path(1)``, ... (each handed to ``publish_part`` once
    complete, when given: the upload to an object store), then the bucket's id index.
    ``before_writing`` runs between steps 3 and 4 (a crash-test hook)."""
    stats = BucketStats(key.start)
    if not inputs:
        before_writing()
        return WrittenParts([], stats, 0, [])
    chunk = chunk_rows(cfg)
    dedup = BucketDedup(
        inputs,
        memory_limit_bytes=cfg.memory_limit_bytes,
        spill_dir=spill_dir,
        threads=cfg.threads,
    )
    try:
        t0 = time.perf_counter()
        input_events = dedup.input_rows()
        spans = [SeqRange(first=sp.first, last=sp.last) for sp in dedup.seq_spans()]
        t1 = time.perf_counter()
        keys = dedup.make_keys(id_keys)
        t2 = time.perf_counter()
        closed = horizon.find_closed(dedup.con, keys, key)
        # No id in a closed bucket (the usual case): every id is fresh, no join.
        anti = " ANTI JOIN closed_ids USING (id)" if closed.ids > 0 else ""
        fresh = f"SELECT * FROM {keys}{anti}"
        too_old = horizon.older_than_horizon(dedup.con, f"({fresh})", key)
        t3 = time.perf_counter()
        before_writing()
        per_file = rows_per_file(cfg, sum(p.stat().st_size for p in inputs), input_events)

        def write_parts(sort: bool) -> list[ManifestFile]:
            rows = dedup.rows(chunk, keys, any_closed=closed.ids > 0, sort=sort)
            chunks = (stats.observe(conform(t, schema)) for t in exact_chunks(rows, chunk))
            files: list[ManifestFile] = []
            for i, part in enumerate(split_parts(chunks, per_file // chunk)):
                info = write_parquet_chunks_atomic(part_path(i), schema, part)
                if publish_part is not None:
                    publish_part(part_path(i))
                files.append(
                    ManifestFile(
                        name=info.name, bytes=info.bytes, rows=info.rows, sha256=info.sha256
                    )
                )
            return files

        try:
            files = write_parts(sort=False)
        except StreamOrderError as exc:
            # Never expected (the files were checked in order); the sorted rows rewrite
            # every part from the first, so nothing of this attempt stays.
            log.warning("%s: %s; closing it with the sort instead", key.label(), exc)
            stats = BucketStats(key.start)
            files = write_parts(sort=True)
        t4 = time.perf_counter()
        # Step 4b: the index of exactly the ids the parts hold, before the manifest.
        if closed.ids > 0:
            horizon.write_index(dedup.con, fresh, key)
        else:  # every id is fresh: the keys are those already counted, distinct
            horizon.write_index(
                dedup.con, f"SELECT p, h FROM {dedup.key_counts}", key, distinct=True
            )
        log.debug(
            "%s: read %.2fs, keys %.2fs, horizon %.2fs, parts %.2fs, index %.2fs",
            key.label(),
            t1 - t0,
            t2 - t1,
            t3 - t2,
            t4 - t3,
            time.perf_counter() - t4,
        )
    finally:
        dedup.close()
    return WrittenParts(files, stats, input_events, spans, closed, too_old)

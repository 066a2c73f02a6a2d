"""Re-close one closed bucket from the stream's retained messages (a repair, DESIGN §10).

A closed bucket is final (G4) except through this explicit, audited repair. When
a closed bucket is known to be wrong — a part file lost or corrupted on storage
(``courier audit`` reports ``lost_from_bucket``) — and the stream still retains
its messages, its rows are rebuilt from the stream and published as a new
manifest version. A reader that follows ``_SUCCESS`` sees either the old or the
new version, never a mix.

What the new version holds — the rules of a close (DESIGN §6), applied to the
stream instead of staging files:

- every event of the messages the previous version covered
  (``stream_seq_ranges``) and of every retained message published in the
  bucket's time range (also ones the previous version missed);
- one row per id, the earliest in stream order;
- no id another closed bucket of the type already holds, earlier or later, within
  the dedup horizon (G2, :mod:`courier.closer.horizon`): retries across the
  boundary, the buckets skewed rows were published in, later buckets that took
  skewed rows (events published here that reached the writer after this bucket
  closed stay where they are).

Refused, with nothing changed, when the stream no longer retains a message the
previous version covered (it would lose events), or the type or bucket is
unknown or not closed.

Steps (a crash between any two is repaired by running the same re-close again,
which produces the same bytes):

1. read the current manifest (version N) and the stream: the messages of its
   sequence ranges and of the bucket's time range, decoded as the writer
   decodes them, into temporary files under ``<scratch_dir>/reclose``;
2. deduplicate as step 3 of a close (DuckDB, out of core);
3. write the parts of version N+1 as ``part-vN+1-00000.parquet`` ...
   (new names: version N's files stay readable until step 5), then its id index
   (a superset of version N's ids: lookups confirm hits against ``_SUCCESS``);
4. keep version N's manifest as ``_SUCCESS.vN``, then swap ``_SUCCESS`` for
   version N+1 (``version``, ``repair``) with the store's compare-and-swap on the
   version token read in step 1: if anyone changed ``_SUCCESS`` meanwhile (a
   concurrent re-close), nothing is switched and the repair is refused;
5. record the new event count in the bucket catalog, publish the new manifest on
   ``courier.closed.<T>`` (downstream jobs reread the bucket: ``version`` > 1,
   ``repair`` set), replace version N's files in the type's Iceberg table (one
   overwrite snapshot; with ``tables.enabled``; a catalog that is down leaves it
   to the closer's catch-up), delete version N's parts and the temporary files.

A re-run after step 4 finds version N+1 written by the same repair id and only
finishes step 5.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import msgspec
import pyarrow as pa

from courier.closer.catalog import Catalog
from courier.closer.dedup import sql_list
from courier.closer.horizon import DedupHorizon
from courier.closer.protocol import part_targets, write_deduplicated
from courier.errors import (
    ConfigError,
    CourierError,
    ManifestError,
    ObjectNotFoundError,
    RepairRefusedError,
    StaleVersionError,
    StorageError,
)
from courier.model import BucketKey, iso_utc
from courier.schema import CompiledType
from courier.schema.stored import UndecodableError, decode_batch
from courier.settings import Settings
from courier.storage import Manifest, ManifestRepair, write_parquet_atomic
from courier.storage.copies import LocalCopies
from courier.storage.layout import open_layout
from courier.storage.manifest import FORMAT_VERSION, decode_manifest, encode_manifest
from courier.tables import BucketTables
from courier.transport import StoredMessage, Transport
from courier.transport.sources import AcceptingDc

log = logging.getLogger("courier.closer")

#: Messages decoded into one temporary input file.
_DECODE_BATCH_MESSAGES = 512


@dataclass(frozen=True)
class RecloseResult:
    key: BucketKey
    previous: Manifest
    manifest: Manifest
    #: Retained messages that could not be decoded (they stay in the stream; the
    #: writer quarantined them when it met them).
    undecodable_messages: int

    def counts(self) -> dict[str, int]:
        return {
            "version": self.manifest.version,
            "events_before": self.previous.events,
            "events_after": self.manifest.events,
            "undecodable_messages": self.undecodable_messages,
        }


class BucketRecloser:
    """Re-closes buckets of any type from their stream (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        catalog: Catalog,
        *,
        after_step: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.closer
        self.width = settings.bucket_width_secs
        self.layout = open_layout(settings)
        self.store = self.layout.store
        self.scratch_dir = settings.resolved_scratch_dir
        self.transport = transport
        self.catalog = catalog
        self._after_step = after_step or (lambda step: None)
        self.horizon = DedupHorizon(
            self.layout, self.cfg.dedup_horizon_secs, scratch_dir=self.scratch_dir
        )
        if settings.tables.enabled and self.layout.local_root is None:
            raise ConfigError(
                f"tables.enabled needs a local bucket store, but the store is "
                f"{self.store.url}; set tables.enabled = false (COURIER_TABLES__ENABLED=false)"
            )
        self._tables = BucketTables(settings, self.layout) if settings.tables.enabled else None

    async def reclose(
        self, key: BucketKey, compiled: CompiledType, *, repair_id: str, reason: str, now: float
    ) -> RecloseResult:
        mkey = self.layout.manifest_key(key)
        try:
            stored = self.store.get_versioned(mkey)
            current = decode_manifest(stored.data, self.layout.where(mkey))
        except (ManifestError, ObjectNotFoundError) as exc:
            raise RepairRefusedError(
                f"{key.label()} has no readable manifest ({exc}); only closed buckets are "
                "re-closed — an open bucket closes by itself"
            ) from exc
        if current.repair is not None and current.repair.repair_id == repair_id:
            previous = self._read_kept(key, current.version - 1)
            await self._record(key, current)  # a re-run after step 4
            await self._notify(key, current)
            await self._commit_table(key, compiled)
            self._finish(key, current)
            return RecloseResult(key, previous, current, 0)
        work = self.scratch_dir / "reclose" / f"{key.event_type}-{key.start}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            # Step 1: the stream's messages, as staging-form files.
            inputs, undecodable = await self._read_stream(key, compiled, current, work)
            self._after_step(1)
            # Steps 2-3.
            new = await asyncio.to_thread(
                self._write_version,
                key,
                compiled,
                current,
                inputs,
                work,
                repair_id,
                reason,
                now,
            )
            # Never give up an event version N still holds (e.g. one that no longer
            # decodes with the current schema): refuse, and version N stays.
            await asyncio.to_thread(self._check_keeps_every_id, key, current, new)
            # Step 4: keep version N as it was stored (an older format stays that format),
            # then switch (compare-and-swap on version N's token).
            self.store.put(self._kept_key(key, current.version), stored.data)
            try:
                self.store.replace(mkey, encode_manifest(new), version=stored.version)
            except StaleVersionError as exc:
                raise RepairRefusedError(
                    f"{self.layout.where(mkey)} changed while {key.label()} was being "
                    f"re-closed (another re-close?); version {new.version} was not switched "
                    f"in ({exc}); read the bucket's state and run the repair again if needed"
                ) from exc
            self._after_step(4)
            # Step 5.
            await self._record(key, new)
            await self._notify(key, new)
            await self._commit_table(key, compiled)
            self._finish(key, new)
            self._after_step(5)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info(
            "re-closed %s as version %d: %d events (was %d); repair %s",
            key.label(),
            new.version,
            new.events,
            current.events,
            repair_id,
        )
        return RecloseResult(key, current, new, undecodable)

    # -- step 1 -------------------------------------------------------------------

    async def _read_stream(
        self, key: BucketKey, compiled: CompiledType, current: Manifest, work: Path
    ) -> tuple[list[Path], int]:
        first, last = await self.transport.stream_bounds(key.event_type)
        covered = [(r.first, r.last) for r in current.stream_seq_ranges]
        wanted = sum(b - a + 1 for a, b in covered)
        seen: set[int] = set()
        batch: list[StoredMessage] = []
        inputs: list[Path] = []
        undecodable = 0

        def flush() -> None:
            nonlocal undecodable
            if batch:
                undecodable += self._decode_to(
                    compiled, batch, work / f"in-{len(inputs):06d}.parquet", inputs
                )
                batch.clear()

        async def take(
            messages: AsyncGenerator[StoredMessage, None], stop_after: float | None
        ) -> None:
            # Closed on an early return too: a scan holds a consumer on the server.
            async with contextlib.aclosing(messages):
                async for m in messages:
                    if stop_after is not None and m.published_at >= stop_after:
                        return
                    if m.seq in seen:
                        continue
                    end = key.end(self.width)
                    if stop_after is not None and not key.start <= m.published_at < end:
                        continue
                    seen.add(m.seq)
                    batch.append(m)
                    if len(batch) >= _DECODE_BATCH_MESSAGES:
                        flush()

        for a, b in covered:
            await take(self.transport.scan(key.event_type, a, b), None)
        found = sum(1 for s in seen if any(a <= s <= b for a, b in covered))
        if found < wanted:
            raise RepairRefusedError(
                f"the stream of {key.event_type} no longer retains {wanted - found} of the "
                f"{wanted} messages {key.label()} was closed from (retained: seq {first}..{last}); "
                "a re-close would lose events, so nothing was changed"
            )
        # Messages published in the bucket that the previous version did not cover.
        skew = self.settings.max_clock_skew_secs
        start_seq = await self._first_seq_at(key.event_type, key.start - skew, first, last)
        if start_seq is not None:
            stop = key.end(self.width) + skew
            await take(self.transport.scan(key.event_type, start_seq, last), stop)
        flush()
        return inputs, undecodable

    def _decode_to(
        self, compiled: CompiledType, batch: list[StoredMessage], path: Path, inputs: list[Path]
    ) -> int:
        """Decode ``batch`` into ``path``; returns how many messages could not be decoded."""
        tables: list[pa.Table] = []
        bad = 0
        dc_of = AcceptingDc(self.settings, compiled.name)
        try:
            tables.append(decode_batch(compiled, batch, dc_of))
        except UndecodableError:
            for m in batch:
                try:
                    tables.append(decode_batch(compiled, [m], dc_of))
                except UndecodableError as exc:
                    log.warning(
                        "re-close %s: seq %d does not decode (%s); skipped",
                        compiled.name,
                        m.seq,
                        exc,
                    )
                    bad += 1
        if tables:
            write_parquet_atomic(path, pa.concat_tables(tables))
            inputs.append(path)
        return bad

    async def _first_seq_at(self, event_type: str, at: float, first: int, last: int) -> int | None:
        """The first retained sequence published at or after ``at`` (binary search over
        direct gets: stream timestamps rise with the sequence)."""
        if first == 0 or last < first:
            return None
        lo, hi = first, last + 1
        # Invariant: every retained message below ``lo`` was published before ``at``.
        while lo < hi:
            mid = (lo + hi) // 2
            m = await self._message_at_or_after(event_type, mid, last)
            if m is not None and m.published_at < at:
                lo = m.seq + 1
            else:
                hi = mid
        return lo if lo <= last else None

    async def _message_at_or_after(
        self, event_type: str, seq: int, last: int
    ) -> StoredMessage | None:
        m = await self.transport.message_at_or_after(event_type, seq)
        return m if m is not None and m.seq <= last else None

    # -- steps 2-3 ----------------------------------------------------------------

    def _write_version(
        self,
        key: BucketKey,
        compiled: CompiledType,
        current: Manifest,
        inputs: list[Path],
        work: Path,
        repair_id: str,
        reason: str,
        now: float,
    ) -> Manifest:
        version = current.version + 1
        part_path, publish = part_targets(
            self.layout, key, work / "out", lambda i: _part_name(version, i)
        )
        written = write_deduplicated(
            self.cfg,
            compiled.arrow_schema,
            inputs,
            self.horizon,
            key,
            spill_dir=work / "spill",
            part_path=part_path,
            before_writing=lambda: self._after_step(2),
            publish_part=publish,
        )
        self._after_step(3)
        return msgspec.structs.replace(
            current,
            format_version=FORMAT_VERSION,
            **written.manifest_fields(),
            staging_files=[],
            renamed_columns=compiled.renamed_columns,
            version=version,
            repair=ManifestRepair(
                repair_id=repair_id,
                reason=reason,
                repaired_at=iso_utc(now),
                previous_manifest=self._kept_key(key, current.version).rsplit("/", 1)[-1],
                previous_events=current.events,
            ),
        )

    def _check_keeps_every_id(self, key: BucketKey, current: Manifest, new: Manifest) -> None:
        prefix = self.layout.bucket_prefix(key)
        scratch = self.scratch_dir / f"reclose-check-{secrets.token_hex(4)}"
        with LocalCopies(self.store, scratch) as copies:
            # A missing part of version N is the lost part being repaired: left out.
            old = list(copies.fetch(f"{prefix}/{f.name}" for f in current.files).values())
            if not old:
                return
            fresh_keys = [f"{prefix}/{f.name}" for f in new.files]
            got = copies.fetch(fresh_keys)
            if len(got) < len(fresh_keys):
                raise StorageError(
                    f"parts of version {new.version} of {key.label()} vanished right after "
                    f"they were written under {self.layout.where(prefix)}; nothing was "
                    "switched, run the repair again"
                )
            dropped = self._ids_dropped(old, list(got.values()))
        if dropped:
            for f in new.files:
                self.store.delete(f"{prefix}/{f.name}")
            raise RepairRefusedError(
                f"re-closing {key.label()} would drop {dropped} ids that version "
                f"{current.version} holds (messages that no longer decode with the current "
                "schema, or that the stream lost); nothing was changed"
            )

    def _ids_dropped(self, old: list[Path], fresh: list[Path]) -> int:
        """Distinct ids of the files ``old`` that the files ``fresh`` lack."""
        con = duckdb.connect(config={"threads": max(1, self.cfg.threads)})
        try:
            old_sql = f"read_parquet({sql_list(old)}, union_by_name = true)"
            if fresh:
                new_sql = f"read_parquet({sql_list(fresh)}, union_by_name = true)"
                query = (
                    f"SELECT count(DISTINCT o.id) FROM {old_sql} o ANTI JOIN {new_sql} n USING (id)"
                )
            else:
                query = f"SELECT count(DISTINCT id) FROM {old_sql}"
            rows = con.execute(query).fetchall()
        finally:
            con.close()
        return int(rows[0][0]) if rows else 0

    # -- steps 4-5 ----------------------------------------------------------------

    def _kept_key(self, key: BucketKey, version: int) -> str:
        return f"{self.layout.manifest_key(key)}.v{version}"

    def _read_kept(self, key: BucketKey, version: int) -> Manifest:
        kept = self._kept_key(key, version)
        return decode_manifest(self.store.get(kept), self.layout.where(kept))

    async def _record(self, key: BucketKey, manifest: Manifest) -> None:
        got = await self.catalog.get(key)
        if got is None:
            return
        entry, rev = got
        if entry.events != manifest.events:
            await self.catalog.update(key, replace(entry, events=manifest.events), rev)

    async def _notify(self, key: BucketKey, manifest: Manifest) -> None:
        """Tell downstream jobs, as a close does: the manifest on ``courier.closed.<T>``,
        once per version (the msg id carries it; at least once, like close notices)."""
        await self.transport.publish_closed(
            key.event_type,
            msgspec.json.encode(manifest),
            msg_id=f"closed.{key.label()}.v{manifest.version}",
        )

    async def _commit_table(self, key: BucketKey, compiled: CompiledType) -> None:
        """The table's overwrite, before version N's files are deleted (so the table never
        lists a deleted file while the catalog is up)."""
        if self._tables is None:
            return
        try:
            await asyncio.to_thread(self._tables.sync, key, compiled.arrow_schema)
        except CourierError as exc:
            log.warning(
                "re-close %s: the table keeps the previous version for now (%s); the closer "
                "commits it within tables.catch_up_interval_secs",
                key.label(),
                exc,
            )

    def _finish(self, key: BucketKey, manifest: Manifest) -> None:
        prefix = self.layout.bucket_prefix(key)
        keep = {f"{prefix}/{f.name}" for f in manifest.files}
        for part in self.layout.part_keys(key):
            if part not in keep:
                self.store.delete(part)


def _part_name(version: int, index: int) -> str:
    return f"part-v{version}-{index:05d}.parquet"

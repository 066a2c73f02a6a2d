"""What the dashboard shows, as JSON documents (the API and the page use the same ones)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from courier.audit import AuditStore, BucketAudit, DeliveredScanner, TypeView, build_report
from courier.audit.report import gather_types
from courier.model import bucket_start, iso_utc
from courier.schema import Registry
from courier.settings import Settings
from courier.transport import Transport


@dataclass
class Sources:
    """Where the dashboard reads from; one of each per app."""

    settings: Settings
    transport: Transport
    registry: Registry
    store: AuditStore
    scanner: DeliveredScanner

    async def views(self, only: str | None = None) -> list[TypeView]:
        return await gather_types(
            self.settings, self.transport, self.registry, self.store, only=only
        )


def cell(b: BucketAudit) -> dict[str, Any]:
    """One grid cell: colour state, audit mark and the details shown on hover/click."""
    late = next((p for p in b.problems if p.kind == "late"), None)
    return {
        "start": b.bucket_start,
        "start_iso": b.bucket_start_iso,
        "state": b.state,
        "verdict": b.verdict,
        "mismatch": b.mismatch,
        "overdue": late is not None and not b.closed,
        "accepted": b.accepted,
        "in_stream": b.in_stream,
        "delivered": b.delivered,
        "invalid": b.invalid,
        "duplicates_removed": b.duplicates_removed,
        "skewed": b.skewed,
        "completeness_percent": b.completeness_percent,
        "close_delay_secs": b.close_delay_secs,
        "open_for_secs": b.open_for_secs,
        "slo_secs": b.slo_secs,
        "late_by_secs": b.late_by_secs,
        "files": [{"name": f.name, "bytes": f.bytes, "rows": f.rows} for f in b.files],
        "problems": [{"kind": p.kind, "message": p.message} for p in b.problems],
    }


def grid(sources: Sources, views: list[TypeView], columns: int) -> dict[str, Any]:
    """Types x the latest ``columns`` buckets."""
    s = sources.settings
    width = s.bucket_width_secs
    now = time.time()
    last = bucket_start(now, width)
    first = last - (columns - 1) * width
    report = build_report(
        views, sources.scanner, s, start=first, end=last + width, now=now, limit=columns
    )
    by_type: dict[str, dict[int, BucketAudit]] = {}
    for b in report.buckets:
        by_type.setdefault(b.event_type, {})[b.bucket_start] = b
    starts = list(range(first, last + 1, width))
    rows = []
    for v in views:
        cells = by_type.get(v.name, {})
        rows.append(
            {
                "type": v.name,
                "cells": [cell(cells[st]) if st in cells else None for st in starts],
            }
        )
    return {
        "generated_at": iso_utc(now),
        "bucket_width_secs": width,
        "starts": starts,
        "starts_iso": [iso_utc(st) for st in starts],
        "rows": rows,
    }


def types(sources: Sources, views: list[TypeView]) -> list[dict[str, Any]]:
    """Per-type lag, backlog and throughput."""
    s = sources.settings
    width = s.bucket_width_secs
    now = time.time()
    current = bucket_start(now, width)
    out = []
    for v in views:
        last_full = v.stream.events(current - width)
        so_far = v.stream.events(current)
        elapsed = max(1.0, now - current)
        out.append(
            {
                "type": v.name,
                "tier": v.settings.tier,
                "finance": v.settings.finance,
                "owner": v.settings.owner,
                "grace_secs": v.grace_secs,
                "slo_secs": s.audit.close_delay_slo_secs(v.settings.tier),
                "lag_secs": 0.0 if v.oldest_unacked_at is None else now - v.oldest_unacked_at,
                "pending": v.writer_pending,
                "watermark": iso_utc(v.writer_watermark) if v.writer_watermark else None,
                "audit_pending": v.audit_pending,
                "events_last_bucket": last_full,
                "events_per_sec_last_bucket": last_full / width,
                "events_per_sec_now": so_far / elapsed,
            }
        )
    return out

"""Helpers for the audit integration tests: a pipeline with an in-process auditor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from courier.audit import Auditor, AuditStore, BucketAudit, DeliveredScanner, build_report
from courier.audit.report import gather_types
from courier.settings import Settings
from courier.storage import Layout
from courier.transport import AUDIT_KV
from courier_testing import FAST, Pipeline, eventually, example_definitions, open_pipeline

AUDIT_FAST = {
    "fetch_wait_secs": 0.2,
    "check_interval_secs": 0.3,
    "spill_secs": 0.5,
    "gateway_flush_interval_secs": 0.2,
}


def audit_settings(make_settings: Callable[..., Settings], **audit: Any) -> Settings:
    return make_settings(**FAST, audit={**AUDIT_FAST, **audit})


async def open_audited_pipeline(settings: Settings) -> Pipeline:
    return await open_pipeline(settings, example_definitions("PlaySong", "Search"))


async def start_auditor(p: Pipeline) -> Auditor:
    store = AuditStore(await p.transport.key_value(AUDIT_KV))
    auditor = Auditor(p.settings, p.transport, p.registry, store)
    p.tasks.append(asyncio.create_task(auditor.run(p.stop_event)))
    return auditor


async def audit_bucket(p: Pipeline, event_type: str, start: int) -> BucketAudit | None:
    """The reconciliation of one bucket, as `courier audit` computes it (None: not known yet)."""
    store = AuditStore(await p.transport.key_value(AUDIT_KV))
    views = await gather_types(p.settings, p.transport, p.registry, store, only=event_type)
    scanner = DeliveredScanner(Layout(p.settings.data_dir, p.settings.bucket_width_secs))
    report = build_report(views, scanner, p.settings, start=start, end=start + 1)
    if not report.buckets:
        return None
    (bucket,) = report.buckets
    return bucket


async def wait_for_verdict(
    p: Pipeline,
    event_type: str,
    start: int,
    done: Callable[[BucketAudit], bool],
    timeout_secs: float = 20,
) -> BucketAudit:
    last: list[BucketAudit | None] = [None]

    async def verdict() -> BucketAudit | None:
        last[0] = b = await audit_bucket(p, event_type, start)
        return b if b is not None and done(b) else None

    try:
        return await eventually(
            verdict, what=f"audit of {event_type} {start}", timeout_secs=timeout_secs
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last audit said {last[0]}") from None


def settled(b: BucketAudit) -> bool:
    return b.closed and b.verdict != "pending"

"""``courier auditor`` (the service) and ``courier audit`` (the report, for people and cron)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, Protocol

import click

from courier.audit import (
    Auditor,
    AuditStore,
    DeliveredScanner,
    Report,
    build_report,
    gather_types,
    recount,
)
from courier.audit.dc import DcAudit, audit_dcs
from courier.cli.params import parse_when
from courier.service.runtime import Connected, connect_service, run_component
from courier.settings import Settings
from courier.storage.layout import open_layout
from courier.tables import TableStatus
from courier.transport import AUDIT_KV

WAIT_FOR_NATS_SECS = 10.0


class SettingsSource(Protocol):
    """The CLI group's context object (``courier.cli.main``): builds this process's settings."""

    def settings(self, **more: Any) -> Settings: ...


def run_auditor(settings: Settings) -> None:
    async def build(conn: Connected) -> Auditor:
        store = AuditStore(await conn.transport.key_value(AUDIT_KV))
        return Auditor(settings, conn.transport, conn.registry, store)

    run_component(settings, "auditor", build, metrics_port=settings.audit.metrics_port)


async def audit_report(
    settings: Settings, *, event_type: str | None, start: float, end: float, limit: int
) -> Report:
    conn = await connect_service(settings, "courier-audit", wait_secs=WAIT_FOR_NATS_SECS)
    try:
        store = AuditStore(await conn.transport.key_value(AUDIT_KV))
        views = await gather_types(settings, conn.transport, conn.registry, store, only=event_type)
    finally:
        await conn.transport.close()
    layout = open_layout(settings)
    local = settings.tables.enabled and layout.local_root is not None
    tables = TableStatus(settings, layout) if local else None
    return build_report(
        views,
        DeliveredScanner(layout, scratch_dir=settings.resolved_scratch_dir),
        settings,
        start=start,
        end=end,
        limit=limit,
        tables=tables,
    )


async def dc_audit(settings: Settings, event_type: str | None) -> list[DcAudit]:
    """Per type and DC: exact completeness and delay (several DCs only)."""
    conn = await connect_service(settings, "courier-audit", wait_secs=WAIT_FOR_NATS_SECS)
    try:
        names = sorted(await conn.registry.compiled())
        if event_type is not None:
            names = [n for n in names if n == event_type]
        return await audit_dcs(settings, conn.transport, names)
    finally:
        await conn.transport.close()


async def _recount(settings: Settings, event_type: str) -> tuple[int, int]:
    conn = await connect_service(settings, "courier-audit", wait_secs=WAIT_FOR_NATS_SECS)
    try:
        store = AuditStore(await conn.transport.key_value(AUDIT_KV))
        counts = await recount(settings, conn.transport, store, event_type)
    finally:
        await conn.transport.close()
    return counts.last_seq, sum(r[1] for r in counts.buckets.values())


@click.command()
@click.pass_obj
def auditor(c: SettingsSource) -> None:
    """Run the auditor: count every stream through the `audit` consumer, watch the SLOs."""
    run_auditor(c.settings())


@click.command()
@click.option("--type", "event_type", help="Only this type.")
@click.option("--from", "from_", help="Buckets starting at or after this time (default: 24 h ago).")
@click.option("--to", help="Buckets starting before this time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--limit", type=int, default=1000, show_default=True, help="Latest buckets per type.")
@click.option(
    "--recount",
    "recount_type",
    metavar="TYPE",
    help="First rebuild TYPE's stream counts from the data retained in its stream.",
)
@click.pass_obj
def audit(
    c: SettingsSource,
    event_type: str | None,
    from_: str | None,
    to: str | None,
    as_json: bool,
    limit: int,
    recount_type: str | None,
) -> None:
    """Reconcile accepted, stored and delivered counts per type and bucket, with SLOs.

    Exits 1 when any bucket is a mismatch (loss, duplicates) or breaches an SLO.
    """
    s = c.settings()
    if recount_type:
        last_seq, events = asyncio.run(_recount(s, recount_type))
        if not as_json:
            click.echo(f"recounted {recount_type}: {events} events up to stream seq {last_seq}")
    now = time.time()
    report = asyncio.run(
        audit_report(
            s,
            event_type=event_type,
            start=parse_when(from_, now - 86_400),
            end=parse_when(to, now + s.bucket_width_secs),
            limit=limit,
        )
    )
    dcs = asyncio.run(dc_audit(s, event_type)) if s.dc.domains else []
    if as_json:
        doc = report.to_json()
        if s.dc.domains:
            doc["dcs"] = [d.to_json() for d in dcs]
        click.echo(json.dumps(doc, indent=2))
    else:
        _print(report)
        _print_dcs(dcs)
    sys.exit(1 if report.failed or not all(d.ok for d in dcs) else 0)


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def _print(report: Report) -> None:
    cols = (
        f"{'type':16} {'bucket_start':24} {'state':8} {'accepted':>8} {'stream':>8} "
        f"{'delivered':>9} {'dups':>5} {'invalid':>7} {'skewed':>6} {'complete%':>9} "
        f"{'delay_s':>8} {'slo_s':>7} verdict"
    )
    click.echo(cols)
    for b in report.buckets:
        delay = b.close_delay_secs if b.closed else b.open_for_secs
        pct = "-" if b.completeness_percent is None else f"{b.completeness_percent:.2f}"
        click.echo(
            f"{b.event_type:16} {b.bucket_start_iso:24} {b.state:8} {b.accepted:>8} "
            f"{b.in_stream:>8} {_fmt(b.delivered):>9} {_fmt(b.duplicates_removed):>5} "
            f"{b.invalid:>7} {_fmt(b.skewed):>6} {pct:>9} {_fmt(delay):>8} "
            f"{b.slo_secs:>7.0f} {b.verdict}"
        )
        for p in b.problems:
            click.echo(f"    {p.kind}: {p.message}")
    summary = ", ".join(f"{k} {v}" for k, v in report.summary().items())
    click.echo(f"{len(report.buckets)} buckets: {summary}")
    if behind := report.not_in_table():
        keys = ", ".join(f"{b.event_type} {b.bucket_start_iso}" for b in behind[:10])
        more = f" (+{len(behind) - 10} more)" if len(behind) > 10 else ""
        click.echo(f"closed but not yet in their Iceberg table: {len(behind)}: {keys}{more}")


def _print_dcs(rows: list[DcAudit]) -> None:
    """Per DC: is every DC sequence here exactly once, and how far behind is its source."""
    if not rows:
        return
    click.echo(
        f"{'type':16} {'dc':8} {'stored':>8} {'dc_last':>8} {'missing':>7} {'repeated':>8} "
        f"{'behind':>7} {'behind_s':>8} {'transfer_s':>10} verdict"
    )
    for d in rows:
        verdict = {
            "ok": "ok",
            "unreachable": "UNREACHABLE",
            "mismatch": "MISMATCH",
            "late": f"LATE (> {d.max_transfer_delay_secs:g}s)",
        }[d.status]
        click.echo(
            f"{d.event_type:16} {d.domain:8} {d.stored:>8} {_fmt(d.dc_last_seq):>8} "
            f"{d.missing:>7} {d.repeated:>8} {_fmt(d.behind_messages):>7} "
            f"{_fmt(d.behind_secs):>8} {_fmt(d.last_transfer_secs):>10} {verdict}"
        )
        if d.missing_ranges:
            click.echo(f"    missing DC sequences: {d.missing_ranges}")
        if d.repeated_sample:
            click.echo(f"    repeated DC sequences: {d.repeated_sample}")

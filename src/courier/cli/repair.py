"""``courier repair``: repairs (DESIGN §10) through the gateway's admin API.

Every command but ``reclose`` calls the gateway with the admin key (``--api-key``
or ``COURIER_API_KEY``); the gateway records each call in the repair log, which
``courier repair list`` shows. ``reclose`` rebuilds bucket files, so it runs where
the data dir is, against NATS directly, and records itself in the same log.
``replay-quarantine`` also reads and moves the quarantine files under the data
dir, so it runs where the writer's data dir is (see :mod:`courier.repair.quarantine`).

The commands parse arguments and print; what they do is in
:mod:`courier.repair.client` and :mod:`courier.repair.reclose`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from courier.cli.audit import SettingsSource
from courier.cli.http import gateway_base_url, gateway_options
from courier.cli.params import parse_when
from courier.errors import CourierError, RepairRefusedError
from courier.model import BucketKey, bucket_start, iso_utc, parse_time
from courier.repair.client import QuarantineReplay, RepairClient, replay_invalid, replay_quarantine

_ADMIN_KEY_HELP = "The gateway's admin key (when it has auth on)."


@click.group()
def repair() -> None:
    """Redeliver, replay and inspect repairs (admin key; every call is recorded)."""


@contextmanager
def _client(
    c: SettingsSource, gateway_url: str | None, api_key: str | None
) -> Iterator[RepairClient]:
    """A client of the gateway; its errors (refusals, no answer) end the command with their text."""
    try:
        with RepairClient(gateway_base_url(c.settings(), gateway_url), api_key) as client:
            yield client
    except CourierError as exc:
        raise click.ClickException(str(exc)) from exc


@repair.command("list")
@click.option("--limit", type=int, default=50, show_default=True, help="Latest repairs shown.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@gateway_options(api_key_help=_ADMIN_KEY_HELP)
@click.pass_obj
def repair_list(
    c: SettingsSource, limit: int, as_json: bool, gateway_url: str | None, api_key: str | None
) -> None:
    """The repair log, newest first: who did what, when, and how it ended."""
    with _client(c, gateway_url, api_key) as client:
        records = client.repairs(limit)
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    click.echo(f"{'started_at':25} {'operation':10} {'type':16} {'by':10} {'outcome':8} details")
    for r in records:
        args = " ".join(f"{k}={v}" for k, v in r["arguments"].items())
        counts = " ".join(f"{k}={v}" for k, v in sorted(r.get("counts", {}).items()))
        details = r.get("error") or " ".join(x for x in (args, counts) if x)
        click.echo(
            f"{r['started_at']:25} {r['operation']:10} {r['event_type']:16} "
            f"{r['principal']:10} {r['outcome']:8} {details}  [{r['id']}]"
        )


@repair.command("redeliver")
@click.argument("event_type")
@click.option("--from-seq", type=int, help="First stream sequence to deliver again.")
@click.option("--from-time", help="Deliver again what was published at or after (RFC 3339).")
@gateway_options(api_key_help=_ADMIN_KEY_HELP)
@click.pass_obj
def repair_redeliver(
    c: SettingsSource,
    event_type: str,
    from_seq: int | None,
    from_time: str | None,
    gateway_url: str | None,
    api_key: str | None,
) -> None:
    """Make the writers receive EVENT_TYPE's messages again from a sequence or a time.

    Closed buckets do not change: redelivered events already in them are
    dropped, events missing from them land once in the oldest open bucket
    (counted as skewed). Open buckets wait until the redelivery is written.
    """
    if (from_seq is None) == (from_time is None):
        raise click.UsageError("give exactly one of --from-seq and --from-time")
    with _client(c, gateway_url, api_key) as client:
        record = client.redeliver(event_type, from_seq=from_seq, from_time=from_time)
    result = record["result"]
    click.echo(
        f"redelivering {event_type} from seq {result['from_seq']}: "
        f"{record['counts']['messages']} messages (stream {result['stream_first_seq']}.."
        f"{result['stream_last_seq']}); repair {record['id']}"
    )


@repair.command("replay-quarantine")
@click.argument("event_type")
@click.option("--dry-run", is_flag=True, help="Only list what would be replayed.")
@gateway_options(api_key_help=_ADMIN_KEY_HELP)
@click.pass_obj
def repair_replay_quarantine(
    c: SettingsSource,
    event_type: str,
    dry_run: bool,
    gateway_url: str | None,
    api_key: str | None,
) -> None:
    """Publish EVENT_TYPE's quarantined messages again (after the fix), then file them away.

    Each record goes to the gateway (POST /v1/admin/republish/EVENT_TYPE) and,
    only once it is stored, moves to _quarantine/EVENT_TYPE/_replayed/. Exits 1
    when a record could not be replayed (it stays in place; run again later).
    """
    from courier.storage.layout import open_layout

    s = c.settings()
    report = QuarantineReplay()
    with _client(c, gateway_url, api_key) as client:
        layout = open_layout(s)
        for step in replay_quarantine(client, layout, event_type, report, dry_run=dry_run):
            seq = step.record.stream_seq if step.record is not None else None
            if step.outcome == "unreadable":
                click.echo(f"unreadable: {step.detail}", err=True)
            elif step.outcome == "would-replay":
                assert step.record is not None
                click.echo(
                    f"would replay seq {seq} ({len(step.record.body)} bytes), "
                    f"quarantined for: {step.detail}"
                )
            elif step.outcome == "refused":
                click.echo(f"refused seq {seq}: {step.detail}", err=True)
            elif step.outcome == "duplicate":
                click.echo(f"seq {seq}: already stored (duplicate), filed away")
            else:
                click.echo(f"seq {seq}: stored as seq {step.stored_seq}")
    n = report.counts
    if dry_run:
        click.echo(
            f"{event_type}: {report.files - n['unreadable']} to replay (dry run, nothing sent)"
        )
    else:
        click.echo(
            f"{event_type}: replayed {n['replayed']}, already stored {n['duplicate']}, "
            f"refused {n['refused']}, unreadable {n['unreadable']}"
        )
    sys.exit(1 if n["refused"] or n["unreadable"] else 0)


@repair.command("replay-invalid")
@click.option("--type", "event_type", required=True, help="The event type whose rejects to replay.")
@click.option("--from", "from_", required=True, help="Start of the _invalid buckets (RFC 3339).")
@click.option("--to", required=True, help="End (exclusive) of the _invalid buckets (RFC 3339).")
@gateway_options(api_key_help=_ADMIN_KEY_HELP)
@click.pass_obj
def repair_replay_invalid(
    c: SettingsSource,
    event_type: str,
    from_: str,
    to: str,
    gateway_url: str | None,
    api_key: str | None,
) -> None:
    """Validate the rejected events of a type again, against its current schema.

    Reads the closed _invalid buckets of [--from, --to), takes the rows of
    --type and sends their raw events to the gateway (POST
    /v1/admin/resubmit/TYPE, the same validation and storage as POST
    /v1/events). Reports what was accepted and what is still rejected, and why;
    those are stored in _invalid again. Exits 1 when some are still rejected.
    """
    from courier.model import INVALID_TYPE
    from courier.storage import BucketReader

    s = c.settings()
    start, end = parse_when(from_, 0), parse_when(to, 0)
    table = BucketReader(s.resolved_store_url, s.bucket_width_secs, scratch_dir=s.scratch_dir).read(
        INVALID_TYPE, start, end, columns=["event_type", "raw"]
    )
    raws = [r["raw"] for r in table.to_pylist() if r.get("event_type") == event_type and r["raw"]]
    with _client(c, gateway_url, api_key) as client:
        done = replay_invalid(client, raws, event_type, start, end)
    click.echo(
        f"{event_type}: {done.found} rejected events in _invalid [{iso_utc(start)}, {iso_utc(end)}): "
        f"accepted {done.accepted}, still rejected {done.still_rejected}"
    )
    for reason, n in done.reasons.most_common(20):
        click.echo(f"  {n:6}  {reason}")
    if done.without_id:
        click.echo(
            f"note: {done.without_id} events had no id; replaying them again would store them twice"
        )
    sys.exit(1 if done.still_rejected else 0)


@repair.command("reclose")
@click.argument("event_type")
@click.argument("bucket")
@click.option("--reason", required=True, help="Why (kept in the manifest and the repair log).")
@click.pass_obj
def repair_reclose(c: SettingsSource, event_type: str, bucket: str, reason: str) -> None:
    """Rebuild the closed BUCKET of EVENT_TYPE from the stream as a new manifest version.

    BUCKET is any RFC 3339 time inside it (e.g. 2026-11-26T10:00:00Z). For a bucket
    that lost or corrupted a part file while the stream still retains its messages;
    refused, with nothing changed, when the stream lost any of them. Runs here,
    against NATS and the data dir (like ``courier provision``: access to both is the
    privilege), and is recorded in the repair log. See courier/closer/reclose.py.
    """
    from courier.repair.reclose import reclose_bucket

    settings = c.settings()
    try:
        at = parse_time(bucket)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="BUCKET") from exc
    key = BucketKey(event_type, bucket_start(at, settings.bucket_width_secs))
    try:
        result, repair_id = asyncio.run(reclose_bucket(settings, key, reason))
    except RepairRefusedError as exc:
        raise click.ClickException(f"re-close refused: {exc}") from exc
    except CourierError as exc:
        raise click.ClickException(f"re-close of {key.label()} failed: {exc}") from exc
    m = result.manifest
    click.echo(
        f"re-closed {key.label()} as version {m.version}: {m.events} events "
        f"(was {result.previous.events}); {result.undecodable_messages} undecodable "
        f"messages skipped; repair {repair_id}"
    )

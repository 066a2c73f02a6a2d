"""``courier repair``: repairs (DESIGN §10) through the gateway's admin API.

Every command but ``reclose`` calls the gateway with the admin key (``--api-key``
or ``COURIER_API_KEY``); the gateway records each call in the repair log, which
``courier repair list`` shows. ``reclose`` rebuilds bucket files, so it runs where
the data dir is, against NATS directly, and records itself in the same log. ``replay-quarantine`` also reads and moves the
quarantine files under the data dir, so it runs where the writer's data dir is
(see :mod:`courier.repair.quarantine` for its protocol).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import click

from courier.cli.audit import SettingsSource
from courier.cli.http import GatewayClient, error_text, gateway_base_url, gateway_options
from courier.errors import CourierError, RepairRefusedError, StorageError
from courier.model import BucketKey, bucket_start, iso_utc, parse_time
from courier.repair import RepairLog
from courier.runtime import connect_service
from courier.settings import Settings
from courier.transport import CATALOG_KV, REPAIRS_KV

if TYPE_CHECKING:
    from courier.closer.reclose import RecloseResult

_ADMIN_KEY_HELP = "The gateway's admin key (when it has auth on)."


@click.group()
def repair() -> None:
    """Redeliver, replay and inspect repairs (admin key; every call is recorded)."""


def _client(c: SettingsSource, gateway_url: str | None, api_key: str | None) -> GatewayClient:
    return GatewayClient(gateway_base_url(c.settings(), gateway_url), api_key)


def _ok(response: Any, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise click.ClickException(f"{what}: HTTP {response.status_code}: {error_text(response)}")
    doc: dict[str, Any] = response.json()
    return doc


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
        response = client.request("GET", "/v1/admin/repairs", limit=limit)
    if response.status_code != 200:
        raise click.ClickException(
            f"listing repairs: HTTP {response.status_code}: {error_text(response)}"
        )
    records: list[dict[str, Any]] = response.json()
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
    body = {"from_seq": from_seq} if from_seq is not None else {"from_time": from_time}
    with _client(c, gateway_url, api_key) as client:
        response = client.request("POST", f"/v1/admin/redeliver/{event_type}", json=body)
    record = _ok(response, f"redelivering {event_type}")
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
    from courier.repair import mark_replayed, quarantined_files, read_quarantined
    from courier.storage import Layout

    s = c.settings()
    files = quarantined_files(Layout(s.data_dir, s.bucket_width_secs), event_type)
    replayed = duplicates = refused = unreadable = 0
    with GatewayClient(gateway_base_url(s, gateway_url), api_key) as client:
        for path in files:
            try:
                record = read_quarantined(path)
                if record.event_type != event_type:
                    raise StorageError(f"{path} holds a {record.event_type!r} message")
            except StorageError as exc:
                click.echo(f"unreadable: {exc}", err=True)
                unreadable += 1
                continue
            if dry_run:
                click.echo(
                    f"would replay seq {record.stream_seq} ({len(record.body)} bytes), "
                    f"quarantined for: {record.reason}"
                )
                continue
            response = client.request(
                "POST", f"/v1/admin/republish/{event_type}", json=record.republish_request()
            )
            if response.status_code in (400, 404, 409, 413):
                click.echo(f"refused seq {record.stream_seq}: {error_text(response)}", err=True)
                refused += 1
                continue
            if response.status_code != 200:
                left = len(files) - replayed - duplicates - refused - unreadable
                raise click.ClickException(
                    f"replaying seq {record.stream_seq}: HTTP {response.status_code}: "
                    f"{error_text(response)}; stopped, {left} records left in place "
                    f"(replayed {replayed + duplicates}); run again later"
                )
            result = response.json()["result"]
            # Only now that the message is stored: a crash before this move replays it again.
            mark_replayed(record)
            if result["duplicate"]:
                duplicates += 1
                click.echo(f"seq {record.stream_seq}: already stored (duplicate), filed away")
            else:
                replayed += 1
                click.echo(f"seq {record.stream_seq}: stored as seq {result['stream_seq']}")
    if dry_run:
        click.echo(f"{event_type}: {len(files) - unreadable} to replay (dry run, nothing sent)")
    else:
        click.echo(
            f"{event_type}: replayed {replayed}, already stored {duplicates}, "
            f"refused {refused}, unreadable {unreadable}"
        )
    sys.exit(1 if refused or unreadable else 0)


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
    from courier.cli.params import parse_when
    from courier.model import INVALID_TYPE, iso_utc
    from courier.storage import BucketReader

    s = c.settings()
    start, end = parse_when(from_, 0), parse_when(to, 0)
    table = BucketReader(s.data_dir, s.bucket_width_secs).read(
        INVALID_TYPE, start, end, columns=["event_type", "raw"]
    )
    raws = [
        row["raw"]
        for row in table.to_pylist()
        if row.get("event_type") == event_type and row["raw"]
    ]
    sendable, not_json = _json_objects(raws)
    without_id = sum(1 for r in sendable if "id" not in json.loads(r))
    accepted = 0
    reasons: Counter[str] = Counter({"the stored raw text is not a JSON object": not_json})
    budget = max(1024, s.gateway.max_body_bytes // 2)
    with GatewayClient(gateway_base_url(s, gateway_url), api_key) as client:
        for batch in _batches(sendable, budget, s.gateway.max_events_per_batch):
            body = (
                '{"from_time":'
                + json.dumps(iso_utc(start))
                + ',"to_time":'
                + json.dumps(iso_utc(end))
                + ',"events":['
                + ",".join(batch)
                + "]}"
            )
            response = client.request(
                "POST",
                f"/v1/admin/resubmit/{event_type}",
                content=body.encode(),
            )
            doc = _ok(response, f"resubmitting {len(batch)} {event_type} events")
            accepted += doc["counts"]["accepted"]
            reasons.update(r["error"] for r in doc["rejected"])
    still = sum(reasons.values())
    click.echo(
        f"{event_type}: {len(raws)} rejected events in _invalid [{iso_utc(start)}, {iso_utc(end)}): "
        f"accepted {accepted}, still rejected {still}"
    )
    for reason, n in reasons.most_common(20):
        if n:
            click.echo(f"  {n:6}  {reason}")
    if without_id:
        click.echo(
            f"note: {without_id} events had no id; replaying them again would store them twice"
        )
    sys.exit(1 if still else 0)


def _json_objects(raws: list[str]) -> tuple[list[str], int]:
    """The raw texts that are JSON objects (sendable as they are), and how many are not."""
    good: list[str] = []
    for raw in raws:
        try:
            if isinstance(json.loads(raw), dict):
                good.append(raw)
                continue
        except ValueError:
            pass
    return good, len(raws) - len(good)


def _batches(raws: list[str], max_bytes: int, max_events: int) -> list[list[str]]:
    batches: list[list[str]] = [[]]
    size = 0
    for raw in raws:
        n = len(raw.encode()) + 1
        if batches[-1] and (size + n > max_bytes or len(batches[-1]) >= max_events):
            batches.append([])
            size = 0
        batches[-1].append(raw)
        size += n
    return [b for b in batches if b]


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
    settings = c.settings()
    try:
        at = parse_time(bucket)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="BUCKET") from exc
    key = BucketKey(event_type, bucket_start(at, settings.bucket_width_secs))
    try:
        result, repair_id = asyncio.run(_reclose(settings, key, reason))
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


async def _reclose(settings: Settings, key: BucketKey, reason: str) -> tuple[RecloseResult, str]:
    # DuckDB and pyarrow load only for this command, not for every `courier` call.
    from courier.closer import Catalog
    from courier.closer.reclose import BucketRecloser

    conn = await connect_service(settings, "courier-repair", wait_secs=10.0)
    try:
        compiled = (await conn.registry.compiled()).get(key.event_type)
        if compiled is None:
            raise RepairRefusedError(f"{key.event_type!r} is not a registered event type")
        log = RepairLog(await conn.transport.key_value(REPAIRS_KV))
        catalog = Catalog(
            await conn.transport.key_value(CATALOG_KV), "repair", settings.closer.claim_lease_secs
        )
        principal = f"local:{getpass.getuser()}@{socket.gethostname()}"
        arguments = {"bucket": iso_utc(key.start), "reason": reason}
        async with log.recording("reclose", key.event_type, principal, arguments) as record:
            result = await BucketRecloser(settings, conn.transport, catalog).reclose(
                key, compiled, repair_id=record.id, reason=reason, now=time.time()
            )
            record.counts.update(result.counts())
            record.result = {"files": [f.name for f in result.manifest.files]}
        return result, record.id
    finally:
        await conn.transport.close()

"""The ``courier`` command."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import click

from courier.cli.params import parse_when
from courier.errors import CourierError
from courier.service.runtime import configure_logging
from courier.settings import Settings, load_settings


class _Ctx:
    def __init__(self, config: Path | None, overrides: dict[str, Any]) -> None:
        self.config = config
        self.overrides = overrides

    def settings(self, **more: Any) -> Settings:
        merged = dict(self.overrides)
        for k, v in more.items():
            if isinstance(v, dict):
                v = {kk: vv for kk, vv in v.items() if vv is not None}
                if not v:
                    continue
            if v is not None:
                merged[k] = v
        s = load_settings(self.config, **merged)
        configure_logging(s.log_level)
        return s


pass_ctx = click.make_pass_decorator(_Ctx)


def example_schemas_dir() -> Path:
    return Path(str(files("courier") / "examples" / "schemas"))


def segment_schemas_dir() -> Path:
    """The shipped types of Segment calls (SegmentIdentify, SegmentTrack, ...)."""
    return Path(str(files("courier") / "gateway" / "segment" / "schemas"))


def segment_example_schemas_dir() -> Path:
    """An example tracking-plan type (SongPlayed, for the "Song Played" track event)."""
    return Path(str(files("courier") / "examples" / "segment"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(path_type=Path), help="TOML settings file.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Root of buckets and staging.")
@click.option(
    "--store-url",
    help="Bucket store: a path, file://, s3://bucket/prefix or gs://bucket/prefix "
    "(default: --data-dir).",
)
@click.option(
    "--scratch-dir",
    type=click.Path(path_type=Path),
    help="This process's own scratch directory (default: <data-dir>/_tmp).",
)
@click.option("--nats-url", help="NATS server URL (default: the embedded server's).")
@click.option("--bucket-width-secs", type=int, help="Bucket width; must divide a day.")
@click.option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")
@click.pass_context
def cli(
    ctx: click.Context,
    config: Path | None,
    data_dir: Path | None,
    store_url: str | None,
    scratch_dir: Path | None,
    nats_url: str | None,
    bucket_width_secs: int | None,
    log_level: str | None,
) -> None:
    """Courier: reliable event delivery into immutable hourly buckets."""
    ctx.obj = _Ctx(
        config,
        {
            "data_dir": data_dir,
            "store_url": store_url,
            "scratch_dir": scratch_dir,
            "nats_url": nats_url,
            "bucket_width_secs": bucket_width_secs,
            "log_level": log_level,
        },
    )


# -- running ------------------------------------------------------------------------


@cli.command()
@click.option("--http-port", type=int, help="Gateway port (default 8080).")
@click.option("--nats-port", type=int, help="Embedded NATS port (default 4222).")
@click.option("--dashboard-port", type=int, help="Dashboard port (default 8090).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Root of buckets, staging and the NATS store (same as the global option).",
)
@click.option(
    "--demo", is_flag=True, help="Apply the example schemas (PlaySong, Search, AdImpression)."
)
@click.option(
    "--segment",
    is_flag=True,
    help="Apply the types of Segment calls (SegmentIdentify, SegmentTrack, ...); with --demo "
    "also the example tracking-plan type SongPlayed.",
)
@pass_ctx
def up(
    c: _Ctx,
    http_port: int | None,
    nats_port: int | None,
    dashboard_port: int | None,
    data_dir: Path | None,
    demo: bool,
    segment: bool,
) -> None:
    """Start the whole local stack: embedded NATS, gateway, writer, closer, auditor, dashboard."""
    from courier.cli.admin import apply_schemas, provision_all, sync
    from courier.service.supervisor import Supervisor

    if data_dir is not None:
        c.overrides["data_dir"] = data_dir
    s = c.settings(
        gateway={"port": http_port}, nats={"port": nats_port}, dashboard={"port": dashboard_port}
    )
    if s.nats_url:
        raise click.UsageError("`courier up` runs its own NATS; drop --nats-url/COURIER_NATS_URL")
    sup = Supervisor(s, config=c.config)
    url = sup.start_nats()
    click.echo(f"NATS store {s.nats_store_dir.resolve()}: {sup.store_summary()}")
    try:
        admin = load_settings(c.config, **{**c.overrides, "nats_url": url})
        directories = [example_schemas_dir()] if demo else []
        if segment:
            directories.append(segment_schemas_dir())
            if demo:
                directories.append(segment_example_schemas_dir())
        for directory in directories:
            for r in sync(apply_schemas(admin, directory, force=False)):
                click.echo(f"schema {r.name}: {r.action} (version {r.version})")
        if not directories:
            sync(provision_all(admin))
        sup.start_children()
    except BaseException:
        sup.stop()
        raise
    click.echo(
        f"Courier is up: gateway http://{s.gateway.host}:{s.gateway.port}  "
        f"dashboard http://{s.dashboard.host}:{s.dashboard.port}/  "
        f"NATS {sup.nats.url}  data {s.data_dir.resolve()}  (Ctrl-C stops)"
    )
    sup.run_forever()


@cli.command()
@click.option("--port", type=int)
@pass_ctx
def nats(c: _Ctx, port: int | None) -> None:
    """Run the embedded NATS server (JetStream, sync_interval: always)."""
    from courier.cli.services import run_nats

    run_nats(c.settings(nats={"port": port}))


@cli.command()
@click.option("--host")
@click.option("--port", type=int)
@pass_ctx
def gateway(c: _Ctx, host: str | None, port: int | None) -> None:
    """Run one gateway (HTTP ingest) process."""
    from courier.gateway import serve

    serve(c.settings(gateway={"host": host, "port": port}))


@cli.command()
@click.option("--writer-id")
@pass_ctx
def writer(c: _Ctx, writer_id: str | None) -> None:
    """Run one writer process (several may share the durable consumers)."""
    from courier.cli.services import run_writer

    run_writer(c.settings(writer={"writer_id": writer_id}))


@cli.command()
@click.option("--closer-id")
@pass_ctx
def closer(c: _Ctx, closer_id: str | None) -> None:
    """Run one closer process."""
    from courier.cli.services import run_closer

    run_closer(c.settings(closer={"closer_id": closer_id}))


# -- schemas ------------------------------------------------------------------------


@cli.group()
def schema() -> None:
    """Register and list event types."""


@schema.command("apply")
@click.argument(
    "directory", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--force", is_flag=True, help="Accept backward-incompatible changes.")
@click.option(
    "--segment",
    is_flag=True,
    help="Also register the shipped types of Segment calls (SegmentIdentify, SegmentTrack, ...).",
)
@pass_ctx
def schema_apply(c: _Ctx, directory: Path | None, force: bool, segment: bool) -> None:
    """Register the <Type>.avsc (+ <Type>.toml) files of DIRECTORY. Idempotent."""
    from courier.cli.admin import apply_schemas, sync

    directories = [segment_schemas_dir()] if segment else []
    if directory is not None:
        directories.append(directory)
    if not directories:
        raise click.UsageError("give a DIRECTORY of schemas, --segment, or both")
    for d in directories:
        for r in sync(apply_schemas(c.settings(), d, force=force)):
            click.echo(f"{r.name}: {r.action} (version {r.version})")


@schema.command("list")
@pass_ctx
def schema_list(c: _Ctx) -> None:
    """List registered types with their latest version and settings, and the column
    of every field renamed through Avro aliases (it keeps its first name)."""
    from courier.cli.admin import list_schemas, sync
    from courier.schema.registry import renamed_columns

    for r in sync(list_schemas(c.settings())):
        st = r.settings
        click.echo(
            f"{r.name:24} v{r.latest.version:<3} tier={st.tier:6} finance={str(st.finance).lower():5} "
            f"owner={st.owner} grace_secs={st.grace_secs}"
        )
        for field, column in renamed_columns(r).items():
            click.echo(
                f"  field {field} is column {column} (renamed; columns keep their first name)"
            )


@cli.command()
@pass_ctx
def provision(c: _Ctx) -> None:
    """Create or update streams and consumers of every registered type to match the settings."""
    from courier.cli.admin import provision_all, sync

    for name in sync(provision_all(c.settings())):
        click.echo(f"provisioned {name}")


# -- producing ----------------------------------------------------------------------


@cli.command()
@click.argument("event_type")
@click.argument("data")
@click.option("--id", "event_id", help="Idempotency key (default: generated UUIDv7).")
@click.option(
    "--gateway-url",
    "--url",
    "url",
    help="Gateway base URL (default from settings: gateway host/port).",
)
@click.option(
    "--api-key", envvar="COURIER_API_KEY", help="API key, when the gateway has keys configured."
)
@pass_ctx
def send(
    c: _Ctx, event_type: str, data: str, event_id: str | None, url: str | None, api_key: str | None
) -> None:
    """Post one event: courier send PlaySong '{"track_id": "t1", "ms_played": 1000}'."""
    import httpx

    from courier.cli.http import gateway_base_url
    from courier.model import uuid7

    s = c.settings()
    base = gateway_base_url(s, url)
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"DATA is not JSON: {exc}") from exc
    event = {"type": event_type, "id": event_id or uuid7(), "data": payload}
    try:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        resp = httpx.post(
            f"{base}/v1/events", json={"events": [event]}, headers=headers, timeout=30
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the gateway at {base}: {exc}") from exc
    click.echo(resp.text)
    body = (
        resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    )
    if resp.status_code != 200 or body.get("rejected"):
        sys.exit(1)


# -- reading ------------------------------------------------------------------------


@cli.command()
@click.option("--type", "event_type", help="Only this type.")
@click.option("--since", help="Only buckets ending after this time.")
@pass_ctx
def buckets(c: _Ctx, event_type: str | None, since: str | None) -> None:
    """Bucket states and counts per type."""
    from courier.model import iso_utc
    from courier.storage import BucketReader

    s = c.settings()
    reader = BucketReader(s.resolved_store_url, s.bucket_width_secs, scratch_dir=s.scratch_dir)
    states = reader.states(event_type, since=parse_when(since, 0) if since else None)
    click.echo(
        f"{'type':20} {'bucket_start':25} {'state':7} {'events':>9} {'files':>5} {'delay_s':>8}"
        "  per DC: events, transfer delay p50/p99/max s"
    )
    for b in states:
        events = "" if b.events is None else str(b.events)
        delay = "" if b.close_delay_secs is None else f"{b.close_delay_secs:.1f}"
        dcs = "  ".join(
            f"{name} {t.events} {t.transfer_delay_p50_secs:.3f}/{t.transfer_delay_p99_secs:.3f}"
            f"/{t.transfer_delay_max_secs:.3f}"
            for name, t in b.dcs.items()
        )
        click.echo(
            f"{b.event_type:20} {iso_utc(b.start):25} {b.state:7} {events:>9} {b.files:>5} "
            f"{delay:>8}  {dcs}".rstrip()
        )


@cli.command()
@click.argument("event_type")
@click.option("--from", "from_", help="Start time (RFC 3339); default: 24 h ago.")
@click.option("--to", help="End time (exclusive); default: now.")
@click.option(
    "--include-open", is_flag=True, help="Also read open buckets' staging data (not deduplicated)."
)
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "parquet"]), default="table")
@click.option("--output", type=click.Path(path_type=Path), help="File for --format parquet.")
@click.option("--limit", type=int, default=20, help="Rows shown with --format table.")
@pass_ctx
def read(
    c: _Ctx,
    event_type: str,
    from_: str | None,
    to: str | None,
    include_open: bool,
    fmt: str,
    output: Path | None,
    limit: int,
) -> None:
    """Read a type's closed buckets over a time range."""
    import time

    from courier.storage import BucketReader

    s = c.settings()
    now = time.time()
    table = BucketReader(s.resolved_store_url, s.bucket_width_secs, scratch_dir=s.scratch_dir).read(
        event_type, parse_when(from_, now - 86400), parse_when(to, now), include_open=include_open
    )
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if output is None:
            raise click.UsageError("--format parquet needs --output FILE")
        pq.write_table(table, output)
        click.echo(f"wrote {table.num_rows} rows to {output}")
    elif fmt == "jsonl":
        for row in _nanos_as_text(table).to_pylist():
            click.echo(json.dumps(row, default=_json_default))
    else:
        click.echo(f"{table.num_rows} rows")
        if table.num_rows:
            click.echo(
                table.slice(0, limit).to_pandas().to_string()
                if _has_pandas()
                else table.slice(0, limit).to_string()
            )


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def _nanos_as_text(table: Any) -> Any:
    """Nanosecond timestamps as RFC 3339-like text: Python's datetime stops at microseconds."""
    import pyarrow as pa

    def text(t: Any) -> Any:
        if pa.types.is_timestamp(t) and t.unit == "ns":
            return pa.string()
        if pa.types.is_struct(t):
            return pa.struct([f.with_type(text(f.type)) for f in t])
        if pa.types.is_map(t):
            return pa.map_(t.key_type, text(t.item_type))
        if pa.types.is_list(t):
            return pa.list_(text(t.value_type))
        return t

    target = pa.schema([f.with_type(text(f.type)) for f in table.schema])
    return table if target == table.schema else table.cast(target)


def _json_default(v: object) -> str:
    if isinstance(v, datetime):
        if v.tzinfo is None:  # local-timestamp-*: no zone to convert from
            return v.isoformat()
        return v.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


@cli.command()
@click.argument("query")
@pass_ctx
def sql(c: _Ctx, query: str) -> None:
    """Run DuckDB SQL over closed buckets; each type is a view: courier sql "select count(*) from PlaySong"."""
    from courier.storage import BucketReader

    s = c.settings()
    con = BucketReader(
        s.resolved_store_url, s.bucket_width_secs, scratch_dir=s.scratch_dir
    ).duckdb()
    try:
        rel = con.sql(query)
    except Exception as exc:  # duckdb raises many error types; report them all the same way
        raise click.ClickException(f"query failed: {exc}") from exc
    if rel is not None:
        rel.show(max_rows=1000)


cli.add_command(__import__("courier.cli.tail", fromlist=["tail"]).tail)


from courier.cli.audit import audit, auditor  # noqa: E402
from courier.cli.dashboard import dashboard  # noqa: E402
from courier.cli.dc import dc  # noqa: E402
from courier.cli.keys import keys  # noqa: E402
from courier.cli.repair import repair  # noqa: E402

cli.add_command(auditor)
cli.add_command(audit)
cli.add_command(dashboard)
cli.add_command(dc)
cli.add_command(keys)
cli.add_command(repair)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except CourierError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

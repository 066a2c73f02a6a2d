"""Typed settings: one frozen object per process.

Sources, later ones win: defaults < TOML file < ``COURIER_*`` environment <
CLI flags (passed as keyword overrides). Nested sections use ``__`` in the
environment: ``COURIER_WRITER__FLUSH_INTERVAL_SECS=2``. Every duration and
size carries its unit in its name.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from courier.errors import ConfigError
from courier.model import TYPE_NAME_PATTERN, validate_bucket_width

MIB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: A DC's name: its JetStream domain, or ``dc.local_name``.
_DC_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class NatsSettings(_Section):
    """The embedded server and the client connection."""

    host: str = "127.0.0.1"
    port: int = 4222
    #: Store directory; default ``<data_dir>/_nats``.
    store_dir: Path | None = None
    max_payload_bytes: int = 8 * MIB
    connect_timeout_secs: float = 5.0
    #: Per-request timeout of JetStream API calls (info, KV, provisioning).
    request_timeout_secs: float = 5.0
    #: Disk all streams may use together: the embedded server's ``max_file_store``.
    #: None = 75 % of what the store could use (free disk plus what it already holds),
    #: resolved at each start. A full store refuses events (503), never drops them.
    store_max_bytes: int | None = Field(default=None, gt=0)
    #: Room in the store kept for Courier's own records (catalog, audit, schemas, close
    #: notifications): gateways refuse events (503) once the store holds
    #: store_max_bytes minus this (at most a quarter of it), so buckets keep closing.
    store_headroom_bytes: int = Field(default=256 * MIB, ge=0)
    stream_max_age_secs: int = 7 * 86_400
    #: Cap of one event type's stream. NATS reserves it against the store limit when
    #: the stream is created, so N types need N x this much; None = no per-stream cap
    #: (the streams share the store limit, and any number of types can register).
    stream_max_bytes: int | None = Field(default=None, gt=0)
    duplicate_window_secs: int = 120
    replicas: int = 1
    #: Several DCs (README "Several data centres"), for the embedded server of
    #: ``courier nats`` / ``courier up``: its JetStream domain (a DC's name, or the
    #: delivery region's); None = no domain (one place).
    domain: str | None = None
    #: The delivery region's server accepts the DCs' leaf node connections here
    #: (``host:port``), with ``no_advertise`` and ``isolate_leafnode_interest`` set.
    leaf_listen: str | None = None
    #: A DC's server connects to the delivery region's leaf listener at this URL
    #: (``nats-leaf://user:password@hub:7422``; ``tls://`` for TLS).
    leaf_remote_url: str | None = None
    #: Cores the embedded server (``courier up`` / ``courier nats``) runs Go code on at
    #: once: its ``GOMAXPROCS``. None = a ``GOMAXPROCS`` set in the environment, else
    #: half of this machine's cores, at least one: the embedded server shares the
    #: machine with the gateway, writer and closer (README "The embedded server's
    #: cores"; issue 13).
    max_procs: int | None = Field(default=None, ge=1)

    @field_validator("domain")
    @classmethod
    def _domain_is_a_name(cls, v: str | None) -> str | None:
        if v is not None and not _DC_NAME.match(v):
            raise ValueError(f"not a JetStream domain name: {v!r}")
        return v

    @field_validator("leaf_listen")
    @classmethod
    def _leaf_listen_is_host_port(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.:\[\]-]+:\d{1,5}", v):
            raise ValueError(f"leaf_listen must be host:port, got {v!r}")
        return v

    @field_validator("leaf_remote_url")
    @classmethod
    def _leaf_remote_is_a_url(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"(nats-leaf|tls|nats|ws|wss)://[^\s\"]+", v):
            raise ValueError(f"leaf_remote_url must be a nats-leaf:// (or tls://) URL, got {v!r}")
        return v


class GatewaySettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 4 * MIB
    max_events_per_batch: int = 10_000
    max_event_bytes: int = 256 * 1024
    max_json_depth: int = 32
    #: Upper bound of one stored message; several events travel in each.
    max_message_bytes: int = 1 * MIB
    #: Concurrent publishes in flight per event type (group commit pipelining).
    publishes_in_flight_per_type: int = 4
    publish_timeout_secs: float = 5.0
    retry_after_secs: int = 2
    #: How often the gateway reads how full the NATS store is (nats.store_headroom_bytes).
    store_check_interval_secs: float = Field(default=1.0, gt=0)
    #: How often the schema registry is re-read from KV.
    registry_refresh_secs: float = 2.0
    #: Deadline for receiving a whole request body; a slower (slow-loris) body gets 408.
    body_read_timeout_secs: float = 30.0
    #: Deadline for a request's line and headers (uvicorn has none); slower gets 408 + close.
    head_read_timeout_secs: float = Field(default=10.0, gt=0)
    #: An idle keep-alive connection is closed after this long (uvicorn ``timeout_keep_alive``).
    idle_timeout_secs: float = 5.0


class WriterSettings(_Section):
    #: Identifies this writer in staging file names; default ``<hostname>-<pid>``.
    writer_id: str | None = None
    fetch_batch_messages: int = 256
    #: Bytes one fetch may bring in (the batch adapts to the type's message size).
    fetch_max_bytes: int = 64 * MIB
    #: Fetches in flight across all types: with fetch_max_bytes, bounds unbuffered memory.
    max_concurrent_fetches: int = 2
    fetch_wait_secs: float = 0.5
    flush_interval_secs: float = 5.0
    flush_max_rows: int = 500_000
    flush_max_bytes: int = 128 * MIB
    #: Memory pressure: total buffered bytes across all types and buckets.
    max_buffer_bytes: int = 512 * MIB
    ack_wait_secs: float = 60.0
    max_ack_pending: int = 20_000
    max_deliveries: int = 5
    backoff_initial_secs: float = 0.5
    backoff_max_secs: float = 30.0
    registry_refresh_secs: float = 2.0
    #: Port of the writer's ``/metrics`` endpoint (0 = off).
    metrics_port: int = 9101


class CloserSettings(_Section):
    closer_id: str | None = None
    poll_interval_secs: float = 1.0
    #: A claim older than this is considered abandoned by a crashed closer.
    claim_lease_secs: float = 60.0
    #: Longest wait between close attempts of a type whose storage keeps failing
    #: (the wait starts at ``poll_interval_secs`` and doubles).
    backoff_max_secs: float = 30.0
    max_rows_per_file: int = 2_000_000
    target_file_bytes: int = 256 * MIB
    #: Rows per Parquet row group (and per chunk streamed through the closer).
    row_group_rows: int = 128 * 1024
    #: DuckDB's memory for deduplicating one bucket; beyond it, it spills to the scratch dir.
    memory_limit_bytes: int = 1024 * MIB
    threads: int = 2
    #: Grace for types whose settings do not give one.
    default_grace_secs: int = 10
    #: How far back a bucket's ids are checked against closed buckets (G2): a copy of an
    #: id (client retry, redelivery, replay) arriving up to this long after the bucket
    #: holding the first one closed is dropped. Never less than ``nats.stream_max_age_secs``.
    dedup_horizon_secs: int = Field(default=7 * 86_400, gt=0)
    #: Port of the closer's ``/metrics`` endpoint (0 = off).
    metrics_port: int = 9102


class AuditSettings(_Section):
    """The auditor, the ``courier audit`` report and the SLOs (DESIGN §10)."""

    fetch_batch_messages: int = 512
    fetch_wait_secs: float = 1.0
    #: How often the auditor re-checks recent buckets against the SLOs.
    check_interval_secs: float = 5.0
    #: How many recent buckets per type each check covers.
    check_buckets: int = 48
    #: How often each gateway adds its in-memory accepted/rejected counts to KV.
    gateway_flush_interval_secs: float = 2.0
    #: Longest time from a gateway receiving an event to the transport stamping it
    #: (publish timeout + clock skew): events received this close to a bucket's end
    #: may be stored in the next bucket, which the accepted-vs-stream check allows.
    spill_secs: float = 10.0
    #: Counts of buckets older than this are dropped from the audit KV.
    retention_secs: int = 35 * 86_400
    #: Timeliness SLO per tier: a bucket must be closed this long after its end.
    slo_high_close_delay_secs: float = 300.0
    slo_normal_close_delay_secs: float = 1800.0
    slo_low_close_delay_secs: float = 10_800.0
    #: Completeness SLO of ``finance`` types (percent of counted events delivered).
    slo_finance_completeness_percent: float = 100.0
    #: Skewness SLO of ``finance`` types: events moved into a bucket from a closed one.
    slo_finance_max_skewed_events: int = 0
    #: Port of the auditor's ``/metrics`` endpoint (0 = off).
    metrics_port: int = 9103

    def close_delay_slo_secs(self, tier: str) -> float:
        """The timeliness SLO of a tier (``high``, ``normal`` or ``low``)."""
        return {
            "high": self.slo_high_close_delay_secs,
            "normal": self.slo_normal_close_delay_secs,
            "low": self.slo_low_close_delay_secs,
        }[tier]


class TablesSettings(_Section):
    """Closed buckets as Apache Iceberg table commits (``courier.tables``).

    One table per event type, ``<namespace>.<Type>``; every closed bucket is one
    snapshot that adds its part files in place (no copy). The close never waits for
    the table: a catalog that is down delays the commit, with backoff, not the close.
    """

    #: Commit closed buckets to Iceberg tables.
    enabled: bool = True
    #: Where the catalog lives: None = an embedded SQLite catalog at
    #: ``<data_dir>/_iceberg/catalog.db``; ``sqlite:///…`` / ``postgresql://…`` = a SQL
    #: catalog (the tables of Iceberg's JDBC catalog); ``http(s)://…`` = a REST catalog.
    catalog_uri: str | None = None
    catalog_name: str = "courier"
    namespace: str = "courier"
    #: Where a SQL catalog writes table metadata; None = ``file://<data_dir>/_iceberg/warehouse``
    #: (a REST catalog gets it only when set). Data files stay where the closer wrote them.
    warehouse: str | None = None
    #: Extra catalog properties (REST credentials, S3 endpoint, ...), passed as given.
    catalog_properties: dict[str, str] = Field(default_factory=dict)
    #: Longest wait between commit attempts while the catalog keeps failing (starts at 1s).
    backoff_max_secs: float = Field(default=60.0, gt=0)
    #: Snapshots older than this are expired (metadata only; bucket files are never deleted).
    snapshot_retention_secs: int = Field(default=7 * 86_400, gt=0)
    #: At most this many snapshots are kept per table (one per committed bucket): pyiceberg
    #: copies the whole snapshot list several times per commit, so commits slow down as it
    #: grows (0.1 s with 10 snapshots, 0.4 s with 200 here). Time travel reaches this far.
    max_snapshots: int = Field(default=100, gt=0)
    #: How often the closer expires old snapshots of each table.
    expire_interval_secs: float = Field(default=3600.0, gt=0)
    #: How often the closer looks again for closed buckets its tables lack (besides at
    #: start): a re-close whose commit failed, a bucket another closer could not commit.
    catch_up_interval_secs: float = Field(default=600.0, gt=0)


_SHA256_HEX = r"^[0-9a-f]{64}$"
_TYPE_OR_ALL = rf"^(\*|{TYPE_NAME_PATTERN})$"


class ApiKeySettings(_Section):
    """One API key: its name (for logs and metrics), the SHA-256 of the key, what it may send.

    Make one with ``courier keys new --name N --types A,B``.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: Lowercase hex SHA-256 of the key; the key itself is never stored.
    sha256: str = Field(pattern=_SHA256_HEX)
    #: Event types the key may send; ``*`` = all.
    types: tuple[str, ...] = ("*",)
    #: This key's rate limit; None = the ``[auth]`` default.
    events_per_sec: float | None = Field(default=None, gt=0)
    burst_events: int | None = Field(default=None, gt=0)

    @field_validator("types")
    @classmethod
    def _types_are_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in v if not re.match(_TYPE_OR_ALL, t)]
        if bad:
            raise ValueError(f"not event type names (or *): {', '.join(map(repr, bad))}")
        return v


class AuthSettings(_Section):
    """API keys (DESIGN §8). No keys and no admin key = auth off (local demo only)."""

    keys: tuple[ApiKeySettings, ...] = ()
    #: Lowercase hex SHA-256 of the admin key (schema changes, repair, dashboard).
    admin_key_sha256: str | None = Field(default=None, pattern=_SHA256_HEX)
    #: Default per-key rate limit (token bucket refill); None = unlimited.
    events_per_sec: float | None = Field(default=None, gt=0)
    #: Default token bucket size: events a key may send at once after being idle.
    burst_events: int = Field(default=20_000, gt=0)

    @property
    def enabled(self) -> bool:
        return bool(self.keys) or self.admin_key_sha256 is not None

    @field_validator("keys")
    @classmethod
    def _names_and_hashes_unique(cls, v: tuple[ApiKeySettings, ...]) -> tuple[ApiKeySettings, ...]:
        for what, values in (("name", [k.name for k in v]), ("sha256", [k.sha256 for k in v])):
            dupes = sorted({x for x in values if values.count(x) > 1})
            if dupes:
                raise ValueError(f"API keys share a {what}: {', '.join(dupes)}")
        return v


class DashboardSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8090
    #: How often the page reloads its data.
    refresh_secs: float = 5.0
    #: Columns of the bucket grid (most recent buckets).
    buckets_shown: int = 24
    #: With [auth] keys configured: the page and its API need a key (any key, or only
    #: the admin key with "admin"); "off" leaves them open (bound to 127.0.0.1 by default).
    require_key: Literal["off", "any", "admin"] = "any"


_TYPE_NAME = r"^[A-Z][A-Za-z0-9_]{0,63}$"


class SegmentSettings(_Section):
    """The Segment-compatible routes (``/v1/batch``, ``/v1/track``, ...; gateway/segment/).

    In the environment, maps are JSON:
    ``COURIER_SEGMENT__TRACKING_PLAN='{"Song Played": "SongPlayed"}'``.
    """

    #: The tracking plan: a ``track`` call's ``event`` name -> the Courier event type
    #: whose schema validates its ``properties`` (e.g. "Song Played" -> SongPlayed).
    tracking_plan: dict[str, str] = Field(default_factory=dict)
    #: A ``track`` event whose name is not in the plan is either stored in the generic
    #: ``SegmentTrack`` type with its properties as JSON ("store"), or rejected into
    #: ``_invalid`` with the reason ("reject"). Never dropped.
    unplanned_track: Literal["store", "reject"] = "store"
    #: The same policy per API key name (``[[auth.keys]] name``), overriding the default.
    unplanned_track_by_key: dict[str, Literal["store", "reject"]] = Field(default_factory=dict)

    @field_validator("tracking_plan")
    @classmethod
    def _plan_names_types(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [t for t in v.values() if not re.match(_TYPE_NAME, t)]
        if bad:
            raise ValueError(f"not event type names: {', '.join(map(repr, bad))}")
        return v


class DcSettings(_Section):
    """Several data centres (DESIGN §13), as seen from the delivery region.

    With ``domains`` empty (the default) Courier runs in one place: each type's stream
    takes publishes on its subject. With domains listed, each type's stream in the
    delivery region has no subject of its own and *sources* the stream of the same
    name in every listed JetStream domain over the leaf node links; adding a DC is
    adding its domain here and running ``courier provision``.
    """

    #: JetStream domains of the DCs whose streams the delivery region sources. A DC's
    #: name in the ``received_dc`` column and in manifests is its domain.
    domains: tuple[str, ...] = ()
    #: The ``received_dc`` of events stored straight into this region's streams, not
    #: sourced from a DC (a single-DC deployment that names itself, so its buckets
    #: read like those of several DCs); None leaves ``received_dc`` null for them.
    local_name: str | None = None
    #: Direct client URLs of DC servers (domain -> URL), read when a DC's leaf link is
    #: down, so its progress shows how far behind it is; optional.
    nats_urls: dict[str, str] = Field(default_factory=dict)
    #: A source that has been silent this long while its DC answers is re-added, so it
    #: resumes now instead of after nats-server's own retry (30 s wait + backoff).
    nudge_after_secs: float = Field(default=3.0, gt=0)
    #: At most one nudge per source in this interval.
    nudge_interval_secs: float = Field(default=10.0, gt=0)
    #: How far back progress looks for a DC's newest sourced message.
    progress_scan_max_messages: int = Field(default=1_000_000, gt=0)
    #: The auditor alerts when a DC's events reach the delivery region later than this
    #: (the oldest one not transferred yet, or the transfer time of the newest one).
    max_transfer_delay_secs: float = Field(default=600.0, gt=0)

    @field_validator("domains")
    @classmethod
    def _domains_are_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [d for d in v if not _DC_NAME.match(d)]
        if bad:
            raise ValueError(f"not JetStream domain names: {', '.join(map(repr, bad))}")
        if len(set(v)) != len(v):
            raise ValueError("a DC domain is listed twice")
        return v

    @field_validator("local_name")
    @classmethod
    def _local_name_is_a_name(cls, v: str | None) -> str | None:
        if v is not None and not _DC_NAME.match(v):
            raise ValueError(f"not a DC name (letters, digits, _ and -, at most 64): {v!r}")
        return v


class Settings(BaseSettings):
    """All of a process's settings. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="COURIER_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    data_dir: Path = Path("courier-data")
    #: Where buckets, staging files, quarantine, ``_invalid`` and the id index live: a
    #: path or ``file://`` URL, ``s3://bucket/prefix`` or ``gs://bucket/prefix``
    #: (credentials and endpoints from the providers' usual environment and files).
    #: None = ``data_dir``. Every writer and closer of a deployment names the same store.
    store_url: str | None = None
    #: This process's own scratch directory (the closer's DuckDB spill files, local
    #: copies of store objects); never shared between processes of different machines.
    #: None = ``<data_dir>/_tmp``.
    scratch_dir: Path | None = None
    nats_url: str | None = None
    bucket_width_secs: int = 3600
    #: How far the clocks of the hosts may disagree; watermarks stay this far behind "now".
    max_clock_skew_secs: float = 2.0
    log_level: str = "INFO"
    #: Interface the writer, closer and auditor serve ``/metrics`` on.
    metrics_host: str = "127.0.0.1"
    nats: NatsSettings = Field(default_factory=NatsSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    writer: WriterSettings = Field(default_factory=WriterSettings)
    closer: CloserSettings = Field(default_factory=CloserSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    tables: TablesSettings = Field(default_factory=TablesSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    segment: SegmentSettings = Field(default_factory=SegmentSettings)
    dc: DcSettings = Field(default_factory=DcSettings)

    @field_validator("bucket_width_secs")
    @classmethod
    def _width_divides_a_day(cls, v: int) -> int:
        return validate_bucket_width(v)

    @model_validator(mode="after")
    def _horizon_covers_retention(self) -> Settings:
        if self.closer.dedup_horizon_secs < self.nats.stream_max_age_secs:
            raise ValueError(
                f"closer.dedup_horizon_secs ({self.closer.dedup_horizon_secs}) is shorter than "
                f"nats.stream_max_age_secs ({self.nats.stream_max_age_secs}): a redelivery or "
                "re-close of a retained message could deliver its events twice; raise the "
                "horizon to at least the retention"
            )
        return self

    @property
    def resolved_nats_url(self) -> str:
        return self.nats_url or f"nats://{self.nats.host}:{self.nats.port}"

    @property
    def resolved_store_url(self) -> str:
        """The bucket store: ``store_url``, or the path of ``data_dir``."""
        return self.store_url or str(self.data_dir)

    @property
    def resolved_scratch_dir(self) -> Path:
        return self.scratch_dir or self.data_dir / "_tmp"

    @property
    def nats_store_dir(self) -> Path:
        return self.nats.store_dir or self.data_dir / "_nats"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by ``COURIER_CONFIG`` (set by ``load_settings``)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("COURIER_CONFIG")
        if not path:
            return {}
        try:
            with open(path, "rb") as f:
                return tomllib.load(f)
        except FileNotFoundError as exc:
            raise ConfigError(f"settings file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"settings file {path} is not valid TOML: {exc}") from exc


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings of this process.

    ``config`` names a TOML file (else ``COURIER_CONFIG``); ``overrides`` are
    CLI flags, as nested dicts for sections (``writer={"flush_interval_secs": 1}``).
    None values in ``overrides`` are ignored so unset CLI flags do not mask others.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    old = os.environ.get("COURIER_CONFIG")
    if config is not None:
        os.environ["COURIER_CONFIG"] = str(config)
    try:
        # Init kwargs replace whole sections, so merge section overrides onto
        # what the environment and file say rather than passing them raw.
        if any(isinstance(v, dict) for v in overrides.values()):
            base = Settings().model_dump()
            overrides = _deep_merge(base, overrides)
        return Settings(**overrides)
    except ValidationError as exc:
        # Without the input values: a key pasted where its hash belongs must not be echoed.
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    finally:
        if config is not None:
            if old is None:
                os.environ.pop("COURIER_CONFIG", None)
            else:
                os.environ["COURIER_CONFIG"] = old


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``COURIER_*`` environment that reproduces ``settings`` in a child process."""
    env = {}
    for key, value in settings.model_dump(mode="json").items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if v is not None:
                    env[f"COURIER_{key.upper()}__{sub.upper()}"] = _env_value(v)
        elif value is not None:
            env[f"COURIER_{key.upper()}"] = _env_value(value)
    return env


def _env_value(value: Any) -> str:
    # pydantic-settings reads lists and tables (``[auth] keys``) from the environment
    # as JSON; str() would write a Python repr that does not parse back.
    return json.dumps(value) if isinstance(value, list | dict) else str(value)

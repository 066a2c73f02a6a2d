"""Idempotent provisioning and start-up verification of streams, consumers and KV buckets.

Streams and consumers are created only here (``courier schema apply`` and
``courier provision`` call it). Services call :func:`verify_type` at start and
refuse to run when the live configuration differs from what the settings ask
for, because nats-py silently keeps an existing durable consumer's old config.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from courier.errors import ProvisioningError, TransportError
from courier.settings import Settings
from courier.transport.client import Transport
from courier.transport.names import (
    AUDIT_CONSUMER,
    AUDIT_KV,
    CATALOG_KV,
    CLOSED_STREAM,
    REPAIRS_KV,
    SCHEMAS_KV,
    WRITER_CONSUMER,
    closed_subject,
    events_subject,
    stream_name,
)
from courier.transport.sources import provision_sources, verify_sources, with_dc_sources

log = logging.getLogger("courier.transport.provision")


@dataclass(frozen=True)
class _Spec:
    stream: StreamConfig
    consumers: tuple[ConsumerConfig, ...]


def _stream_config(settings: Settings, name: str, subjects: list[str]) -> StreamConfig:
    n = settings.nats
    return StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_age=float(n.stream_max_age_secs),
        max_bytes=-1 if n.stream_max_bytes is None else n.stream_max_bytes,
        duplicate_window=float(n.duplicate_window_secs),
        num_replicas=n.replicas,
        allow_direct=True,
    )


def consumer_spec(settings: Settings, event_type: str, durable: str) -> ConsumerConfig:
    """The configuration provisioning gives the ``durable`` consumer of ``event_type``."""
    for c in _spec(settings, event_type).consumers:
        if c.durable_name == durable:
            return c
    raise ValueError(f"no consumer {durable!r} is provisioned")


def _spec(settings: Settings, event_type: str) -> _Spec:
    w = settings.writer
    writer = ConsumerConfig(
        durable_name=WRITER_CONSUMER,
        deliver_policy=DeliverPolicy.ALL,
        # Explicit acks: AckPolicy.ALL would ack messages delivered to another writer.
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=float(w.ack_wait_secs),
        # Unlimited deliveries: the writer quarantines poison messages itself, so
        # the server never silently stops delivering a message (that would pin the
        # watermark forever).
        max_deliver=-1,
        max_ack_pending=w.max_ack_pending,
        filter_subject=events_subject(event_type),
    )
    audit = ConsumerConfig(
        durable_name=AUDIT_CONSUMER,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=60.0,
        max_deliver=-1,
        max_ack_pending=w.max_ack_pending,
        filter_subject=events_subject(event_type),
        # The auditor counts from the ``Courier-Events`` header: bodies are not sent.
        headers_only=True,
    )
    stream = _stream_config(settings, stream_name(event_type), [events_subject(event_type)])
    stream = with_dc_sources(settings, event_type, stream)  # several DCs: sources, no subject
    return _Spec(stream, (writer, audit))


_STREAM_FIELDS = (
    "subjects",
    "retention",
    "storage",
    "discard",
    "max_age",
    "max_bytes",
    "duplicate_window",
    "num_replicas",
)
#: Compared at start-up and by provisioning. Not deliver_policy/opt_start_*: where a
#: consumer starts is set at creation and moved by a repair; it is not drift.
CONSUMER_FIELDS = (
    "ack_policy",
    "ack_wait",
    "max_deliver",
    "max_ack_pending",
    "filter_subject",
    "headers_only",
)


def diff_config(want: object, have: object, fields: Iterable[str]) -> list[str]:
    """``field: live X, wanted Y`` for each of ``fields`` that differs (floats within 1 ms)."""
    out = []
    for f in fields:
        a, b = getattr(want, f), getattr(have, f)
        if isinstance(a, float) or isinstance(b, float):
            same = a is not None and b is not None and abs(float(a) - float(b)) < 1e-3
        else:
            same = a == b
        if not same:
            out.append(f"{f}: live {b!r}, wanted {a!r}")
    return out


async def _ensure_stream(transport: Transport, cfg: StreamConfig, *, update: bool) -> None:
    js = transport.js
    try:
        info = await js.stream_info(cfg.name or "")
    except nats.js.errors.NotFoundError:
        await js.add_stream(cfg)
        log.info("created stream %s", cfg.name)
        return
    problems = diff_config(cfg, info.config, _STREAM_FIELDS)
    if problems and update:
        await js.update_stream(cfg)
        log.info("updated stream %s: %s", cfg.name, "; ".join(problems))


async def _ensure_consumer(
    transport: Transport, stream: str, cfg: ConsumerConfig, *, update: bool
) -> None:
    js = transport.js
    try:
        info = await js.consumer_info(stream, cfg.durable_name or "")
    except nats.js.errors.NotFoundError:
        await js.add_consumer(stream, cfg)
        log.info("created consumer %s on %s", cfg.durable_name, stream)
        return
    problems = diff_config(cfg, info.config, CONSUMER_FIELDS)
    if problems and update:
        # add_consumer on an existing durable updates the mutable fields. The server
        # refuses a changed start, and a repaired consumer's start must stay: keep it.
        live = info.config
        cfg = cfg.evolve(
            deliver_policy=live.deliver_policy,
            opt_start_seq=live.opt_start_seq,
            opt_start_time=live.opt_start_time,
        )
        await js.add_consumer(stream, cfg)
        log.info("updated consumer %s on %s: %s", cfg.durable_name, stream, "; ".join(problems))


#: JetStream's answer to a stream whose ``max_bytes`` the store limit cannot reserve.
_STORE_CANNOT_RESERVE = 10047


async def provision_base(transport: Transport, settings: Settings) -> None:
    """KV buckets and the close-notification stream. Idempotent."""
    js = transport.js
    try:
        kvs = ((SCHEMAS_KV, 16), (CATALOG_KV, 4), (AUDIT_KV, 4), (REPAIRS_KV, 1))
        for bucket, history in kvs:
            try:
                await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                await js.create_key_value(
                    bucket=bucket,
                    history=history,
                    storage=StorageType.FILE,
                    replicas=settings.nats.replicas,
                )
                log.info("created KV bucket %s", bucket)
        await _ensure_stream(
            transport,
            _stream_config(settings, CLOSED_STREAM, [closed_subject("*")]),
            update=True,
        )
    except nats.js.errors.APIError as exc:
        if exc.err_code == _STORE_CANNOT_RESERVE:
            raise ProvisioningError(
                _cannot_reserve(settings, f"the close-notification stream {CLOSED_STREAM}")
            ) from exc
        raise ProvisioningError(f"provisioning base resources failed: {exc}") from exc
    except nats.errors.Error as exc:
        raise ProvisioningError(f"provisioning base resources failed: {exc}") from exc


async def provision_type(transport: Transport, settings: Settings, event_type: str) -> None:
    """Create or update the stream and durable consumers of one type. Idempotent."""
    spec = _spec(settings, event_type)
    try:
        await _ensure_stream(transport, spec.stream, update=True)
        await provision_sources(transport, settings, event_type)
        for c in spec.consumers:
            await _ensure_consumer(transport, spec.stream.name or "", c, update=True)
    except nats.js.errors.APIError as exc:
        if exc.err_code == _STORE_CANNOT_RESERVE:
            raise ProvisioningError(
                _cannot_reserve(settings, f"the stream of {event_type}")
            ) from exc
        raise ProvisioningError(f"provisioning {event_type} failed: {exc}") from exc
    except nats.errors.Error as exc:
        raise ProvisioningError(f"provisioning {event_type} failed: {exc}") from exc


def _cannot_reserve(settings: Settings, what: str) -> str:
    """What to do when the store limit cannot reserve the cap of ``what`` (a stream)."""
    cap = settings.nats.stream_max_bytes
    if cap is None:
        return (
            f"{what} cannot be created: streams created with a byte cap "
            "(max_bytes, reserved against the NATS store limit) already reserve all of it; "
            "lower their caps or raise the store limit (nats.store_max_bytes)"
        )
    return (
        f"{what} cannot be created: NATS reserves each stream's cap "
        f"(nats.stream_max_bytes = {cap} bytes) against its store limit, and less than that "
        "is left unreserved. Unset nats.stream_max_bytes to let the streams share the store "
        "limit, lower it, or raise nats.store_max_bytes; then run `courier provision`"
    )


async def verify_type(transport: Transport, settings: Settings, event_type: str) -> None:
    """Raise ProvisioningError unless the live stream and consumers match the settings."""
    spec = _spec(settings, event_type)
    js = transport.js
    name = spec.stream.name or ""
    problems: list[str] = []
    try:
        info = await js.stream_info(name)
        problems += [
            f"stream {name}: {p}" for p in diff_config(spec.stream, info.config, _STREAM_FIELDS)
        ]
        for c in spec.consumers:
            try:
                ci = await js.consumer_info(name, c.durable_name or "")
            except nats.js.errors.NotFoundError:
                problems.append(f"consumer {c.durable_name} on {name} is missing")
                continue
            problems += [
                f"consumer {c.durable_name} on {name}: {p}"
                for p in diff_config(c, ci.config, CONSUMER_FIELDS)
            ]
    except nats.js.errors.NotFoundError as exc:
        raise ProvisioningError(
            f"stream {name} for {event_type} does not exist; run `courier schema apply` "
            "or `courier provision`"
        ) from exc
    except nats.errors.Error as exc:
        raise TransportError(f"verifying {event_type}: {exc}") from exc
    await verify_sources(transport, settings, event_type)
    if problems:
        raise ProvisioningError(
            f"live JetStream config of {event_type} differs from the settings; refusing to run "
            "(run `courier provision` to apply the settings): " + "; ".join(problems)
        )

"""The auditor counts from the gateway's ``Courier-Events`` header on a headers-only
consumer; messages older than that header are still counted, from their stored body."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import zstandard
from audit_testing import audit_settings, open_audited_pipeline, start_auditor
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from courier.audit import AuditStore
from courier.audit.counter import body_left_out, header_count
from courier.errors import ProvisioningError
from courier.model import bucket_start
from courier.transport import (
    AUDIT_CONSUMER,
    AUDIT_KV,
    events_subject,
    provision_type,
    stream_name,
    verify_type,
)


@dataclass
class _Msg:
    seq: int = 1
    published_at: float = 0.0
    data: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def test_only_a_headers_only_delivery_without_a_count_header_needs_its_body():
    assert header_count({"Courier-Events": "100"}) == 100
    assert header_count({"Courier-Events": "x"}) is None
    assert header_count({"Courier-Events": "-1"}) is None
    assert not body_left_out(_Msg(headers={"Courier-Events": "3", "Nats-Msg-Size": "90"}))
    assert body_left_out(_Msg(headers={"Nats-Msg-Size": "90"}))
    assert not body_left_out(_Msg(headers={"Nats-Msg-Size": "0"}))
    assert not body_left_out(_Msg(data=b'{"id":"a"}\n', headers={}))


async def _wait_counted(store: AuditStore, last_seq: int) -> object:
    deadline = time.monotonic() + 15
    while True:
        counts, _ = await store.stream_counts("PlaySong")
        if counts.last_seq >= last_seq or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.1)


async def test_counts_come_from_the_header_and_older_messages_are_read_by_sequence(
    make_settings,
):
    p = await open_audited_pipeline(audit_settings(make_settings))
    try:
        width = p.settings.bucket_width_secs
        while (
            time.time() % width > width / 4
        ):  # from a bucket's first quarter: room on a busy machine
            await asyncio.sleep(0.05)
        start = bucket_start(time.time(), width)
        t = p.transport
        lines = b'{"id":"a"}\n{"id":"b"}\n{"id":"c"}\n'
        # The header is what is counted (the auditor never gets this body).
        await t.publish_events(
            "PlaySong", lines, msg_id="h1", headers={"Courier-Events": "5"}, timeout_secs=5
        )
        # Older data, without the header: plain and zstd bodies.
        await t.publish_events("PlaySong", lines, msg_id="o1", headers={}, timeout_secs=5)
        packed = zstandard.ZstdCompressor().compress(lines + b'{"id":"d"}\n')
        await t.publish_events(
            "PlaySong", packed, msg_id="o2", headers={"Content-Encoding": "zstd"}, timeout_secs=5
        )
        info = await t.js.consumer_info(stream_name("PlaySong"), AUDIT_CONSUMER)
        assert info.config.headers_only is True
        await start_auditor(p)
        counts = await _wait_counted(AuditStore(await t.key_value(AUDIT_KV)), 3)
        assert counts.last_seq == 3  # type: ignore[attr-defined]
        assert counts.events(start) == 5 + 3 + 4  # type: ignore[attr-defined]
    finally:
        await p.stop()
        await p.transport.close()


async def test_an_audit_consumer_provisioned_before_headers_only_is_refused_then_updated(
    make_settings,
):
    settings = make_settings()
    p = await open_audited_pipeline(audit_settings(make_settings))
    try:
        js = p.transport.js
        stream = stream_name("PlaySong")
        await js.delete_consumer(stream, AUDIT_CONSUMER)
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=AUDIT_CONSUMER,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=60.0,
                max_deliver=-1,
                max_ack_pending=settings.writer.max_ack_pending,
                filter_subject=events_subject("PlaySong"),
            ),
        )
        try:
            await verify_type(p.transport, p.settings, "PlaySong")
        except ProvisioningError as exc:
            assert "headers_only" in str(exc)
        else:
            raise AssertionError("a consumer without headers_only passed verification")
        await provision_type(p.transport, p.settings, "PlaySong")
        await verify_type(p.transport, p.settings, "PlaySong")
        info = await js.consumer_info(stream, AUDIT_CONSUMER)
        assert info.config.headers_only is True
    finally:
        await p.stop()
        await p.transport.close()

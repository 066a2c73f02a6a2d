"""Gateway counts meet stream counts: an acknowledged event missing from the stream is a loss,
and `courier audit` exits non-zero on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from audit_testing import audit_settings, open_audited_pipeline, start_auditor, wait_for_verdict

from courier.audit import AuditStore
from courier.gateway import create_app
from courier.model import bucket_start
from courier.transport import AUDIT_KV, stream_name
from courier_testing import settings_env

_COURIER = (sys.executable, "-m", "courier.cli.main")


def _range(start: int) -> list[str]:
    return ["--from", str(start), "--to", str(start + 1)]


def _batch(prefix: str, n: int, bad: int = 0) -> dict[str, object]:
    events: list[dict[str, object]] = [
        {"type": "PlaySong", "id": f"{prefix}{i}", "data": {"track_id": "t", "ms_played": i}}
        for i in range(n)
    ]
    events += [
        {"type": "PlaySong", "id": f"{prefix}bad{i}", "data": {"track_id": "t", "ms_played": "x"}}
        for i in range(bad)
    ]
    return {"events": events}


@contextlib.asynccontextmanager
async def _gateway(settings):
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        yield c


@pytest.fixture
async def audited(make_settings):
    p = await open_audited_pipeline(audit_settings(make_settings))
    try:
        yield p
    finally:
        await p.stop()
        await p.transport.close()


async def _post_in_one_bucket(p, client, batches) -> tuple[int, int]:
    width = p.settings.bucket_width_secs
    while time.time() % width > width / 4:  # from a bucket's first quarter: room on a busy machine
        await asyncio.sleep(0.05)
    start = bucket_start(time.time(), width)
    for b in batches:
        r = await client.post("/v1/events", json=b)
        assert r.status_code == 200, r.text
    _, last = await p.transport.stream_bounds("PlaySong")
    return start, last


async def test_gateways_count_accepted_and_rejected_events_per_bucket(audited):
    async with _gateway(audited.settings) as client:
        start, _ = await _post_in_one_bucket(audited, client, [_batch("a", 5, bad=2)])
    counts = await AuditStore(await audited.transport.key_value(AUDIT_KV)).gateway_counts(
        "PlaySong"
    )
    assert (counts.accepted(start), counts.rejected(start)) == (5, 2)
    invalid = await AuditStore(await audited.transport.key_value(AUDIT_KV)).gateway_counts(
        "_invalid"
    )
    assert invalid.accepted(start) == 2


async def test_an_acknowledged_event_deleted_from_the_stream_is_flagged_and_audit_exits_1(
    audited,
):
    async with _gateway(audited.settings) as client:
        start, last_seq = await _post_in_one_bucket(
            audited, client, [_batch("a", 3), _batch("b", 4)]
        )
        # Lost after the 200: the stream drops the last stored message before anyone reads it.
        await audited.transport.js.delete_msg(stream_name("PlaySong"), last_seq)
    await start_auditor(audited)
    audited.start_writer()
    await audited.start_closer()
    b = await wait_for_verdict(
        audited, "PlaySong", start, lambda b: b.closed and b.verdict == "mismatch"
    )
    assert [(p.kind, p.amount) for p in b.problems] == [("lost_in_stream", 4)]
    assert (b.accepted, b.in_stream, b.delivered) == (7, 3, 3)

    proc = await asyncio.to_thread(
        subprocess.run,
        [*_COURIER, "audit", "--json", "--type", "PlaySong", *_range(start)],
        env={**os.environ, **settings_env(audited.settings)},
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    (bucket,) = doc["buckets"]
    assert bucket["verdict"] == "mismatch"
    assert bucket["problems"][0]["kind"] == "lost_in_stream"

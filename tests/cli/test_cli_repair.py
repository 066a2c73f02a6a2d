"""``courier repair`` as a user runs it: CLI processes against a gateway process, real NATS.

The quarantine test runs the writer and the closer in-process: a message the
writer cannot decode is quarantined, the operator fixes the record, and
``courier repair replay-quarantine`` brings its events into a closed bucket
exactly once, also when an earlier replay was interrupted after the publish.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pyarrow.parquet as pq

from courier.model import BucketKey
from courier.service.auth import hash_key, new_key
from courier.settings import Settings, settings_env
from courier.storage import Layout
from courier.transport import free_port
from courier_testing import (
    FAST,
    Pipeline,
    courier_process,
    example_definitions,
    open_pipeline,
    stop_process,
    wait_answering,
)

ADMIN_KEY = new_key()


def _settings(make_settings: Callable[..., Settings], **writer: Any) -> Settings:
    return make_settings(
        writer={**FAST["writer"], **writer},
        closer=FAST["closer"],
        gateway={"port": free_port()},
        auth={"admin_key_sha256": hash_key(ADMIN_KEY)},
    )


@contextlib.asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[Pipeline]:
    """A provisioned pipeline and a gateway process; both stopped on exit."""
    pipeline = await open_pipeline(settings, example_definitions("PlaySong", "Search"))
    gateway = courier_process(settings, "gateway")
    try:
        await wait_answering(f"{_base(settings)}/readyz", gateway)
        yield pipeline
    finally:
        stop_process(gateway)
        await pipeline.stop()
        await pipeline.transport.close()


def _base(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.gateway.port}"


async def courier(
    settings: Settings, *args: str, key: str | None = ADMIN_KEY
) -> subprocess.CompletedProcess[str]:
    """Run ``courier ARGS`` (off the event loop, so in-process services keep running)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURIER_")}
    env.update(settings_env(settings))
    if key is not None:
        env["COURIER_API_KEY"] = key
    argv = [sys.executable, "-m", "courier.cli.main", *args]
    return await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60
    )


async def test_redeliver_and_list_from_the_command_line_with_clear_refusals(make_settings):
    settings = _settings(make_settings)
    async with stack(settings) as pipeline:
        for i in range(2):
            await pipeline.publish("PlaySong", [{"track_id": "t", "ms_played": i}], [f"e{i}"])

        ok = await courier(settings, "repair", "redeliver", "PlaySong", "--from-seq", "1")
        both = await courier(
            settings, "repair", "redeliver", "PlaySong", "--from-seq", "1", "--from-time", "0"
        )
        skip = await courier(settings, "repair", "redeliver", "PlaySong", "--from-seq", "9")
        nokey = await courier(settings, "repair", "list", key=None)
        listed = await courier(settings, "repair", "list", "--json")

    assert ok.returncode == 0, ok.stderr
    assert "redelivering PlaySong from seq 1: 2 messages" in ok.stdout
    assert both.returncode == 2 and "exactly one of --from-seq and --from-time" in both.stderr
    assert skip.returncode == 1 and "HTTP 409" in skip.stderr and "would skip" in skip.stderr
    assert nokey.returncode == 1 and "HTTP 401" in nokey.stderr
    records = json.loads(listed.stdout)
    assert [(r["outcome"], r["arguments"]) for r in records] == [
        ("refused", {"from_seq": 9}),
        ("done", {"from_seq": 1}),
    ]
    assert {r["principal"] for r in records} == {"admin"}


def _stored_body(pipeline: Pipeline, event_id: str) -> bytes:
    """One PlaySong event as the gateway stores it (NDJSON line)."""
    import datetime as dt

    import msgspec

    ct = pipeline.compiled["PlaySong"]
    event = msgspec.json.Decoder(ct.event_struct).decode(
        msgspec.json.encode(
            {"type": "PlaySong", "id": event_id, "data": {"track_id": "t", "ms_played": 5}}
        )
    )
    return ct.encode_stored([event], [event_id], None, dt.datetime.now(dt.UTC))


def _closed_ids(settings: Settings) -> Counter[str]:
    layout = Layout(settings.data_dir, settings.bucket_width_secs)
    ids: Counter[str] = Counter()
    for s in layout.closed_bucket_starts("PlaySong"):
        for part in layout.bucket_dir(BucketKey("PlaySong", s)).glob("part-*.parquet"):
            ids.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
    return ids


async def test_quarantined_messages_replayed_after_a_fix_land_once_and_are_filed_away(
    make_settings,
):
    settings = _settings(make_settings, max_deliveries=2)
    quarantine = settings.data_dir / "_quarantine" / "PlaySong"
    async with stack(settings) as pipeline:
        good = [f"g{i}" for i in range(5)]
        await pipeline.publish("PlaySong", [{"track_id": "t", "ms_played": 1}] * 5, good)
        fixed: dict[str, bytes] = {}
        for event_id in ("q1", "q2"):
            fixed[event_id] = _stored_body(pipeline, event_id)
            broken = fixed[event_id].replace(b'"ms_played":5', b'"ms_played":"five"')
            await pipeline.transport.publish_events(
                "PlaySong",
                broken,
                msg_id=f"broken-{event_id}",
                headers={"Courier-Schema-Version": "1"},
                timeout_secs=5,
            )
        pipeline.start_writer()
        await pipeline.start_closer()
        await pipeline.wait_until(lambda: len(list(quarantine.glob("*.json"))) == 2, 30)

        dry = await courier(settings, "repair", "replay-quarantine", "PlaySong", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "would replay seq 2" in dry.stdout and "would replay seq 3" in dry.stdout
        assert len(list(quarantine.glob("*.json"))) == 2  # a dry run changes nothing

        # The fix: the operator writes the corrected body into each record.
        records = sorted(quarantine.glob("*.json"))
        for path, event_id in zip(records, ("q1", "q2"), strict=True):
            doc = json.loads(path.read_text())
            doc["body_base64"] = base64.b64encode(fixed[event_id]).decode()
            path.write_text(json.dumps(doc))
        # An earlier replay of the first record published it, then crashed before the move.
        first = json.loads(records[0].read_text())
        request = {k: first[k] for k in ("stream_seq", "headers", "body_base64")}
        async with httpx.AsyncClient(base_url=_base(settings)) as client:
            r = await client.post(
                "/v1/admin/republish/PlaySong",
                json=request,
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
        assert r.status_code == 200 and r.json()["result"]["duplicate"] is False

        replay = await courier(settings, "repair", "replay-quarantine", "PlaySong")
        assert replay.returncode == 0, replay.stderr
        assert "replayed 1, already stored 1, refused 0, unreadable 0" in replay.stdout
        assert not list(quarantine.glob("*.json"))
        assert sorted(p.name for p in (quarantine / "_replayed").glob("*.json")) == [
            p.name for p in records
        ]

        replayed_at = time.time()
        width = settings.bucket_width_secs
        await pipeline.wait_until(
            lambda: pipeline.reader.manifest("PlaySong", replayed_at + width) is not None, 30
        )
        listed = await courier(settings, "repair", "list", "--json")

    assert _closed_ids(settings) == Counter([*good, "q1", "q2"])  # each exactly once
    republished = [r for r in json.loads(listed.stdout) if r["operation"] == "republish"]
    assert [r["result"]["duplicate"] for r in republished] == [False, True, False]
    assert [r["arguments"]["stream_seq"] for r in republished] == [3, 2, 2]


async def test_rejected_events_replayed_after_a_schema_fix_are_accepted_or_rejected_with_reasons(
    make_settings,
):
    from courier.model import INVALID_TYPE

    settings = _settings(make_settings)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def play(event_id: str, **data: Any) -> dict[str, Any]:
        return {"type": "PlaySong", "id": event_id, "data": {"track_id": "t", **data}}

    events = [
        play("ok1", ms_played=1),
        play("m1", ms_played=2, mood="happy"),  # unknown field until the fix
        play("m2", ms_played=3, mood="sad"),
        play("bad1", ms_played="x"),  # still wrong after the fix
        {"type": "Search", "id": "s1", "data": {"query": "q", "results": 1, "mood": "x"}},
    ]
    async with stack(settings) as pipeline, httpx.AsyncClient(base_url=_base(settings)) as http:
        started = time.time()
        r = await http.post("/v1/events", json={"events": events}, headers=admin)
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        stored = time.time()  # the rejects are in _invalid buckets up to this one
        pipeline.start_writer()
        await pipeline.start_closer()
        await pipeline.wait_until(
            lambda: pipeline.reader.manifest(INVALID_TYPE, stored) is not None, 30
        )
        # The fix: a new PlaySong version with the optional field.
        schema = example_definitions("PlaySong")[0].avro
        fields = [*schema["fields"], {"name": "mood", "type": ["null", "string"], "default": None}]
        put = await http.put(
            "/v1/schemas/PlaySong", json={"schema": {**schema, "fields": fields}}, headers=admin
        )
        assert put.status_code == 200 and put.json()["version"] == 2, put.text

        replay = await courier(
            settings,
            "repair",
            "replay-invalid",
            "--type",
            "PlaySong",
            "--from",
            str(started - 5),
            "--to",
            str(time.time()),
        )
        replayed_at = time.time()
        width = settings.bucket_width_secs
        await pipeline.wait_until(
            lambda: (
                pipeline.reader.manifest("PlaySong", replayed_at + width) is not None
                and pipeline.reader.manifest(INVALID_TYPE, replayed_at + width) is not None
            ),
            30,
        )
        listed = await courier(settings, "repair", "list", "--json")

    assert replay.returncode == 1, replay.stderr  # one event is still rejected
    assert "3 rejected events in _invalid" in replay.stdout
    assert "accepted 2, still rejected 1" in replay.stdout
    assert "ms_played" in replay.stdout
    assert _closed_ids(settings) == Counter(["ok1", "m1", "m2"])
    invalid = pipeline.reader.read(INVALID_TYPE, 0, time.time() + 10).to_pylist()
    assert Counter(r["id"] for r in invalid) == Counter({"bad1": 2, "m1": 1, "m2": 1, "s1": 1})
    [record] = [r for r in json.loads(listed.stdout) if r["operation"] == "resubmit"]
    assert record["counts"] == {"accepted": 2, "rejected": 1}
    assert record["arguments"]["events"] == 3 and record["event_type"] == "PlaySong"

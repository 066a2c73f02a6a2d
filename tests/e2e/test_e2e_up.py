"""End to end through `courier up`: HTTP in, closed buckets out, every acknowledged id once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest

from courier.model import bucket_start, uuid7
from courier.storage import BucketReader
from courier.transport import free_port
from courier_testing import eventually, wait_answering

WIDTH = 2
EVENTS = 100_000
PER_BATCH = 100


def _start_stack(data: Path, http_port: int, nats_port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "COURIER_CLOSER__DEFAULT_GRACE_SECS": "1",
            "COURIER_CLOSER__POLL_INTERVAL_SECS": "0.3",
            "COURIER_WRITER__FLUSH_INTERVAL_SECS": "0.5",
            "COURIER_WRITER__ACK_WAIT_SECS": "5",
            "COURIER_MAX_CLOCK_SKEW_SECS": "0.5",
        }
    )
    argv = [sys.executable, "-m", "courier.cli.main", "--data-dir", str(data)]
    argv += ["--bucket-width-secs", str(WIDTH), "up", "--demo"]
    argv += ["--http-port", str(http_port), "--nats-port", str(nats_port)]
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)


def _children(stack: subprocess.Popen[bytes], component: str) -> list[psutil.Process]:
    """The live processes of ``component`` under ``courier up`` (a killed one may linger)."""
    found = []
    for c in psutil.Process(stack.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):  # exited, or a zombie not yet reaped
            if component in c.cmdline() and c.status() != psutil.STATUS_ZOMBIE:
                found.append(c)
    return found


async def _wait_ready(base: str, stack: subprocess.Popen[bytes]) -> None:
    await wait_answering(f"{base}/readyz", stack, timeout_secs=60)


def _batch(rng: random.Random) -> list[dict[str, object]]:
    events = []
    for _ in range(PER_BATCH):
        events.append(
            {
                "type": "PlaySong",
                "id": uuid7(),
                "data": {
                    "track_id": f"t{rng.randrange(10_000)}",
                    "ms_played": rng.randrange(300_000),
                },
            }
        )
    # Duplicates inside a batch: a client that queued the same event twice.
    if rng.random() < 0.1:
        events[-1] = dict(events[0])
    return events


@pytest.mark.slow
async def test_100k_events_with_retries_and_a_writer_crash_arrive_exactly_once(tmp_path):
    data = tmp_path / "data"
    http_port, nats_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    stack = _start_stack(data, http_port, nats_port)
    acked: set[str] = set()
    rng = random.Random(7)
    batches = [_batch(rng) for _ in range(EVENTS // PER_BATCH)]
    queue: asyncio.Queue[list[dict[str, object]]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    retries = 0
    try:
        await _wait_ready(base, stack)

        async def sender(client: httpx.AsyncClient) -> None:
            nonlocal retries
            while not queue.empty():
                batch = queue.get_nowait()
                while True:
                    r = await client.post(f"{base}/v1/events", json={"events": batch})
                    if r.status_code == 200:
                        body = r.json()
                        assert body["rejected"] == [], body
                        acked.update(str(e["id"]) for e in batch)
                        break
                    assert r.status_code in (429, 503), r.text
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                # A client that timed out and retried although the gateway had stored it:
                # the same batch again, sometimes merged with fresh events.
                if rng.random() < 0.1:
                    retries += 1
                    again = batch + (_batch(rng)[:10] if rng.random() < 0.5 else [])
                    r = await client.post(f"{base}/v1/events", json={"events": again})
                    if r.status_code == 200:
                        acked.update(str(e["id"]) for e in again)

        async with httpx.AsyncClient(timeout=60) as client:
            senders = [asyncio.create_task(sender(client)) for _ in range(8)]
            # The writer dies mid-stream (a fifth of the events acknowledged, the rest
            # still to send); the supervisor restarts it.
            await eventually(
                lambda: len(acked) >= EVENTS // 5 or all(t.done() for t in senders),
                what="a fifth of the events acknowledged",
                timeout_secs=120,
            )
            acked_before_kill = len(acked)
            assert not queue.empty(), "sending was over before the writer was killed"
            (writer,) = _children(stack, "writer")
            writer.send_signal(signal.SIGKILL)
            await asyncio.gather(*senders)
            assert len(acked) > acked_before_kill, "nothing was acknowledged after the kill"
            await eventually(
                lambda: [c for c in _children(stack, "writer") if c.pid != writer.pid],
                what="the supervisor restarting the writer",
            )
        last_ack = time.time()
        reader = BucketReader(data, WIDTH)
        reader.wait_closed("PlaySong", bucket_start(last_ack, WIDTH), timeout_secs=120)

        table = reader.read("PlaySong", 0, last_ack + WIDTH)
        counts = Counter(table.column("id").to_pylist())
        duplicated = [i for i, n in counts.items() if n > 1]
        missing = acked - counts.keys()
        unknown = counts.keys() - acked
        assert not duplicated, f"{len(duplicated)} ids delivered more than once"
        assert not missing, f"{len(missing)} acknowledged ids lost"
        assert not unknown
        assert len(acked) >= EVENTS * 0.95 and retries > 0
        manifests = [reader.manifest("PlaySong", s.start) for s in reader.states("PlaySong")]
        assert sum(m.events for m in manifests if m) == table.num_rows
        assert sum(m.duplicates_dropped for m in manifests if m) > 0

        # The CLI reads the same closed data.
        env = {**os.environ}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "courier.cli.main",
                "--data-dir",
                str(data),
                "--bucket-width-secs",
                str(WIDTH),
                "sql",
                "select count(*) as n from PlaySong",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        assert str(table.num_rows) in out
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(30)
        except subprocess.TimeoutExpired:
            stack.kill()
            stack.wait()
    assert stack.returncode == 0
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(data) in " ".join(p.info["cmdline"] or [])
    ]
    assert not leftovers, "courier up left processes behind"

"""Pre-forked gateway workers (``gateway.workers`` > 1) as `courier gateway` runs them:
every worker serves the port, ``/metrics`` reports all of them whichever answers, and a
dead worker takes the whole process down so its supervisor restarts it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from courier.transport import free_port
from courier_testing import (
    courier_process,
    example_definitions,
    open_pipeline,
    stop_process,
    wait_answering,
)

WORKERS = 2
REQUESTS = 40
EVENTS_PER_REQUEST = 5


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:  # Linux; no procps needed
        return [int(p) for p in f.read().split()]


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            label = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{label}}}"] = s.value
    return out


async def _post(url: str, i: int) -> int:
    events = [
        {"type": "PlaySong", "id": f"w{i}-{j}", "data": {"track_id": "t", "ms_played": j}}
        for j in range(EVENTS_PER_REQUEST)
    ]
    async with httpx.AsyncClient() as client:  # a new connection per request
        r = await client.post(f"{url}/v1/events", json={"events": events})
    assert r.status_code == 200, r.text
    return int(r.json()["accepted"])


async def test_workers_share_the_port_and_report_their_metrics_together(make_settings, tmp_path):
    port = free_port()
    settings = make_settings(gateway={"port": port, "workers": WORKERS})
    p = await open_pipeline(settings, example_definitions("PlaySong"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = courier_process(settings, "gateway", env={"TMPDIR": str(scratch)})
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_answering(f"{url}/readyz", proc)
        workers = _children(proc.pid)
        assert len(workers) == WORKERS
        accepted = await asyncio.gather(*(_post(url, i) for i in range(REQUESTS)))
        assert sum(accepted) == REQUESTS * EVENTS_PER_REQUEST
        for _ in range(6):  # each scrape on a new connection, answered by either worker
            async with httpx.AsyncClient() as client:
                samples = _samples((await client.get(f"{url}/metrics")).text)
            assert samples["courier_gateway_workers{}"] == WORKERS
            total = samples["courier_gateway_events_accepted_total{type=PlaySong}"]
            assert total == REQUESTS * EVENTS_PER_REQUEST

        os.kill(workers[0], signal.SIGKILL)
        assert proc.wait(30) != 0  # the others were stopped; the process failed loudly
        for other in workers[1:]:
            assert not Path(f"/proc/{other}").exists(), "a worker outlived the gateway"
        assert list(scratch.iterdir()) == []  # the shared metrics directory is gone
    finally:
        stop_process(proc)
        await p.transport.close()


def test_a_single_worker_keeps_its_metrics_in_process(make_settings):
    from courier.gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    metrics.accept("PlaySong", 3)
    text = metrics.exposition().decode()
    assert 'courier_gateway_events_accepted_total{type="PlaySong"} 3.0' in text
    assert "courier_gateway_workers 1.0" in text
    assert not Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", "/nonexistent")).exists()

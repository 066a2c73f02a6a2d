"""`courier up` on a small disk: it says how much disk the streams may use, and starts."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from courier.transport import free_port
from courier_testing import stop_process, wait_answering

MIB = 1024 * 1024


async def test_courier_up_says_how_much_disk_the_streams_may_use_and_fits_a_small_store(
    tmp_path,
):
    # The demo's four streams at the old 10 GiB cap each could not be created in 256 MiB.
    data, out = tmp_path / "data", tmp_path / "up.out"
    http_port, nats_port, dashboard_port = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.update(
        {
            "COURIER_NATS__STORE_MAX_BYTES": str(256 * MIB),
            "COURIER_WRITER__METRICS_PORT": "0",
            "COURIER_CLOSER__METRICS_PORT": "0",
            "COURIER_AUDIT__METRICS_PORT": "0",
        }
    )
    argv = [sys.executable, "-m", "courier.cli.main", "--data-dir", str(data), "up", "--demo"]
    argv += ["--http-port", str(http_port), "--nats-port", str(nats_port)]
    argv += ["--dashboard-port", str(dashboard_port)]
    with out.open("wb") as stdout:
        stack = subprocess.Popen(argv, env=env, stdout=stdout, stdin=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{http_port}"
        await wait_answering(f"{base}/readyz", stack, timeout_secs=60)
        schema = {"type": "record", "name": "Foo", "fields": [{"name": "x", "type": "long"}]}
        async with httpx.AsyncClient() as client:
            r = await client.put(f"{base}/v1/schemas/Foo", json={"schema": schema})
        assert r.status_code == 200, r.text
    finally:
        stop_process(stack)
    said = out.read_text()
    assert (
        f"NATS store {(data / '_nats').resolve()}: the streams may use 256 MiB of disk "
        "(nats.store_max_bytes), shared by all event types (no cap per stream)"
    ) in said, said

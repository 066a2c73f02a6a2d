"""``courier send`` against a gateway process: the event is stored; bad input says why."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from courier.settings import settings_env
from courier.transport import free_port
from courier_testing import (
    courier_process,
    example_definitions,
    open_pipeline,
    stop_process,
    wait_answering,
)


def _send(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "courier.cli.main", "send", *args],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_courier_send_stores_one_event_and_explains_bad_json(make_settings):
    port = free_port()
    settings = make_settings(gateway={"port": port})
    p = await open_pipeline(settings, example_definitions("PlaySong"))
    gateway = courier_process(settings, "gateway")
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_answering(f"{url}/readyz", gateway)
        data = '{"track_id": "t1", "ms_played": 31500}'
        for option in ("--gateway-url", "--url"):  # --url: the older spelling still works
            done = await asyncio.to_thread(_send, settings, "PlaySong", data, option, url)
            assert done.returncode == 0, done.stderr
            assert '"accepted":1' in done.stdout
        default = await asyncio.to_thread(_send, settings, "PlaySong", data, "--id", "fixed")
        assert default.returncode == 0, default.stderr  # the URL from the settings
        bad = await asyncio.to_thread(_send, settings, "PlaySong", "{not json")
        assert bad.returncode == 2 and "DATA is not JSON" in bad.stderr
        assert await p.transport.stream_bounds("PlaySong") == (1, 3)
    finally:
        stop_process(gateway)
        await p.transport.close()

"""The tailer against a real gateway and nats-server: every line exactly once in closed buckets."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest

from courier.tailer import Tailer, TailerSettings
from courier.transport import free_port
from courier_testing import courier_process, stop_process
from producer_testing import closed_ids, http_gateway, wait_for


def _lines(start: int, stop: int) -> str:
    out = []
    for i in range(start, stop):
        doc: dict[str, object] = {"type": "PlaySong", "data": {"track_id": f"l{i}", "ms_played": i}}
        if i % 2:
            doc["id"] = f"line-{i}"  # half carry their own id, half get a derived one
        out.append(json.dumps(doc))
    return "\n".join(out) + "\n"


async def _write(path: Path, start: int, stop: int, step: int = 100) -> None:
    for i in range(start, stop, step):
        with open(path, "a") as f:
            f.write(_lines(i, min(i + step, stop)))
        await asyncio.sleep(0.01)


def _rotate(logs: Path, how: str, n: int) -> None:
    if how == "rename":
        os.rename(logs / "app.log", logs / f"app.log.{n}")
    else:
        shutil.copyfile(logs / "app.log", logs / f"app.log.{n}")
        os.truncate(logs / "app.log", 0)


@pytest.mark.parametrize(("how", "pattern"), [("rename", "app.log"), ("copytruncate", "app.log*")])
async def test_rotation_while_writing_delivers_every_line_exactly_once(
    pipeline, tmp_path, how, pattern
):
    logs = tmp_path / "logs"
    logs.mkdir()
    settings = TailerSettings(
        patterns=(str(logs / pattern),),
        state_dir=tmp_path / "state",
        glob_interval_secs=0.1,
        rotate_wait_secs=0.3,
    )
    async with http_gateway(pipeline) as url:
        tailer = Tailer(settings.model_copy(update={"gateway_url": url}))
        thread = threading.Thread(target=tailer.run)
        thread.start()
        try:
            # Rotate only once the tailer follows the file (it may not have read it all):
            # a file renamed away before the tailer ever saw it is out of its reach.
            await _write(logs / "app.log", 0, 1000)
            await wait_for(lambda: tailer.stats().lines_sent > 0, what="the first file followed")
            _rotate(logs, how, 1)
            await _write(logs / "app.log", 1000, 2000)
            await wait_for(
                lambda: tailer.stats().lines_sent > 1000, what="the second file followed"
            )
            _rotate(logs, how, 2)
            await _write(logs / "app.log", 2000, 3000)
            await wait_for(lambda: tailer.stats().lines_sent >= 3000, what="all lines sent")
        finally:
            tailer.stop.set()
            thread.join(30)
    assert tailer.stats().lines_rejected == 0
    counts = await closed_ids(pipeline, "PlaySong", column="track_id")
    assert counts.keys() == {f"l{i}" for i in range(3000)}
    assert set(counts.values()) == {1}


def _acknowledged_offset(state_dir: Path) -> int:
    try:
        doc = json.loads((state_dir / "positions.json").read_text())
    except (FileNotFoundError, ValueError):
        return 0
    return max((p["offset"] for p in doc["files"].values()), default=0)


async def test_kill_9_of_the_tailer_and_of_the_gateway_mid_file_loses_and_duplicates_nothing(
    pipeline, tmp_path
):
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    log_file = logs / "app.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = pipeline.settings

    def gateway():
        return courier_process(settings, "gateway", "--port", str(port))

    def tail():
        return courier_process(
            settings, "tail", str(logs / "*.log"), "--gateway-url", url, "--state-dir", str(state)
        )

    procs = {"gateway": gateway(), "tail": tail()}
    try:
        await _write(log_file, 0, 3000)
        await wait_for(lambda: _acknowledged_offset(state) > 0, what="a first checkpoint")
        procs["tail"].send_signal(signal.SIGKILL)
        procs["tail"].wait()
        await _write(log_file, 3000, 4000)
        procs["tail"] = tail()
        await _write(log_file, 4000, 5000)
        procs["gateway"].send_signal(signal.SIGKILL)
        procs["gateway"].wait()
        await _write(log_file, 5000, 6000)
        await asyncio.sleep(0.5)
        procs["gateway"] = gateway()
        size = log_file.stat().st_size
        await wait_for(lambda: _acknowledged_offset(state) == size, what="every line acknowledged")
    finally:
        for p in procs.values():
            stop_process(p)
    counts = await closed_ids(pipeline, "PlaySong", column="track_id")
    assert counts.keys() == {f"l{i}" for i in range(6000)}
    assert set(counts.values()) == {1}

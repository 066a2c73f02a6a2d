"""The tailer's Prometheus metrics: lines sent and rejected, files followed, bytes behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from courier.sdk import MemoryDeliverer
from courier.tailer import Tailer, TailerCollector, TailerSettings
from courier.transport import free_port


def _tailer(tmp_path: Path, **kw) -> Tailer:
    settings = TailerSettings(
        patterns=(str(tmp_path / "logs" / "*.log"),),
        state_dir=tmp_path / "state",
        glob_interval_secs=0,
        checkpoint_interval_secs=0,
        **kw,
    )
    return Tailer(settings, deliverer=MemoryDeliverer())


def _value(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name, {"tailer": "default"})


def test_the_metrics_say_how_many_lines_went_and_how_many_bytes_are_still_behind(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [
        json.dumps({"type": "PlaySong", "id": f"i{i}", "data": {"track_id": "t", "ms_played": i}})
        for i in range(5)
    ]
    (logs / "a.log").write_text("\n".join([*lines[:3], "not json", ""]))
    t = _tailer(tmp_path)
    registry = CollectorRegistry()
    registry.register(TailerCollector(t))
    t.run_once()  # follows the file, sends what is there
    assert _value(registry, "courier_tailer_files_open") == 1
    assert _value(registry, "courier_tailer_lines_sent_total") == 3
    assert _value(registry, "courier_tailer_lines_rejected_total") == 1
    assert _value(registry, "courier_tailer_unacked_bytes") == 0
    more = "\n".join([*lines[3:], ""]).encode()
    with open(logs / "a.log", "ab") as f:  # written, not yet sent: the tailer is behind
        f.write(more)
    assert _value(registry, "courier_tailer_unacked_bytes") == len(more)
    t.run_once()
    assert _value(registry, "courier_tailer_lines_sent_total") == 5
    assert _value(registry, "courier_tailer_unacked_bytes") == 0
    t.close()


def test_courier_tail_serves_its_metrics_while_the_gateway_is_unreachable(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    content = b'{"type": "PlaySong", "id": "x1", "data": {"track_id": "t", "ms_played": 1}}\n'
    (logs / "a.log").write_bytes(content)
    port, nowhere = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "courier.cli.main",
            "--data-dir",
            str(tmp_path / "data"),
            "tail",
            str(logs / "*.log"),
            "--gateway-url",
            f"http://127.0.0.1:{nowhere}",
            "--metrics-port",
            str(port),
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "courier tail exited"
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                if 'courier_tailer_files_open{tailer="default"} 1.0' in text:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no metrics from courier tail"
            time.sleep(0.1)
        assert f'courier_tailer_unacked_bytes{{tailer="default"}} {float(len(content))}' in text
        assert 'courier_tailer_lines_sent_total{tailer="default"} 0.0' in text
    finally:
        proc.terminate()
        proc.wait(15)

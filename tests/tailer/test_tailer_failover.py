"""The tailer takes several gateway URLs and fails over between them (one retry policy)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from courier.tailer import Tailer, TailerSettings
from fake_gateways import FakeGateway


def test_the_tailer_fails_over_to_the_second_gateway_when_the_first_is_down(tmp_path: Path):
    a, b = FakeGateway().start(), FakeGateway().start()
    logs = tmp_path / "logs"
    logs.mkdir()
    a.stop()  # DC-A's gateway is down from the start
    settings = TailerSettings(
        patterns=(str(logs / "app.log"),),
        state_dir=tmp_path / "state",
        gateway_url=f"{a.url},{b.url}",
        backoff_initial_secs=0.01,
        backoff_max_secs=0.05,
        glob_interval_secs=0.1,
    )
    tailer = Tailer(settings)
    thread = threading.Thread(target=tailer.run)
    thread.start()
    try:
        with open(logs / "app.log", "a") as f:
            for i in range(100):
                f.write(json.dumps({"type": "PlaySong", "id": f"l{i}", "data": {}}) + "\n")
        deadline = time.monotonic() + 30
        while len(set(b.ids)) < 100:
            assert time.monotonic() < deadline, f"only {len(set(b.ids))} lines reached DC-B"
            time.sleep(0.05)
    finally:
        tailer.stop.set()
        thread.join(30)
        b.stop()
    assert set(b.ids) == {f"l{i}" for i in range(100)}

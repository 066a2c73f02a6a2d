"""Tailer lines/s into a local stack (``courier up --demo`` on free ports).

    .venv/bin/python -m bench.tailer_rate [--lines 200000]

Writes ``--lines`` JSON lines (half with their own id, half without) to a file,
then times one in-process tailer from the first line to the last position
acknowledged by the gateway. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from bench._report import emit
from bench.sdk_send import courier_up
from courier.tailer import Tailer, TailerSettings


def _write(path: Path, lines: int) -> int:
    with open(path, "w") as f:
        for i in range(lines):
            doc: dict[str, object] = {
                "type": "PlaySong",
                "data": {"track_id": f"t-{i:08d}", "ms_played": i, "tags": ["a"], "shuffle": True},
            }
            if i % 2:
                doc["id"] = f"bench-{i}"
            f.write(json.dumps(doc) + "\n")
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--timeout-secs", type=float, default=30.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="courier-bench-tail-") as tmp:
        root = Path(tmp)
        size = _write(root / "app.log", args.lines)
        with courier_up(root) as url:
            settings = TailerSettings(
                patterns=(str(root / "*.log"),), state_dir=root / "state", gateway_url=url
            )
            tailer = Tailer(settings)
            thread = threading.Thread(target=tailer.run)
            started = time.perf_counter()
            thread.start()
            deadline = time.monotonic() + args.timeout_secs
            while tailer.stats().lines_sent < args.lines and time.monotonic() < deadline:
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
            sent = tailer.stats().lines_sent
            tailer.stop.set()
            thread.join(30)
    emit(
        "Tailer into a local stack",
        {
            "lines": args.lines,
            "lines_acknowledged": sent,
            "file_bytes": size,
            "secs": round(elapsed, 2),
            "lines_per_sec": round(sent / elapsed),
            "mib_per_sec": round(size * sent / args.lines / elapsed / 2**20, 1),
        },
    )


if __name__ == "__main__":
    main()

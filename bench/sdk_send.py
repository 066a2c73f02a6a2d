"""SDK ``send`` rate per durability policy: spool only, and end to end into a local stack.

    .venv/bin/python -m bench.sdk_send [--events 100000] [--skip-e2e]

"spool only" points the producer at a closed port, so ``send`` measures the
spool alone (the sender thread backs off). "end to end" runs ``courier up
--demo`` on free ports and times ``send`` of every event plus ``flush`` (all
acknowledged by the gateway, i.e. fsynced in JetStream); it also reports
``send`` alone meanwhile (its rate, p99 and worst latency), which shows stalls
behind the acknowledgements. ``always`` uses four
sending threads so group commit shows. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench._report import emit
from courier.sdk import Producer
from courier.transport import free_port

_DATA = {"track_id": "t-000123", "ms_played": 31500, "tags": ["a", "b"], "shuffle": True}


@contextlib.contextmanager
def courier_up(root: Path, timeout_secs: float = 60.0) -> Iterator[str]:
    """``courier up --demo`` on free ports under ``root``; yields the gateway URL."""
    http_port, nats_port = free_port(), free_port()
    log = open(root / "courier-up.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "courier.cli.main", "--data-dir", str(root / "data"), "up",
         "--demo", "--http-port", str(http_port), "--nats-port", str(nats_port)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "COURIER_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + timeout_secs
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"courier up did not become ready; see {root}/courier-up.log")
            with contextlib.suppress(httpx.HTTPError):
                ok = httpx.get(f"{url}/readyz", timeout=2).status_code == 200
                probe = {"events": [{"type": "PlaySong", "id": "probe", "data": _DATA}]}
                if ok and httpx.post(f"{url}/v1/events", json=probe).json().get("accepted"):
                    break
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@dataclass
class _Run:
    """Events/s including ``flush`` (when asked), of ``send`` alone, and ``send`` latencies."""

    rate: float
    send_rate: float
    send_p99_ms: float
    send_max_ms: float


def _send_rate(spool: Path, url: str, policy: str, events: int, threads: int, flush: bool) -> _Run:
    p = Producer(spool_dir=spool, gateway_url=url, fsync=policy, backoff_initial_secs=1.0)
    per_thread = events // threads
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def work(mine: list[float]) -> None:
        clock = time.perf_counter
        for _ in range(per_thread):
            t0 = clock()
            p.send("PlaySong", _DATA)
            mine.append(clock() - t0)

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(latencies[i],)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    sent = time.perf_counter() - started
    if flush and not p.flush(120):
        raise RuntimeError("the spool did not drain in 120 s")
    elapsed = time.perf_counter() - started
    p.close(timeout=0)
    each = sorted(x for mine in latencies for x in mine)
    n = per_thread * threads
    return _Run(
        rate=n / elapsed,
        send_rate=n / sent,
        send_p99_ms=each[int(len(each) * 0.99)] * 1000,
        send_max_ms=each[-1] * 1000,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--always-events", type=int, default=4_000)
    ap.add_argument("--skip-e2e", action="store_true")
    args = ap.parse_args()
    summary: dict[str, object] = {"events": args.events}
    with tempfile.TemporaryDirectory(prefix="courier-bench-sdk-") as tmp:
        root = Path(tmp)
        closed = f"http://127.0.0.1:{free_port()}"
        for policy in ("never", "interval", "always"):
            n, threads = (args.always_events, 4) if policy == "always" else (args.events, 1)
            run = _send_rate(root / f"spool-{policy}", closed, policy, n, threads, flush=False)
            summary[f"spool_only_{policy}_events_per_sec"] = round(run.rate)
        if not args.skip_e2e:
            with courier_up(root) as url:
                run = _send_rate(root / "spool-e2e", url, "interval", args.events, 1, flush=True)
                summary["e2e_interval_events_per_sec"] = round(run.rate)
                # send alone, while the sender thread posts and acknowledges batches
                summary["e2e_interval_send_only_events_per_sec"] = round(run.send_rate)
                summary["e2e_interval_send_p99_ms"] = round(run.send_p99_ms, 3)
                summary["e2e_interval_send_max_ms"] = round(run.send_max_ms, 1)
    emit("SDK send rate (events/s)", summary)


if __name__ == "__main__":
    main()

"""The gateway alone against NATS (no writer, no closer).

1. an embedded NATS (``sync_interval: always``) with the types provisioned;
2. ``courier gateway`` as a child process;
3. closed loop at maximum for half of ``--duration``, then open loop at half
   that rate for the other half (the p99 target of DESIGN §11 is "at half the
   rate");
4. read every stored message back through the ``audit`` consumer and compare
   the stored ids with the ledger: ``lost`` (acked, not in the stream) and
   ``duplicated`` (in the stream more than once; the closer would drop them).

``python -m bench.gateway --duration 30``
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
import numpy as np

from bench._nats import bench_settings, provision
from bench._report import emit
from bench._stack import RssSampler, component_process
from bench.loadgen import LoadConfig, id_key, read_ledger, run_load
from bench.loadgen.ledger import KEY_DTYPE
from courier.transport import EmbeddedNats, Transport, free_port


class _Line(msgspec.Struct):
    id: str


async def stored_keys(nats_url: str, types: list[str]) -> np.ndarray:
    """Keys of every event stored in the types' streams (a scan: the audit consumer
    gets headers only)."""
    dec = msgspec.json.Decoder(_Line)
    transport = await Transport.connect(nats_url)
    keys: list[bytes] = []
    try:
        for t in types:
            first, last = await transport.stream_bounds(t)
            if not last:
                continue
            async for m in transport.scan(t, first, last):
                keys.extend(id_key(dec.decode(line).id) for line in m.data.splitlines())
    finally:
        await transport.close()
    return np.array(keys, dtype=KEY_DTYPE)


def _wait_ready(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout_secs: float = 60
) -> None:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"courier gateway exited at start:\n{tail}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("courier gateway never became ready")


def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="courier-bench-gw-") as tmp:
        root = Path(tmp)
        with EmbeddedNats(root / "nats", port=0) as server:
            settings = bench_settings(root, server.url, gateway={"port": free_port()})
            names = asyncio.run(provision(settings, root, args.types))
            url = f"http://127.0.0.1:{settings.gateway.port}"
            with component_process("gateway", settings, root / "gateway.log", stop_secs=15) as proc:
                _wait_ready(url, proc, root / "gateway.log")
                time.sleep(0.5)  # the registry snapshot is loaded before ready
                common = {
                    "url": url,
                    "batch_events": args.batch_events,
                    "event_bytes": args.event_bytes,
                    "types": args.types,
                    "concurrency": args.concurrency,
                    "processes": args.processes,
                    "ledger_dir": root / "ledger",
                }
                with RssSampler(proc.pid) as rss:
                    full = run_load(LoadConfig(duration_secs=args.duration / 2, **common))  # type: ignore[arg-type]
                    half_rate = max(100.0, full.events_per_s / 2)
                    half = run_load(
                        LoadConfig(
                            duration_secs=args.duration / 2,
                            rate_events_per_s=half_rate,
                            **common,  # type: ignore[arg-type]
                        )
                    )
            stored = asyncio.run(stored_keys(server.url, names))
        ledger = read_ledger(root / "ledger")
    distinct, counts = np.unique(stored, return_counts=True)
    lost = len(np.setdiff1d(ledger.acked, distinct, assume_unique=True))
    return {
        "gateway_events_per_s": round(full.events_per_s, 1),
        "gateway_p50_ms": round(full.percentile_ms(50), 3),
        "gateway_p99_ms": round(full.percentile_ms(99), 3),
        "half_rate_events_per_s": round(half.events_per_s, 1),
        "half_rate_p50_ms": round(half.percentile_ms(50), 3),
        "half_rate_p99_ms": round(half.percentile_ms(99), 3),
        "half_rate_skipped_batches": half.skipped_batches,
        "gateway_rss_mib": round(rss.peak_mib.get("gateway", 0.0), 1),
        "acked_events": full.acked_events + half.acked_events,
        "stored_events": len(stored),
        "lost": lost,
        "duplicated": int((counts > 1).sum()),
        "http_errors": sum(full.errors.values()) + sum(half.errors.values()),
        "concurrency": args.concurrency,
        "processes": args.processes,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--types", type=int, default=3)
    p.add_argument("--batch-events", type=int, default=100)
    p.add_argument("--event-bytes", type=int, default=360)
    emit("gateway alone", run(p.parse_args(argv)))


if __name__ == "__main__":
    main()

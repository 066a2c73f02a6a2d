"""The writer alone, draining a pre-filled stream.

1. an embedded NATS (``sync_interval: always``) with PlaySong provisioned;
2. fill its stream with gateway-style messages (``--events-per-message``
   events of ≈``--event-bytes``) for ``--duration`` seconds or ``--events``
   events, whichever comes first;
3. start ``courier writer`` as a child process and time until its consumer's
   ack floor reaches the last message; peak RSS sampled meanwhile; its CPU
   (``/proc``, threads and children included) from its first fetch to the
   last ack, per million rows (start-up imports left out);
4. read the staging files: ``lost`` = published ids not staged, ``duplicated``
   = ids staged more than once (a redelivery would cause some; none expected).

``python -m bench.writer --duration 30``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench._cpu import cpu_between, cpu_snapshot
from bench._data import compiled_example, stored_bodies
from bench._nats import bench_settings, provision, watch_consumer
from bench._report import emit
from bench._stack import RssSampler, component_process
from courier.gateway import EVENTS_HEADER, SCHEMA_VERSION_HEADER
from courier.transport import WRITER_CONSUMER, EmbeddedNats, Transport

TYPE = "PlaySong"


def fresh_prefix(prefix: str, rnd: int) -> str:
    """The id prefix of round ``rnd`` (>= 1) over the message templates: the 14 random bits
    after the UUID variant XOR ``rnd``, so that no round repeats another's ids or round 0's.
    (Writing ``rnd`` over those bits repeated round 0's ids whenever the random bits were
    below the round count: then ``lost`` and ``duplicated`` both read 6,400 with nothing
    wrong in the writer.)"""
    if not 0 < rnd < 1 << 14:
        raise ValueError(f"round {rnd} is out of 1..16383: fewer events or more templates")
    group = int(prefix[19:23], 16)
    return f"{prefix[:19]}{(group & 0xC000) | ((group ^ rnd) & 0x3FFF):04x}-"


async def fill(
    nats_url: str, max_events: int, duration_secs: float, per_message: int, event_bytes: int
) -> tuple[int, int, float]:
    """Publish messages until either limit; returns (events, last seq, seconds)."""
    compiled = compiled_example(TYPE)
    bodies = stored_bodies(compiled, 64, per_message, event_bytes)
    transport = await Transport.connect(nats_url)
    events = 0
    last_seq = 0
    i = 0
    run = time.time_ns()
    started = time.monotonic()
    end = started + duration_secs
    try:

        async def worker(w: int) -> None:
            nonlocal events, last_seq, i
            while events < max_events and time.monotonic() < end:
                n = i
                i += 1
                body, ids = bodies[n % len(bodies)]
                rnd = n // len(bodies)
                if rnd:  # fresh ids: a new id prefix per round over the templates
                    prefix = ids[0][:24]
                    body = body.replace(prefix.encode(), fresh_prefix(prefix, rnd).encode())
                res = await transport.publish_events(
                    TYPE,
                    body,
                    msg_id=f"bench-{run}-{n}",
                    headers={SCHEMA_VERSION_HEADER: "1", EVENTS_HEADER: str(len(ids))},
                    timeout_secs=30,
                )
                events += len(ids)
                last_seq = max(last_seq, res.seq)

        await asyncio.gather(*(worker(w) for w in range(32)))
    finally:
        await transport.close()
    return events, last_seq, time.monotonic() - started


@dataclass
class _Drain:
    secs: float = 0.0
    #: Ack floor when the CPU count started, and the writer's core-seconds since.
    first_floor_seq: int = 0
    core_secs: float = 0.0
    #: The part of ``core_secs`` spent in the kernel (the writer process's own stime),
    #: and the writer's minor page faults meanwhile (fresh memory the kernel zeroes).
    sys_secs: float = 0.0
    minor_faults: int = 0


def _kernel_stats(pid: int) -> tuple[float, int]:
    """Kernel CPU seconds and minor page faults of process ``pid`` (``/proc/<pid>/stat``)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # fields[N - 3] is field N
    return int(fields[12]) / os.sysconf("SC_CLK_TCK"), int(fields[7])


async def wait_drained(
    nats_url: str, last_seq: int, timeout_secs: float, proc: subprocess.Popen[bytes]
) -> _Drain:
    transport = await Transport.connect(nats_url)
    out = _Drain()
    cpu_start: dict[str, float] = {}
    kernel_start = (0.0, 0)
    try:
        async for phase, progress, secs in watch_consumer(
            transport, TYPE, WRITER_CONSUMER, last_seq, timeout_secs, proc
        ):
            if phase == "started":
                cpu_start = cpu_snapshot(proc.pid)
                kernel_start = _kernel_stats(proc.pid)
                out.first_floor_seq = progress.ack_floor_seq
            else:
                out.secs = secs
                out.core_secs = sum(cpu_between(cpu_start, cpu_snapshot(proc.pid)).values())
                sys_secs, faults = _kernel_stats(proc.pid)
                out.sys_secs = sys_secs - kernel_start[0]
                out.minor_faults = faults - kernel_start[1]
    finally:
        await transport.close()
    return out


def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="courier-bench-writer-") as tmp:
        root = Path(tmp)
        with EmbeddedNats(root / "nats", port=0) as server:
            settings = bench_settings(root, server.url)
            asyncio.run(provision(settings, root, 1))
            events, last_seq, fill_secs = asyncio.run(
                fill(
                    server.url,
                    args.events,
                    args.duration,
                    args.events_per_message,
                    args.event_bytes,
                )
            )
            with (
                component_process("writer", settings, root / "writer.log") as proc,
                RssSampler(proc.pid, 0.2) as rss,
            ):
                drain = asyncio.run(wait_drained(server.url, last_seq, 300, proc))
        files = sorted((root / "data" / "_staging" / TYPE).rglob("*.parquet"))
        ids = [pq.read_table(f, columns=["id"]).column("id") for f in files]
        staged = sum(len(c) for c in ids)
        distinct = (
            len(pc.unique(pa.chunked_array([ch for c in ids for ch in c.chunks]))) if ids else 0
        )
        staged_mb = sum(f.stat().st_size for f in files) / 1e6
    drain_secs = drain.secs
    counted_rows = (last_seq - drain.first_floor_seq) * args.events_per_message
    return {
        "writer_events_per_s": round(events / drain_secs, 1),
        "writer_messages_per_s": round(last_seq / drain_secs, 1),
        "drain_secs": round(drain_secs, 3),
        "writer_core_s_per_m_rows": (
            round(drain.core_secs / counted_rows * 1e6, 3) if counted_rows else None
        ),
        "writer_sys_share": round(drain.sys_secs / drain.core_secs, 3) if drain.core_secs else None,
        "writer_minor_faults_per_m_rows": (
            round(drain.minor_faults / counted_rows * 1e6) if counted_rows else None
        ),
        "cpu_counted_rows": counted_rows,
        "events": events,
        "fill_events_per_s": round(events / fill_secs, 1),
        "staging_files": len(files),
        "staging_mb": round(staged_mb, 1),
        "writer_rss_mib": round(rss.peak_mib.get("writer", 0.0), 1),
        "lost": events - distinct,
        "duplicated": staged - distinct,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.writer", description=__doc__)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of filling at most")
    p.add_argument("--events", type=int, default=4_000_000, help="events to fill at most")
    p.add_argument("--events-per-message", type=int, default=100)
    p.add_argument("--event-bytes", type=int, default=360)
    emit("writer alone", run(p.parse_args(argv)))


if __name__ == "__main__":
    main()

"""Drive the gateway: open loop at a target rate or closed loop at maximum, in P processes.

Each process runs one asyncio loop (uvloop) with a pool of keep-alive
connections (:mod:`bench.loadgen.http`). Per request:

1. build a batch (one type, chosen by weight) with fresh ids;
2. POST it; on 429/503/connection errors, retry the same body (same ids)
   after ``Retry-After`` until the retry budget is spent;
3. on 2xx, append the batch's keys to the ledger (before anything else can
   happen to the process), then count it; with ``duplicate_rate`` > 0, post
   the same batch again as a client whose ack got lost would;
4. when the budget is spent, record the ids as outcome-unknown.

Latency is measured per request on the client: in open loop from the moment
the batch was due (so queueing behind a slow gateway counts: no coordinated
omission), in closed loop from the moment it was sent.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from bench.loadgen.events import Batch, BatchFactory
from bench.loadgen.http import HttpConnectionError, HttpPool
from bench.loadgen.ledger import Ledger


@dataclass(frozen=True)
class LoadConfig:
    """What to send. ``rate_events_per_s=None`` means closed loop (as fast as acked)."""

    url: str
    duration_secs: float = 10.0
    rate_events_per_s: float | None = None
    batch_events: int = 100
    event_bytes: int = 360
    types: int = 3
    skew: float = 0.0
    #: Requests in flight (connections), over all processes.
    concurrency: int = 32
    processes: int = 1
    #: Probability that an acked batch is posted again (same ids): a retried request.
    duplicate_rate: float = 0.0
    ledger_dir: Path | None = None
    #: Prefix of this run's ledger writer names: two loads in one process (one per DC)
    #: must not share a ledger file.
    ledger_prefix: str = ""
    fsync_every_batch: bool = False
    #: Stop early after this many events were acked (smoke tests).
    max_events: int | None = None
    request_timeout_secs: float = 30.0
    #: How long one batch keeps being retried before its outcome is "unknown".
    retry_budget_secs: float = 60.0
    seed: int | None = None


@dataclass
class LoadResult:
    """Counts and client-side latencies of a run (merged over processes)."""

    elapsed_secs: float = 0.0
    acked_events: int = 0
    acked_requests: int = 0
    duplicate_events_sent: int = 0
    rejected_events: int = 0
    unknown_events: int = 0
    retries: int = 0
    #: Open loop only: batches that could not even be queued (the client fell behind).
    skipped_batches: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    events_by_type: dict[str, int] = field(default_factory=dict)
    latencies_ms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float32))

    @property
    def events_per_s(self) -> float:
        return self.acked_events / self.elapsed_secs if self.elapsed_secs else 0.0

    def percentile_ms(self, q: float) -> float:
        if not len(self.latencies_ms):
            return float("nan")
        return float(np.percentile(self.latencies_ms, q))

    def merge(self, other: LoadResult) -> None:
        self.elapsed_secs = max(self.elapsed_secs, other.elapsed_secs)
        for name in (
            "acked_events",
            "acked_requests",
            "duplicate_events_sent",
            "rejected_events",
            "unknown_events",
            "retries",
            "skipped_batches",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for src, dst in ((other.errors, self.errors), (other.events_by_type, self.events_by_type)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v
        self.latencies_ms = np.concatenate([self.latencies_ms, other.latencies_ms])

    def summary(self) -> dict[str, object]:
        return {
            "events_per_s": round(self.events_per_s, 1),
            "acked_events": self.acked_events,
            "acked_requests": self.acked_requests,
            "elapsed_secs": round(self.elapsed_secs, 3),
            "p50_ms": round(self.percentile_ms(50), 3),
            "p90_ms": round(self.percentile_ms(90), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "max_ms": round(float(self.latencies_ms.max()), 3) if len(self.latencies_ms) else None,
            "duplicate_events_sent": self.duplicate_events_sent,
            "rejected_events": self.rejected_events,
            "unknown_events": self.unknown_events,
            "retries": self.retries,
            "skipped_batches": self.skipped_batches,
            "errors": self.errors,
            "events_by_type": self.events_by_type,
        }


class _Client:
    def __init__(self, cfg: LoadConfig, index: int, result: LoadResult) -> None:
        self.cfg = cfg
        self.last_rejected: set[int] = set()
        self.result = result
        self.factory = BatchFactory(
            types=cfg.types,
            skew=cfg.skew,
            event_bytes=cfg.event_bytes,
            batch_events=cfg.batch_events,
            seed=None if cfg.seed is None else cfg.seed + index,
        )
        self.ledger = (
            Ledger(
                cfg.ledger_dir,
                f"{cfg.ledger_prefix}{os.getpid()}-{index}",
                fsync_every_batch=cfg.fsync_every_batch,
            )
            if cfg.ledger_dir is not None
            else None
        )
        self.url = cfg.url.rstrip("/") + "/v1/events"
        per_process = max(1, cfg.concurrency // cfg.processes)
        self.concurrency = per_process
        self.http = HttpPool(
            self.url,
            limit=per_process,
            timeout_secs=cfg.request_timeout_secs,
            content_type="application/json",
        )
        self.latencies: list[float] = []
        self.stopping = False

    def _error(self, what: str) -> None:
        self.result.errors[what] = self.result.errors.get(what, 0) + 1

    async def _post(self, batch: Batch) -> bool | None:
        """True when answered 200, False when refused for good (4xx), None when unknown.

        After a 200, ``self.last_rejected`` holds the indexes the gateway rejected:
        those events were not accepted and must not enter the ledger as acked.
        """
        import msgspec

        deadline = time.monotonic() + self.cfg.retry_budget_secs
        while True:
            retry_after = 0.2
            try:
                status, header, payload = await self.http.post(batch.body)
            except (HttpConnectionError, TimeoutError) as exc:
                self._error(type(exc).__name__)
            else:
                if status == 200:
                    if payload.endswith(b'"rejected":[]}'):  # the usual answer: skip decoding
                        self.last_rejected = set()
                        return True
                    rejected = msgspec.json.decode(payload).get("rejected") or []
                    self.result.rejected_events += len(rejected)
                    self.last_rejected = {int(r["index"]) for r in rejected}
                    return True
                self._error(str(status))
                if status not in (429, 503):
                    return False
                if header:
                    retry_after = float(header)
                else:
                    # G8 promises Retry-After with every 429/503: count any that lack it.
                    self._error(f"{status} without Retry-After")
            if time.monotonic() + retry_after > deadline:
                return None
            self.result.retries += 1
            await asyncio.sleep(retry_after)

    async def send(self, batch: Batch, due: float) -> None:
        ok = await self._post(batch)
        if ok:
            # Step 3: the ledger first; nothing between the 2xx and this write. Only the
            # accepted events: a rejected one is final and never in a bucket (it is in
            # _invalid), so recording it as acked would report it as lost.
            keys, accepted = batch.keys, batch.count
            if self.last_rejected:
                keys = b"".join(
                    batch.keys[i * 16 : (i + 1) * 16]
                    for i in range(batch.count)
                    if i not in self.last_rejected
                )
                accepted -= len(self.last_rejected)
            if self.ledger is not None and keys:
                self.ledger.acked_keys(keys)
            self.latencies.append((time.perf_counter() - due) * 1000)
            r = self.result
            r.acked_events += accepted
            r.acked_requests += 1
            r.events_by_type[batch.event_type] = (
                r.events_by_type.get(batch.event_type, 0) + accepted
            )
            if self.cfg.max_events is not None and r.acked_events >= self.cfg.max_events:
                self.stopping = True
            if self.cfg.duplicate_rate and self.factory.rng.random() < self.cfg.duplicate_rate:
                r.duplicate_events_sent += batch.count
                await self._post(batch)
        elif ok is None:
            if self.ledger is not None:
                self.ledger.unknown_keys(batch.keys)
            self.result.unknown_events += batch.count

    async def closed_loop(self, end: float) -> None:
        async def worker() -> None:
            while not self.stopping and time.monotonic() < end:
                await self.send(self.factory.next(), time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def open_loop(self, end: float, rate_events_per_s: float) -> None:
        interval = self.cfg.batch_events / rate_events_per_s
        sem = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        backlog_limit = self.concurrency * 8

        async def one(batch: Batch, due: float) -> None:
            async with sem:
                await self.send(batch, due)

        due_mono = time.monotonic()
        offset = time.perf_counter() - due_mono
        while not self.stopping and due_mono < end:
            now = time.monotonic()
            if due_mono > now:
                await asyncio.sleep(due_mono - now)
            if len(tasks) >= backlog_limit:
                self.result.skipped_batches += 1
            else:
                t = asyncio.create_task(one(self.factory.next(), due_mono + offset))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            due_mono += interval
        if tasks:
            await asyncio.gather(*tasks)

    async def run(self) -> None:
        started = time.monotonic()
        end = started + self.cfg.duration_secs
        try:
            if self.cfg.rate_events_per_s:
                await self.open_loop(end, self.cfg.rate_events_per_s / self.cfg.processes)
            else:
                await self.closed_loop(end)
        finally:
            self.result.elapsed_secs = time.monotonic() - started
            await self.http.close()
            if self.ledger is not None:
                self.ledger.close()
            self.result.latencies_ms = np.asarray(self.latencies, dtype=np.float32)


def _run_one(cfg: LoadConfig, index: int) -> LoadResult:
    result = LoadResult()

    async def main() -> None:
        await _Client(cfg, index, result).run()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    return result


def run_load(cfg: LoadConfig) -> LoadResult:
    """Run the load described by ``cfg``; blocks for about ``duration_secs``."""
    if cfg.processes <= 1:
        return _run_one(replace(cfg, processes=1), 0)
    per_process_max = None if cfg.max_events is None else -(-cfg.max_events // cfg.processes)
    sub = replace(cfg, max_events=per_process_max)
    with ProcessPoolExecutor(cfg.processes, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_one, sub, i) for i in range(cfg.processes)]
        merged = LoadResult()
        for f in futures:
            merged.merge(f.result())
    return merged


async def run_load_async(cfg: LoadConfig) -> LoadResult:
    """:func:`run_load` from inside an event loop (runs it in a thread)."""
    return await asyncio.to_thread(run_load, cfg)

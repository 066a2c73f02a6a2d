"""Courier on several machines, on one: processes that share nothing but NATS and the store.

::

    load generator (ledger) ──▶ round-robin TCP balancer ──▶ gateway g0, g1
                                                               │ publish (R3, fsync)
                              nats-server n0 ─ n1 ─ n2 (one cluster, sync_interval: always)
                                                               │ durable pull consumers
                                                    writer w0, w1 ──▶ staging objects
                                                    closer c0, c1 ──▶ parts + _SUCCESS
                                                               │
                                          object store: moto_server (S3) or fake-gcs-server

Every Courier process has its own data dir and scratch dir (as on its own machine);
the only things they share are the NATS cluster and the store URL. During the load
one writer, one closer and one gateway are killed with ``kill -9`` (a supervisor
thread restarts each, as a process manager would); the load generator retries what
got no answer. Then every bucket up to the last ack must close and the closed
buckets must hold every acknowledged id exactly once (the ledger), and every
``_SUCCESS`` must have been created exactly once: on S3 the bucket is versioned, so
a second successful write of a ``_SUCCESS`` would be a second version; on GCS the
server's access log counts the create-only uploads it accepted.

Run::

    python -m bench.scaleout --store s3 --secs 20
    python -m bench.scaleout --store gcs --secs 20
    python -m bench.scaleout --store s3 --secs 20 --no-kills --compare   # 1 vs 2 of each

Processes are stopped by PID; temp dirs are removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench._emulators import FakeGcs, MotoS3
from bench._stack import schema_dir
from bench.faults.harness import Child, apply_schemas, nats_nodes, supervise, wait_for
from bench.loadgen import LoadConfig, LoadResult, run_load, verify
from bench.loadgen.events import BatchFactory
from bench.tcpproxy import TcpProxy
from courier.model import INVALID_TYPE, BucketKey, bucket_start
from courier.storage import BucketReader, Layout
from courier.storage.store import BucketStore
from courier.transport import EmbeddedNats, free_port

log = logging.getLogger("bench.scaleout")

PREFIX = "courier"
CLOSE_TIMEOUT_SECS = 120.0
_SUCCESS_RE = re.compile(r"/_SUCCESS$")


@dataclass
class Options:
    store: str = "s3"
    load_secs: float = 20.0
    #: None = closed loop: as fast as the gateways ack (the throughput runs).
    rate_events_per_s: float | None = 3000.0
    types: int = 2
    bucket_width_secs: int = 2
    grace_secs: int = 1
    gateways: int = 2
    writers: int = 2
    closers: int = 2
    nats_nodes: int = 3
    kills: bool = True
    restart_delay_secs: float = 0.5


class RoundRobinBalancer(TcpProxy):
    """A TCP load balancer: each connection goes to the next target that accepts it."""

    def __init__(self, targets: list[tuple[str, int]]) -> None:
        super().__init__(*targets[0])
        self.targets = targets
        self._next = itertools.cycle(range(len(targets)))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(len(self.targets)):
            host, port = self.targets[next(self._next)]
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                continue  # that gateway is down: try the next, as a balancer's health check would
            self._writers.update((writer, up_writer))
            await asyncio.gather(
                self._pipe(reader, up_writer),
                self._pipe(up_reader, writer),
                return_exceptions=True,
            )
            self._writers.difference_update((writer, up_writer))
            return
        writer.transport.abort()


@dataclass
class Topology:
    """Every process of one run; see the module docstring."""

    root: Path
    opts: Options
    emulator: MotoS3 | FakeGcs = field(init=False)
    bucket: str = ""
    nats: list[EmbeddedNats] = field(default_factory=list)
    children: dict[str, Child] = field(default_factory=dict)
    balancer: RoundRobinBalancer | None = None
    names: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _supervisor: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.ledger_dir = self.root / "ledger"
        self.logs_dir = self.root / "logs"
        if self.opts.store == "s3":
            self.emulator = MotoS3(self.root / "moto")
        elif self.opts.store == "gcs":
            self.emulator = FakeGcs(self.root / "fake-gcs")
        else:
            raise ValueError(f"unknown store {self.opts.store!r}; use s3 or gcs")
        self.names = BatchFactory(types=self.opts.types).names

    @property
    def store_url(self) -> str:
        scheme = "s3" if self.opts.store == "s3" else "gs"
        return f"{scheme}://{self.bucket}/{PREFIX}"

    def store(self) -> BucketStore:
        """This process's own handle on the store (for checks)."""
        if isinstance(self.emulator, MotoS3):
            from courier.storage.store.s3 import S3BucketStore

            return S3BucketStore(self.bucket, PREFIX, **self.emulator.store_config())
        from courier.storage.store.gcs import GcsBucketStore

        return GcsBucketStore(self.bucket, PREFIX, client=self.emulator.client())

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout_secs: float = 90.0) -> Topology:
        for d in (self.ledger_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.emulator.start()
        if isinstance(self.emulator, MotoS3):
            self.bucket = self.emulator.new_bucket(versioned=True)
        else:
            self.bucket = self.emulator.new_bucket()
        self.nats = nats_nodes(self.root / "nats", self.opts.nats_nodes, "courier-scaleout")
        for n in self.nats:
            n.start()
        base = self._base_env()
        self._provision(base, timeout_secs)
        ports = []
        for i in range(self.opts.gateways):
            port = free_port()
            ports.append(port)
            self._add(f"gateway-{i}", "gateway", base, {"COURIER_GATEWAY__PORT": str(port)})
        for i in range(self.opts.writers):
            self._add(
                f"writer-{i}",
                "writer",
                base,
                {
                    "COURIER_WRITER__WRITER_ID": f"w{i}",
                    "COURIER_WRITER__METRICS_PORT": str(free_port()),
                },
            )
        for i in range(self.opts.closers):
            # A restarted closer keeps its id, so it resumes its own claims at once.
            self._add(
                f"closer-{i}",
                "closer",
                base,
                {
                    "COURIER_CLOSER__CLOSER_ID": f"c{i}",
                    "COURIER_CLOSER__METRICS_PORT": str(free_port()),
                },
            )
        for c in self.children.values():
            c.start()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()
        self.balancer = RoundRobinBalancer([("127.0.0.1", p) for p in ports])
        self.balancer.start()
        return self

    @property
    def url(self) -> str:
        assert self.balancer is not None
        return f"http://127.0.0.1:{self.balancer.port}"

    def _base_env(self) -> dict[str, str]:
        o = self.opts
        return {
            **os.environ,
            **self.emulator.env(),
            "COURIER_NATS_URL": ",".join(n.url for n in self.nats),
            "COURIER_STORE_URL": self.store_url,
            "COURIER_BUCKET_WIDTH_SECS": str(o.bucket_width_secs),
            "COURIER_MAX_CLOCK_SKEW_SECS": "1.0",
            "COURIER_LOG_LEVEL": "INFO",
            "COURIER_NATS__REPLICAS": str(o.nats_nodes),
            "COURIER_WRITER__FLUSH_INTERVAL_SECS": "0.5",
            "COURIER_WRITER__ACK_WAIT_SECS": "10",
            "COURIER_CLOSER__POLL_INTERVAL_SECS": "0.3",
            "COURIER_CLOSER__DEFAULT_GRACE_SECS": str(o.grace_secs),
            # Iceberg commits add files in place: a local store only.
            "COURIER_TABLES__ENABLED": "false",
        }

    def _host_env(self, name: str) -> dict[str, str]:
        """What one machine has of its own: a data dir and a scratch dir."""
        host = self.root / "hosts" / name
        return {
            "COURIER_DATA_DIR": str(host / "data"),
            "COURIER_SCRATCH_DIR": str(host / "scratch"),
        }

    def _add(self, name: str, component: str, base: dict[str, str], env: dict[str, str]) -> None:
        child = Child(
            component, {**base, **self._host_env(name), **env}, self.logs_dir / f"{name}.log"
        )
        self.children[name] = child

    def _provision(self, base: dict[str, str], timeout_secs: float) -> None:
        schemas = schema_dir(self.root, self.opts.types, self.opts.grace_secs)
        apply_schemas(schemas, {**base, **self._host_env("provision")}, timeout_secs)

    def _supervise(self) -> None:
        supervise(self.children.values(), self._lock, self._stop, self.opts.restart_delay_secs)

    def stop_courier(self) -> None:
        """Stop the balancer and the Courier processes (SIGTERM, by PID), not restarted;
        NATS and the store stay up. Afterwards the store no longer changes."""
        self._stop.set()
        if self._supervisor is not None and self._supervisor.is_alive():
            self._supervisor.join()
        if self.balancer is not None:
            self.balancer.close()
            self.balancer = None
        with self._lock:
            for c in self.children.values():
                c.stop()

    def close(self) -> None:
        """Stop every process this run started: balancer, Courier, NATS, the emulator."""
        self.stop_courier()
        for n in self.nats:
            n.stop()
        self.emulator.stop()

    # -- faults and observations --------------------------------------------------------

    def kill9(self, name: str) -> None:
        with self._lock:
            self.children[name].kill9()

    def alive(self, name: str) -> bool:
        return self.children[name].alive

    def wait_all_closed(self, until: float, timeout_secs: float) -> bool:
        reader = BucketReader(self.store(), self.opts.bucket_width_secs)
        deadline = time.monotonic() + timeout_secs
        for name in self.names:
            try:
                reader.wait_closed(
                    name,
                    bucket_start(until, self.opts.bucket_width_secs),
                    max(0.1, deadline - time.monotonic()),
                )
            except Exception:
                return False
        return True

    def bucket_gaps(self) -> dict[str, int]:
        """Per type, buckets between its first and last closed one without a ``_SUCCESS``."""
        layout = Layout(self.store(), self.opts.bucket_width_secs)
        gaps = {}
        for t in self.names:
            starts = layout.closed_bucket_starts(t)
            expected = (starts[-1] - starts[0]) // layout.width + 1 if starts else 0
            gaps[t] = expected - len(starts)
        return gaps

    def success_creates(self) -> tuple[int, int, int | None]:
        """(``_SUCCESS`` objects of every type, ``_invalid`` included; successful writes of
        them that the store itself recorded: S3 object versions, GCS create-only uploads
        answered 200; on S3 the most versions one ``_SUCCESS`` has). Equal counts (and at
        most one version each) mean no ``_SUCCESS`` was ever written twice. Call it once
        the closers are stopped, or a close between the two listings skews the counts."""
        layout = Layout(self.store(), self.opts.bucket_width_secs)
        types = [*self.names, INVALID_TYPE]
        manifests = sum(len(layout.closed_bucket_starts(t)) for t in types)
        if isinstance(self.emulator, MotoS3):
            versions = self.emulator.object_versions(self.bucket, PREFIX + "/")
            per_key = [v for k, v in versions.items() if _SUCCESS_RE.search(k)]
            return manifests, sum(per_key), max(per_key, default=0)
        return manifests, self.emulator.successful_creates(), None

    def close_delays(self) -> list[float]:
        """``close_delay_secs`` of the closed buckets that hold events (from the manifests)."""
        layout = Layout(self.store(), self.opts.bucket_width_secs)
        delays = []
        for t in self.names:
            for s in layout.closed_bucket_starts(t):
                m = layout.read_manifest(BucketKey(t, s))
                if m.events:
                    delays.append(m.close_delay_secs)
        return sorted(delays)

    def local_leftovers(self) -> list[str]:
        """Files under the hosts' data and scratch dirs: none may hold a bucket's data."""
        out = []
        for p in (self.root / "hosts").rglob("*"):
            if p.is_file():
                out.append(str(p.relative_to(self.root / "hosts")))
        return sorted(out)

    def log_count(self, pattern: str) -> int:
        return sum(
            p.read_text(errors="replace").count(pattern) for p in self.logs_dir.glob("*.log")
        )


def _inject(top: Topology, load_secs: float, done: threading.Event, out: dict[str, Any]) -> None:
    """``kill -9`` one writer, one closer and one gateway, spread over the load."""
    plan = [("writer-0", 0.25), ("closer-0", 0.45), ("gateway-0", 0.65)]
    t0 = time.monotonic()
    for name, at in plan:
        if done.wait(max(0.0, t0 + at * load_secs - time.monotonic())):
            return
        top.kill9(name)
        killed = time.monotonic()
        child = top.children[name]

        def restarted(c: Child = child) -> bool:
            return c.starts >= 2 and c.alive

        back = wait_for(restarted, 30.0)
        out.setdefault("killed", []).append(name)
        out.setdefault("restart_secs", []).append(
            None if back is None else round(time.monotonic() - killed, 2)
        )


def run(opts: Options, *, workdir: Path | None = None, keep: bool = False) -> dict[str, Any]:
    """One run from start to verdict; the result row."""
    root = Path(tempfile.mkdtemp(prefix=f"courier-scaleout-{opts.store}-", dir=workdir))
    top = Topology(root, opts)
    row: dict[str, Any] = {"store": opts.store, "options": asdict(opts)}
    problems: list[str] = []
    faults: dict[str, Any] = {}
    try:
        try:
            top.start()
            cfg = LoadConfig(
                url=top.url,
                duration_secs=opts.load_secs,
                rate_events_per_s=opts.rate_events_per_s,
                types=opts.types,
                concurrency=16,
                duplicate_rate=0.01,
                ledger_dir=top.ledger_dir,
                retry_budget_secs=120.0,
            )
            box: list[LoadResult] = []
            done = threading.Event()

            def drive() -> None:
                box.append(run_load(cfg))

            load = threading.Thread(target=drive, daemon=True)
            t0 = time.time()
            load.start()
            if opts.kills:
                _inject(top, opts.load_secs, done, faults)
            load.join()
            done.set()
            result = box[0] if box else LoadResult()
            last_ack = time.time()
            if not top.wait_all_closed(last_ack, CLOSE_TIMEOUT_SECS):
                problems.append("not every bucket closed in time")
            drain = time.time() - last_ack
            top.stop_courier()  # from here on the store holds still
            gaps = top.bucket_gaps()
            manifests, writes, max_versions = top.success_creates()
            delays = top.close_delays()
            exists_races = top.log_count("was closed by someone else")
            own_retries = top.log_count("found its own earlier _SUCCESS")
            report = verify(
                top.ledger_dir,
                top.store(),
                bucket_width_secs=opts.bucket_width_secs,
                event_types=top.names,
            )
        finally:
            top.close()
        leftovers = [p for p in top.local_leftovers() if "/scratch/" in p or "/_staging" in p]
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    if any(gaps.values()):
        problems.append(f"buckets without _SUCCESS between closed ones: {gaps}")
    if writes != manifests or (max_versions or 1) > 1:
        problems.append(
            f"{manifests} _SUCCESS objects but {writes} successful writes of them "
            f"(at most {max_versions} versions of one)"
        )
    if opts.kills and len(faults.get("killed", [])) < 3:
        problems.append(f"only {faults.get('killed')} were killed (the load ended first)")
    if leftovers:
        problems.append(f"bucket data on a process's local disk: {leftovers[:5]}")
    ok = report.ok and result.acked_events > 0 and not problems
    return {
        **row,
        "ok": ok,
        **report.ledger_row(),
        "closed_buckets": report.closed_buckets,
        "open_buckets": report.open_buckets,
        "success_objects": manifests,
        "success_writes": writes,
        "success_max_versions": max_versions,
        "create_found_own_write": own_retries,
        "create_found_other_closer": exists_races,
        "killed": faults.get("killed", []),
        "restart_secs": faults.get("restart_secs", []),
        "events_per_s": round(result.events_per_s, 1),
        "p99_request_ms": round(result.percentile_ms(99), 1),
        "close_delay_p50_secs": _quantile(delays, 0.5),
        "close_delay_max_secs": delays[-1] if delays else None,
        "load_secs": round(last_ack - t0, 1),
        "drain_secs": round(drain, 1),
        "client_errors": result.errors,
        "retries": result.retries,
        "problems": problems,
    }


def _quantile(values: list[float], q: float) -> float | None:
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def compare(opts: Options) -> dict[str, Any]:
    """Closed-loop throughput with 1 gateway, writer and closer, then with 2 of each (the
    same 3-node cluster and store, no kills); the ratio of the two."""
    one = run(replace(opts, gateways=1, writers=1, closers=1, kills=False))
    two = run(replace(opts, gateways=2, writers=2, closers=2, kills=False))
    keys = (
        *("ok", "acked", "lost", "duplicated", "events_per_s", "p99_request_ms"),
        *("close_delay_p50_secs", "close_delay_max_secs", "problems"),
    )
    return {
        "store": opts.store,
        "one_of_each": {k: one[k] for k in keys},
        "two_of_each": {k: two[k] for k in keys},
        "throughput_ratio_2_vs_1": round(two["events_per_s"] / max(1.0, one["events_per_s"]), 2),
        "ok": bool(one["ok"] and two["ok"]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__.split("\n")[0])
    p.add_argument("--store", choices=["s3", "gcs"], default="s3")
    p.add_argument("--secs", type=float, default=20.0, help="load duration")
    p.add_argument("--rate", type=float, default=3000.0, help="events/s offered; 0 = closed loop")
    p.add_argument("--no-kills", action="store_true")
    p.add_argument("--compare", action="store_true", help="1 vs 2 of each, closed loop, no kills")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, ledger)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    opts = Options(
        store=args.store,
        load_secs=args.secs,
        rate_events_per_s=args.rate or None,
        kills=not args.no_kills,
    )
    row = (
        compare(replace(opts, rate_events_per_s=None))
        if args.compare
        else run(opts, keep=args.keep)
    )
    print(json.dumps(row, indent=2, default=str))
    return 0 if row["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The processes of one fault scenario: NATS (one node or a 3-node cluster), gateway,
writer and closer as ``courier <component>`` children, a supervisor thread, probes.

Unlike ``courier up`` the harness owns every process, so a scenario can kill
NATS itself, restart one component with a fault-injection environment, or run
the data root on a filesystem it breaks. Its supervisor restarts a component
that exited after ``restart_delay_secs`` (``courier up`` does the same with
exponential backoff). Every process is stopped by PID in :meth:`Harness.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench._stack import schema_dir
from bench.loadgen.events import BatchFactory
from bench.loadgen.ledger import Ledger
from courier.model import BucketKey, bucket_start
from courier.storage import BucketReader, Layout, read_manifest
from courier.transport import EmbeddedNats, Transport, free_port
from courier.transport.names import stream_name

log = logging.getLogger("bench.faults")

COMPONENTS = ("gateway", "writer", "closer")
CLOSER_ID = "faults-closer"
#: The components that write the data root.
STORAGE_COMPONENTS = ("writer", "closer")
#: Root without the capabilities that bypass file permissions: such a process gets
#: EACCES from a directory without write permission, as any other user would.
_DROP_DAC = "-dac_override,-dac_read_search"


def without_permission_override() -> list[str]:
    """An argv prefix that runs a command as root but bound by file permissions
    (``setpriv`` drops CAP_DAC_OVERRIDE); empty when not root or setpriv is missing."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return []
    return [setpriv, f"--bounding-set={_DROP_DAC}", f"--inh-caps={_DROP_DAC}"]


def nats_nodes(root: Path, nodes: int, cluster: str = "courier-faults") -> list[EmbeddedNats]:
    """One nats-server, or ``nodes`` of them routed into one cluster, on free ports
    (``sync_interval: always``, each with its own store under ``root``); not started."""
    if nodes == 1:
        return [EmbeddedNats(root / "n0", port=free_port())]
    cluster_ports = [free_port() for _ in range(nodes)]
    out = []
    for i in range(nodes):
        routes = ", ".join(
            f'"nats-route://127.0.0.1:{p}"' for j, p in enumerate(cluster_ports) if j != i
        )
        extra = (
            "cluster {\n"
            f'  name: "{cluster}"\n'
            f'  listen: "127.0.0.1:{cluster_ports[i]}"\n'
            f"  routes: [{routes}]\n"
            "}\n"
        )
        out.append(
            EmbeddedNats(root / f"n{i}", port=free_port(), server_name=f"n{i}", extra_config=extra)
        )
    return out


def apply_schemas(schemas: Path, env: dict[str, str], timeout_secs: float) -> None:
    """``courier schema apply`` (retried: a fresh cluster elects its JetStream leader first)."""
    argv = [sys.executable, "-m", "courier.cli.main", "schema", "apply", str(schemas)]
    deadline = time.monotonic() + timeout_secs
    while True:
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"schema apply failed: {done.stderr[-2000:]}")
        time.sleep(1.0)


def supervise(
    children: Iterable[Child], lock: threading.Lock, stop: threading.Event, delay_secs: float
) -> None:
    """Until ``stop``: restart a supervised child ``delay_secs`` after it exited."""
    while not stop.wait(0.05):
        with lock:
            for c in children:
                if c.proc is None or not c.supervised:
                    continue
                code = c.proc.poll()
                if code is None:
                    continue
                now = time.monotonic()
                if c.exited_at is None:
                    c.exited_at = now
                    c.exits.append(code)
                if now - c.exited_at >= delay_secs:
                    c.start()


@dataclass
class Child:
    """One supervised ``courier <name>`` process."""

    name: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    #: Restart when it exits (the supervisor's job); False while a scenario drives it.
    supervised: bool = True
    #: Extra environment for the next start only (fault injection), then cleared.
    next_env: dict[str, str] = field(default_factory=dict)
    starts: int = 0
    exits: list[int] = field(default_factory=list)
    exited_at: float | None = None
    #: Runs the component under this command (e.g. without permission override).
    argv_prefix: list[str] = field(default_factory=list)
    #: The ``courier`` command line when it is not just ``name`` (``dc watch``, or two
    #: gateways of different DCs).
    args: tuple[str, ...] = ()

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        env = {**self.env, **self.next_env, **(extra_env or {})}
        self.next_env = {}
        command = self.args or (self.name,)
        argv = [*self.argv_prefix, sys.executable, "-m", "courier.cli.main", *command]
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT
            )
        self.starts += 1
        self.exited_at = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def wait_exit(self, timeout_secs: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout_secs)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_secs: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_secs)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Harness:
    """NATS + gateway + writer + closer for one scenario, all under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        data_dir: Path | None = None,
        mount: Path | None = None,
        nodes: int = 1,
        bucket_width_secs: int = 2,
        grace_secs: int = 1,
        max_clock_skew_secs: float = 1.0,
        types: int = 3,
        restart_delay_secs: float = 0.5,
    ) -> None:
        self.root = root
        self.data_dir = data_dir or root / "data"
        #: The filesystem the data root lives on, when the scenario owns it (storage faults).
        self.mount = mount
        self.ledger_dir = root / "ledger"
        self.logs_dir = root / "logs"
        self.width = bucket_width_secs
        self.grace_secs = grace_secs
        self.types = types
        self.names = BatchFactory(types=types).names
        self.restart_delay_secs = restart_delay_secs
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.writer_metrics_port = free_port()
        self.closer_metrics_port = free_port()
        self.nats = nats_nodes(root / "nats", nodes)
        self.nats_url = ",".join(n.url for n in self.nats)
        self.env = {
            **os.environ,
            "COURIER_NATS_URL": self.nats_url,
            "COURIER_DATA_DIR": str(self.data_dir),
            "COURIER_BUCKET_WIDTH_SECS": str(bucket_width_secs),
            "COURIER_MAX_CLOCK_SKEW_SECS": str(max_clock_skew_secs),
            "COURIER_LOG_LEVEL": "INFO",
            "COURIER_NATS__REPLICAS": str(nodes),
            "COURIER_GATEWAY__PORT": str(self.http_port),
            "COURIER_WRITER__METRICS_PORT": str(self.writer_metrics_port),
            "COURIER_WRITER__FLUSH_INTERVAL_SECS": "0.5",
            "COURIER_WRITER__ACK_WAIT_SECS": "10",
            "COURIER_CLOSER__METRICS_PORT": str(self.closer_metrics_port),
            "COURIER_CLOSER__POLL_INTERVAL_SECS": "0.3",
            # The Iceberg catalog (SQLite) sits beside the data root, not in it: its open
            # database file would make a read-only remount of the data root (the storage
            # scenario) fail with "mount point is busy".
            "COURIER_TABLES__CATALOG_URI": f"sqlite:///{root / 'iceberg-catalog.db'}",
            "COURIER_CLOSER__DEFAULT_GRACE_SECS": str(grace_secs),
            # A restarted closer resumes its own claims at once; a closer with a new id
            # would wait for the claim lease (60 s) before taking over.
            "COURIER_CLOSER__CLOSER_ID": CLOSER_ID,
        }
        self.children: dict[str, Child] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout_secs: float = 90.0) -> Harness:
        for d in (self.data_dir, self.ledger_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        for n in self.nats:
            n.start()
        self._provision(timeout_secs)
        # With a data root on our own filesystem (storage faults), the writer and the
        # closer are bound by file permissions even as root, so "permission denied" is real.
        bound = without_permission_override() if self.mount is not None else []
        for name in COMPONENTS:
            prefix = bound if name in STORAGE_COMPONENTS else []
            self.children[name] = Child(
                name, self.env, self.logs_dir / f"{name}.log", argv_prefix=prefix
            )
            self.children[name].start()
        self._supervisor.start()
        if self.probe(timeout_secs) is None:
            raise RuntimeError(f"the gateway never accepted an event; logs in {self.logs_dir}")
        return self

    def _provision(self, timeout_secs: float) -> None:
        apply_schemas(schema_dir(self.root, self.types, self.grace_secs), self.env, timeout_secs)

    def _supervise(self) -> None:
        supervise(self.children.values(), self._lock, self._stop, self.restart_delay_secs)

    @property
    def permissions_enforced(self) -> bool:
        """Whether the writer and closer are subject to file permissions."""
        return all(self.children[n].argv_prefix or os.geteuid() != 0 for n in STORAGE_COMPONENTS)

    def close(self) -> None:
        """Stop every process this harness started (children first, then NATS)."""
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join()
        with self._lock:
            for c in self.children.values():
                c.stop()
        for n in self.nats:
            n.stop()

    # -- faults -------------------------------------------------------------------------

    def kill9(self, name: str, *, next_env: dict[str, str] | None = None) -> None:
        """``kill -9`` a component; the supervisor restarts it (with ``next_env`` once)."""
        with self._lock:
            c = self.children[name]
            c.next_env = dict(next_env or {})
            c.kill9()

    def kill9_and_hold(self, name: str) -> None:
        """``kill -9`` a component and keep it down (unsupervised) until :meth:`release`."""
        with self._lock:
            c = self.children[name]
            c.supervised = False
            c.kill9()

    def release(self, name: str) -> None:
        """Start a component held down by :meth:`kill9_and_hold`; supervised again."""
        with self._lock:
            c = self.children[name]
            c.wait_exit(5)
            c.start()
            c.supervised = True

    def restart_with(self, name: str, extra_env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        """Stop a component gracefully and start it again with ``extra_env`` (this start only;
        if it exits, the supervisor restarts it without). Returns the new process."""
        with self._lock:
            c = self.children[name]
            c.supervised = False
        c.stop()
        with self._lock:
            c.start(extra_env)
            c.supervised = True
            assert c.proc is not None
            return c.proc

    def stream_leader(self, event_type: str) -> int:
        """Index in :attr:`nats` of the node leading the type's stream."""

        async def leader() -> str:
            t = await Transport.connect(self.nats_url)
            try:
                info = await t.js.stream_info(stream_name(event_type))
                assert info.cluster is not None and info.cluster.leader
                return str(info.cluster.leader)
            finally:
                await t.close()

        name = asyncio.run(leader())
        return [n.server_name for n in self.nats].index(name)

    # -- observing ----------------------------------------------------------------------

    def probe(self, timeout_secs: float, url: str | None = None) -> float | None:
        """Post one event of each type until all are acked (ledgered); seconds taken or None.

        To ``url`` when given (a gateway of another DC), else to this harness's gateway."""
        started = time.monotonic()
        deadline = started + timeout_secs
        factory = BatchFactory(types=self.types, batch_events=1)
        with Ledger(self.ledger_dir, f"probe-{time.monotonic_ns()}") as ledger:
            for name in factory.names:
                factory.weights = [1.0 if n == name else 0.0 for n in factory.names]
                batch = factory.next()
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        r = httpx.post(
                            f"{url or self.url}/v1/events",
                            content=batch.body,
                            headers={"content-type": "application/json"},
                            timeout=10,
                        )
                        if r.status_code == 200 and r.json()["accepted"] == 1:
                            ledger.acked_keys(batch.keys)
                            break
                    if time.monotonic() > deadline:
                        return None
                    time.sleep(0.1)
        return time.monotonic() - started

    def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        return False

    def metric(self, component: str, name: str) -> float | None:
        """Sum of a metric's samples on a component's ``/metrics``; None when unreachable."""
        port = {"writer": self.writer_metrics_port, "closer": self.closer_metrics_port}[component]
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
        return total

    def closed_buckets(self) -> int:
        layout = Layout(self.data_dir, self.width)
        try:
            return sum(len(layout.closed_bucket_starts(t)) for t in self.names)
        except OSError:
            return -1

    def bucket_totals(self) -> tuple[int, int, int]:
        """From the manifests: (events moved into a bucket from an already-closed one, i.e.
        early closes; duplicates the closer removed, i.e. redeliveries and client retries;
        of those, the ones whose id a closed bucket other than the previous one held)."""
        layout = Layout(self.data_dir, self.width)
        skewed = dropped = other = 0
        for t in self.names:
            for s in layout.closed_bucket_starts(t):
                m = read_manifest(layout.manifest_path(BucketKey(t, s)))
                skewed += m.skewed_in
                dropped += m.duplicates_dropped
                other += m.duplicates_dropped_other_buckets
        return skewed, dropped, other

    def stream_seq_gaps(self) -> dict[str, int]:
        """Per type, stream sequence numbers below the highest closed one that no closed
        bucket covers. A stream's sequences are contiguous, so a gap is a message the writer
        never staged (the consumer skipped it); lost events without gaps were never in the
        stream. Only meaningful once every bucket is closed."""
        layout = Layout(self.data_dir, self.width)
        gaps: dict[str, int] = {}
        for t in self.names:
            spans = sorted(
                (r.first, r.last)
                for s in layout.closed_bucket_starts(t)
                for r in read_manifest(layout.manifest_path(BucketKey(t, s))).stream_seq_ranges
            )
            missing, nxt = 0, 1
            for first, last in spans:
                missing += max(0, first - nxt)
                nxt = max(nxt, last + 1)
            gaps[t] = missing
        return gaps

    def wait_all_closed(self, until: float, timeout_secs: float) -> bool:
        reader = BucketReader(self.data_dir, self.width)
        deadline = time.monotonic() + timeout_secs
        for name in self.names:
            try:
                reader.wait_closed(
                    name, bucket_start(until, self.width), max(0.1, deadline - time.monotonic())
                )
            except Exception:
                return False
        return True


def wait_for(
    predicate: Callable[[], bool], timeout_secs: float, poll_secs: float = 0.1
) -> float | None:
    """Seconds until ``predicate()`` held, or None after ``timeout_secs``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_secs:
        if predicate():
            return time.monotonic() - started
        time.sleep(poll_secs)
    return None

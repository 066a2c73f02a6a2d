"""Segment's real clients against a real ``courier up`` whose gateway is killed twice.

``python -m bench.segment_clients --events 20000`` (the proof of issue 15):

1. ``courier up --demo --segment`` on free ports, with one API key (the clients'
   write key) and the tracking plan ``{"Song Played": "SongPlayed"}``;
2. ``segment-analytics-python`` (pip, gzip on) and ``@segment/analytics-node``
   (npm, installed by :func:`ensure_node_client`) each send ``--events`` calls
   of every type (:func:`planned_type`), 2 % of them invalid, paced at ``--rate``;
3. while they send, the gateway is killed with SIGKILL twice, each time after
   it acknowledged events, the second after the supervisor restarted it;
4. after both clients exit: every messageId a client was told was delivered is
   in a closed bucket of its type exactly once (the invalid ones in ``_invalid``),
   nothing else is there, and no client dropped a batch;
5. with ``--throughput-events``: events/s through ``/v1/batch`` next to
   ``/v1/events`` on the same stack, the same events in both wire formats.

The test suite runs the same steps with fewer events (tests/e2e/test_e2e_segment_clients.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench._report import emit
from courier.gateway.segment import CALL_TYPES
from courier.model import INVALID_TYPE
from courier.service.auth import hash_key, new_key
from courier.storage import BucketReader
from courier.transport import free_port

ROOT = Path(__file__).resolve().parents[1]
NODE_PROJECT = Path(__file__).resolve().parent / "segment_node"
PLANNED = "SongPlayed"
TYPES = (*CALL_TYPES.values(), PLANNED, INVALID_TYPE)
TRACKING_PLAN = {"Song Played": PLANNED}


# -- what the clients send -----------------------------------------------------------


def planned_type(i: int) -> str:
    """The Courier type call ``i`` must land in (bench/segment_node/send.mjs sends the same)."""
    kind = i % 10
    if kind >= 6:
        return INVALID_TYPE if i % 50 == 6 else PLANNED
    return (
        "SegmentIdentify",
        "SegmentPage",
        "SegmentScreen",
        "SegmentGroup",
        "SegmentAlias",
        "SegmentTrack",
    )[kind]


def _python_call(client: Any, i: int, message_id: str) -> tuple[bool, Any]:
    """Call ``i`` through segment-analytics-python (same calls as send.mjs)."""
    user = f"user-{i % 97}"
    kind = i % 10
    if kind == 0:
        return client.identify(user, {"plan": "pro", "n": i}, message_id=message_id)  # type: ignore[no-any-return]
    if kind == 1:
        return client.page(user, name="Home", properties={"path": "/"}, message_id=message_id)  # type: ignore[no-any-return]
    if kind == 2:
        return client.screen(anonymous_id=f"anon-{i}", name="Player", message_id=message_id)  # type: ignore[no-any-return]
    if kind == 3:
        return client.group(user, f"g{i % 7}", {"size": 3}, message_id=message_id)  # type: ignore[no-any-return]
    if kind == 4:
        return client.alias(f"anon-{i}", user, message_id=message_id)  # type: ignore[no-any-return]
    if kind == 5:
        return client.track(user, "Button Clicked", {"button": "buy"}, message_id=message_id)  # type: ignore[no-any-return]
    ms_played: object = "not a number" if i % 50 == 6 else 1000 + i
    properties = {"song_id": f"s{i}", "ms_played": ms_played}
    return client.track(user, "Song Played", properties, message_id=message_id)  # type: ignore[no-any-return]


def python_client(host: str, key: str, events: int, rate: float, prefix: str, out: Path) -> None:
    """Send ``events`` calls with segment-analytics-python; write what it was told to ``out``."""
    from segment.analytics import Client

    failed: list[dict[str, str]] = []

    def on_error(error: Exception, batch: list[dict[str, Any]]) -> None:
        failed.extend({"id": m.get("messageId", "?"), "error": str(error)} for m in batch)

    # Library defaults but the queue: it must hold what piles up while the gateway is down
    # (a full queue refuses calls, counted below as not enqueued).
    client = Client(
        key, host=host, gzip=True, on_error=on_error, max_queue_size=events + 1, upload_size=100
    )
    enqueued: list[str] = []
    refused = 0
    started = time.monotonic()
    for i in range(events):
        message_id = f"{prefix}-{i}"
        ok, _ = _python_call(client, i, message_id)
        if ok:
            enqueued.append(message_id)
        else:
            refused += 1
        ahead = started + (i + 1) / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    client.shutdown()  # flush, then stop the consumer thread
    failed_ids = {f["id"] for f in failed}
    delivered = [m for m in enqueued if m not in failed_ids]
    report = {
        "delivered": delivered,
        "failed": failed + [{"id": "?", "error": "queue full"}] * refused,
        "errors": [],
        "seconds": time.monotonic() - started,
    }
    out.write_text(json.dumps(report))


# -- the node client -----------------------------------------------------------------


def ensure_node_client(cache_root: Path | None = None) -> Path:
    """A directory with @segment/analytics-node installed (``npm ci``, cached by lock file)
    and send.mjs; RuntimeError without node and npm, as the proof needs the real client."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        raise RuntimeError(
            "the Segment client proof needs Node.js 20+ with npm to install "
            "@segment/analytics-node (e.g. apt-get install -y nodejs npm); "
            f"found node={node}, npm={npm}"
        )
    manifest = (NODE_PROJECT / "package.json").read_bytes()
    lock = (NODE_PROJECT / "package-lock.json").read_bytes()
    digest = hashlib.sha256(manifest + lock).hexdigest()[:16]
    root = cache_root or Path(os.environ.get("COURIER_NODE_CACHE", ROOT / ".cache" / "node"))
    target = root / f"segment-node-{digest}"
    if not (target / "node_modules" / "@segment" / "analytics-node" / "package.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=root))
        shutil.copy(NODE_PROJECT / "package.json", staging)
        shutil.copy(NODE_PROJECT / "package-lock.json", staging)
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=staging,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(f"npm ci of {NODE_PROJECT} failed:\n{done.stderr[-3000:]}")
        try:
            staging.rename(target)  # whole or not at all: a half install is never reused
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another run installed it first
    shutil.copy(NODE_PROJECT / "send.mjs", target / "send.mjs")
    return target


# -- the stack -------------------------------------------------------------------------


@dataclass
class Stack:
    """``courier up --demo --segment`` on free ports, with one write key."""

    root: Path
    width_secs: int
    key: str = field(default_factory=new_key)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start(self, timeout_secs: float = 90.0) -> None:
        env = {
            **os.environ,
            "COURIER_CLOSER__DEFAULT_GRACE_SECS": "1",
            "COURIER_CLOSER__POLL_INTERVAL_SECS": "0.3",
            "COURIER_WRITER__FLUSH_INTERVAL_SECS": "0.5",
            "COURIER_WRITER__ACK_WAIT_SECS": "5",
            "COURIER_MAX_CLOCK_SKEW_SECS": "0.5",
            "COURIER_SEGMENT__TRACKING_PLAN": json.dumps(TRACKING_PLAN),
            "COURIER_AUTH__KEYS": json.dumps([{"name": "segment", "sha256": hash_key(self.key)}]),
            "COURIER_DASHBOARD__PORT": str(free_port()),
        }
        argv = [sys.executable, "-m", "courier.cli.main", "--data-dir", str(self.data)]
        argv += ["--bucket-width-secs", str(self.width_secs), "up", "--demo", "--segment"]
        argv += ["--http-port", str(self.http_port), "--nats-port", str(free_port())]
        with open(self.root / "stack.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.wait_ready(timeout_secs)

    def gateway(self) -> psutil.Process | None:
        assert self.proc is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    if child.cmdline()[-1:] == ["gateway"]:
                        return child
        return None

    def wait_ready(self, timeout_secs: float, not_pid: int | None = None) -> int:
        """Wait until a gateway (other than ``not_pid``) answers /readyz; return its pid."""
        wait_until(
            lambda: self._ready(not_pid), timeout_secs, f"a gateway ready at {self.url}", self
        )
        gateway = self.gateway()
        assert gateway is not None
        return int(gateway.pid)

    def _ready(self, not_pid: int | None) -> bool:
        gateway = self.gateway()
        if gateway is None or gateway.pid == not_pid:
            return False
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def accepted(self) -> float:
        """Events the running gateway process acknowledged (its own counter)."""
        try:
            text = httpx.get(f"{self.url}/metrics", timeout=2).text
        except httpx.HTTPError:
            return 0.0
        prefix = "courier_gateway_events_accepted_total{"
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
        )

    def kill_gateway(self) -> int:
        gateway = self.gateway()
        assert gateway is not None, "no gateway process to kill"
        gateway.send_signal(signal.SIGKILL)
        return int(gateway.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, chars: int = 4000) -> str:
        return (self.root / "stack.log").read_text(errors="replace")[-chars:]


def wait_until(
    condition: Callable[[], bool], timeout_secs: float, what: str, stack: Stack | None = None
) -> None:
    deadline = time.monotonic() + timeout_secs
    while not condition():
        if stack is not None and stack.proc is not None and stack.proc.poll() is not None:
            raise RuntimeError(f"courier up exited while waiting for {what}:\n{stack.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_secs:g}s")
        time.sleep(0.05)


@contextlib.contextmanager
def running_stack(root: Path, width_secs: int) -> Iterator[Stack]:
    stack = Stack(root, width_secs)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


# -- the proof -------------------------------------------------------------------------


@dataclass
class Proof:
    """What the clients were told and what the closed buckets hold."""

    delivered: dict[str, list[str]]
    failed: dict[str, list[dict[str, str]]]
    kills: int
    seconds: float
    stored: dict[str, Counter[str]]

    def problems(self) -> list[str]:
        """Empty when every delivered call is in its type's closed buckets exactly once."""
        out = []
        for client, failed in self.failed.items():
            if failed:
                out.append(f"{client} dropped {len(failed)} calls, e.g. {failed[:3]}")
        expected: dict[str, set[str]] = {t: set() for t in TYPES}
        for ids in self.delivered.values():
            for message_id in ids:
                expected[planned_type(int(message_id.rsplit("-", 1)[1]))].add(message_id)
        for t in TYPES:
            got = self.stored[t]
            missing = expected[t] - got.keys()
            twice = [i for i, n in got.items() if n > 1]
            unknown = got.keys() - expected[t]
            if missing:
                out.append(
                    f"{t}: {len(missing)} delivered calls missing, e.g. {sorted(missing)[:3]}"
                )
            # _invalid records rejections: a retry landing past the next bucket is a second
            # record there (README, "the dedup horizon"), so only presence is checked.
            if twice and t != INVALID_TYPE:
                out.append(f"{t}: {len(twice)} calls stored more than once, e.g. {twice[:3]}")
            if unknown:
                out.append(
                    f"{t}: {len(unknown)} calls nobody was told of, e.g. {sorted(unknown)[:3]}"
                )
        if self.kills != 2:
            out.append(f"the gateway was killed {self.kills} times, not twice")
        return out


def prove(stack: Stack, node_dir: Path, events: int, rate: float, kill_every_events: int) -> Proof:
    """Steps 2-4 of the module doc on a running stack."""
    work = stack.root
    started = time.monotonic()
    clients = {
        "python": subprocess.Popen(
            [sys.executable, "-m", "bench.segment_clients", "python-client", stack.url,
             stack.key, str(events), str(rate), "py", str(work / "python.json")],
            cwd=ROOT, stdin=subprocess.DEVNULL,
        ),
        "node": subprocess.Popen(
            ["node", str(node_dir / "send.mjs"), stack.url, stack.key, str(events), str(rate),
             "node", str(work / "node.json")],
            cwd=node_dir, stdin=subprocess.DEVNULL,
        ),
    }  # fmt: skip
    kills = 0
    try:
        pid = stack.gateway().pid  # type: ignore[union-attr]
        for _ in range(2):
            # Kill only a gateway that has acknowledged events, while the clients still send.
            wait_until(
                lambda: (
                    stack.accepted() >= kill_every_events
                    or any(c.poll() is not None for c in clients.values())
                ),
                120,
                f"{kill_every_events} events acknowledged",
                stack,
            )
            if any(c.poll() is not None for c in clients.values()):
                break
            killed = stack.kill_gateway()
            kills += 1
            pid = stack.wait_ready(60, not_pid=killed)
        for name, client in clients.items():
            if client.wait(900) != 0:
                raise RuntimeError(f"the {name} client exited with {client.returncode}")
    finally:
        for client in clients.values():
            if client.poll() is None:
                client.kill()
                client.wait()
    del pid
    last_ack = time.time()
    seconds = time.monotonic() - started
    reports = {name: json.loads((work / f"{name}.json").read_text()) for name in clients}
    reader = BucketReader(stack.data, stack.width_secs)
    for t in TYPES:
        reader.wait_closed(t, last_ack, timeout_secs=180)
    stored = {t: _ids(reader, t, last_ack + stack.width_secs) for t in TYPES}
    return Proof(
        delivered={n: r["delivered"] for n, r in reports.items()},
        failed={n: r["failed"] for n, r in reports.items()},
        kills=kills,
        seconds=seconds,
        stored=stored,
    )


def _ids(reader: BucketReader, event_type: str, end: float) -> Counter[str]:
    table = reader.read(event_type, 0, end, columns=["id"])
    return Counter(table.column("id").to_pylist()) if table.num_columns else Counter()


# -- throughput: /v1/batch next to /v1/events -----------------------------------------


def _song(i: int, prefix: str) -> dict[str, Any]:
    return {
        "userId": f"user-{i % 997}",
        "anonymousId": None,
        "context": {"library": {"name": "bench", "version": "1"}, "ip": "10.0.0.1"},
        "properties": {"song_id": f"spotify:track:{i:022d}", "ms_played": 1000 + i},
        "messageId": f"{prefix}-{i}",
        "timestamp": "2026-11-26T10:14:59.001Z",
    }


def _bodies(kind: str, events: int, per_batch: int, prefix: str = "") -> list[bytes]:
    """The same calls as Segment batches or as Courier batches of SongPlayed."""
    out = []
    for first in range(0, events, per_batch):
        last = min(events, first + per_batch)
        calls = [_song(i, f"{prefix}{kind}") for i in range(first, last)]
        if kind == "segment":
            batch = [{"type": "track", "event": "Song Played", **c} for c in calls]
            out.append(json.dumps({"batch": batch, "sentAt": "2026-11-26T10:15:00Z"}).encode())
        else:
            courier = [
                {
                    "type": PLANNED,
                    "id": c["messageId"],
                    "time": c["timestamp"],
                    "data": {
                        "user_id": c["userId"],
                        "anonymous_id": None,
                        "context": json.dumps(c["context"]),
                        "properties": c["properties"],
                    },
                }
                for c in calls
            ]
            out.append(json.dumps({"events": courier, "sent_at": "2026-11-26T10:15:00Z"}).encode())
    return out


async def _send_all(url: str, key: str, bodies: list[bytes], concurrency: int) -> float:
    """POST every body (retrying 429/503), ``concurrency`` at a time; return the seconds."""
    import aiohttp

    queue = list(reversed(bodies))
    # As each kind of client sends its key: Segment's as HTTP Basic user name, Courier's as Bearer.
    segment = url.endswith("/v1/batch")
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode() if segment else f"Bearer {key}"
    headers = {"Content-Type": "application/json", "Authorization": auth}

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            body = queue.pop()
            while True:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        break
                    if r.status not in (429, 503):
                        raise RuntimeError(f"{url} answered {r.status}")
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - started


def throughput(
    stack: Stack, events: int, per_batch: int = 100, concurrency: int = 8, rounds: int = 4
) -> dict[str, float]:
    """Events/s acknowledged through /v1/events and /v1/batch, the same calls in each format.

    ``rounds`` rounds of each, in ABBA order, so that neither format meets more of the
    writer's and closer's catching up (they share the machine) than the other.
    """
    urls = {"courier": f"{stack.url}/v1/events", "segment": f"{stack.url}/v1/batch"}
    secs = {"courier": 0.0, "segment": 0.0}
    each = max(per_batch, events // rounds)
    for r in range(rounds):
        for kind in ("courier", "segment") if r % 2 == 0 else ("segment", "courier"):
            bodies = _bodies(kind, each, per_batch, prefix=f"r{r}-")
            secs[kind] += asyncio.run(_send_all(urls[kind], stack.key, bodies, concurrency))
    return {
        "events_per_s_v1_events": each * rounds / secs["courier"],
        "events_per_s_v1_batch": each * rounds / secs["segment"],
    }


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["python-client"]:
        host, key, events, rate, prefix, out = args[1:]
        python_client(host, key, int(events), float(rate), prefix, Path(out))
        return
    p = argparse.ArgumentParser(prog="python -m bench.segment_clients", description=__doc__)
    p.add_argument("--events", type=int, default=20_000, help="calls per client")
    p.add_argument("--rate", type=float, default=1_000.0, help="calls/s per client")
    p.add_argument("--bucket-width-secs", type=int, default=10)
    p.add_argument("--throughput-events", type=int, default=200_000, help="0 = skip step 5")
    a = p.parse_args(args)
    node_dir = ensure_node_client()
    with (
        tempfile.TemporaryDirectory(prefix="courier-bench-segment-") as tmp,
        running_stack(Path(tmp), a.bucket_width_secs) as stack,
    ):
        proof = prove(stack, node_dir, a.events, a.rate, kill_every_events=a.events // 4)
        problems = proof.problems()
        summary: dict[str, object] = {
            "events_per_client": a.events,
            "delivered_python": len(proof.delivered["python"]),
            "delivered_node": len(proof.delivered["node"]),
            "dropped": sum(len(f) for f in proof.failed.values()),
            "gateway_kills": proof.kills,
            "in_invalid": len(proof.stored[INVALID_TYPE]),
            "invalid_records_repeated": sum(proof.stored[INVALID_TYPE].values())
            - len(proof.stored[INVALID_TYPE]),
            "send_secs": round(proof.seconds, 1),
            "problems": len(problems),
        }
        if a.throughput_events:
            summary.update(throughput(stack, a.throughput_events))
    for problem in problems:
        print("PROBLEM:", problem)
    emit("segment clients", summary)
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

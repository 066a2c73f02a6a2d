"""The fault scenarios. Each injects its faults while the load runs and returns what it saw.

A scenario function gets the running :class:`Harness` and the run's
:class:`Options`; it returns :class:`Faults` (what was injected, how long the
system took to recover each time, extra notes). The runner drives the load,
waits for the buckets to close and verifies them against the ledger.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.faults.harness import Harness, wait_for
from courier.model import BucketKey, bucket_start
from courier.service.faults import (
    CLOCK_OFFSET_ENV,
    CLOSER_CRASH_AFTER_STEP_ENV,
    WRITER_CRASH_AFTER_STAGING_ENV,
)
from courier.storage import Layout

RECOVERY_TIMEOUT_SECS = 90.0


@dataclass(frozen=True)
class Options:
    duration_secs: float
    quick: bool
    rate_events_per_s: float


@dataclass
class Faults:
    injected: int = 0
    recovery_secs: list[float] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)
    #: Failures the scenario itself detected (a component busy-looping, no 503 seen...).
    problems: list[str] = field(default_factory=list)
    #: The client must have seen at least one 503 (outage scenarios).
    expect_503: bool = False
    #: Early closes are a failure here (clock scenario).
    expect_no_skew: bool = False
    #: The auditor must raise a DC transfer delay alert (a DC cut off for long enough).
    expect_dc_alert: bool = False

    def recovered(self, secs: float | None, what: str) -> None:
        self.injected += 1
        if secs is None:
            self.problems.append(f"no recovery within {RECOVERY_TIMEOUT_SECS}s after {what}")
        else:
            self.recovery_secs.append(round(secs, 2))


def _spread(o: Options, count: int) -> float:
    """Seconds between ``count`` faults spread evenly over the load."""
    return o.duration_secs / (count + 1)


def _fault_times(o: Options, count: int) -> Iterator[int]:
    """Yield 0..count-1 at evenly spread moments of the load, counted from the first call:
    a slow recovery delays the next fault, it does not push the rest past the load's end."""
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + (i + 1) * _spread(o, count) - time.monotonic()))
        yield i


def _count(o: Options, quick: int, every_secs: float) -> int:
    return quick if o.quick else max(quick + 1, int(o.duration_secs / every_secs))


# -- 1. gateway ------------------------------------------------------------------------


def gateway_kill(h: Harness, o: Options) -> Faults:
    """``kill -9`` the gateway repeatedly; recovery = until ``/readyz`` answers 200 again."""
    f = Faults()
    kills = _count(o, 2, 8)
    for _ in _fault_times(o, kills):
        t0 = time.monotonic()
        h.kill9("gateway")
        wait_for(lambda: not h.ready(), 5, 0.02)
        up = wait_for(h.ready, RECOVERY_TIMEOUT_SECS)
        f.recovered(None if up is None else time.monotonic() - t0, "a gateway kill")
    return f


# -- 2. writer -------------------------------------------------------------------------


def _writer_flushed(h: Harness) -> bool:
    return (h.metric("writer", "courier_writer_flushes_total") or 0) > 0


def _writer_recovery(h: Harness, t0: float) -> float | None:
    """Seconds from ``t0`` until the restarted writer flushed; probes (ledgered events)
    keep data coming when the load has already ended."""
    last_probe = time.monotonic()

    def flushed() -> bool:
        nonlocal last_probe
        if _writer_flushed(h):
            return True
        if time.monotonic() - last_probe > 1.0:
            h.probe(5.0)
            last_probe = time.monotonic()
        return False

    up = wait_for(flushed, RECOVERY_TIMEOUT_SECS)
    return None if up is None else time.monotonic() - t0


def writer_kill(h: Harness, o: Options) -> Faults:
    """``kill -9`` the writer at random moments (every 0.5 s it flushes, so often mid-flush);
    every other restart also crashes itself right after its first staging file, before the ack.
    Recovery = until a restarted writer has written and acked a staging file."""
    f = Faults()
    kills = _count(o, 2, 6)
    for i in _fault_times(o, kills):
        t0 = time.monotonic()
        crash_env = {WRITER_CRASH_AFTER_STAGING_ENV: "1"} if i % 2 == 0 else {}
        h.kill9("writer", next_env=crash_env)
        wait_for(lambda: h.metric("writer", "courier_writer_flushes_total") is None, 5, 0.02)
        f.recovered(_writer_recovery(h, t0), "a writer kill")
    c = h.children["writer"]
    f.notes["writer_kills"] = kills
    f.notes["writer_self_kills_after_staging"] = max(0, c.exits.count(-9) - kills)
    return f


# -- 3. closer -------------------------------------------------------------------------


def closer_steps(h: Harness, o: Options) -> Faults:
    """The closer SIGKILLs itself right after step N of a close, N = 1..7; the restarted
    closer (same id) resumes the close. Recovery = crash until the next bucket is closed."""
    f = Faults()
    crashed: list[int] = []
    for step in range(1, 8):
        proc = h.restart_with("closer", {CLOSER_CRASH_AFTER_STEP_ENV: str(step)})
        try:
            code = proc.wait(RECOVERY_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            f.problems.append(f"the closer never reached step {step}")
            continue
        t0 = time.monotonic()
        if code == -9:
            crashed.append(step)
        before = h.closed_buckets()

        def closed_more(before: int = before) -> bool:
            return h.closed_buckets() > before

        up = wait_for(closed_more, RECOVERY_TIMEOUT_SECS)
        f.recovered(None if up is None else time.monotonic() - t0, f"a crash after step {step}")
    f.notes["crashed_after_steps"] = crashed
    if crashed != list(range(1, 8)):
        f.problems.append(f"expected crashes after steps 1-7, saw {crashed}")
    return f


# -- 4. one NATS server ----------------------------------------------------------------


def nats_kill(h: Harness, o: Options) -> Faults:
    """``kill -9`` the only nats-server (file store, sync always), restart it after 1 s.
    Recovery = kill until an event of every type is acked again."""
    f = Faults()
    kills = _count(o, 2, 10)
    for _ in _fault_times(o, kills):
        t0 = time.monotonic()
        h.nats[0].kill()
        time.sleep(1.0)
        h.nats[0].start()
        up = h.probe(RECOVERY_TIMEOUT_SECS)
        f.recovered(None if up is None else time.monotonic() - t0, "a nats-server kill")
    return f


# -- 5. cluster ------------------------------------------------------------------------


def cluster_leader(h: Harness, o: Options) -> Faults:
    """3 nodes, R3 streams: ``kill -9`` the leader of the busiest type's stream, keep it
    down, restart it. Recovery = kill until an event of every type is acked again."""
    f = Faults()
    rounds = 1 if o.quick else 2
    down_secs = _spread(o, rounds) / 2
    leaders: list[str] = []
    for _ in range(rounds):
        time.sleep(_spread(o, rounds) / 2)
        idx = h.stream_leader(h.names[0])
        leaders.append(h.nats[idx].server_name)
        t0 = time.monotonic()
        h.nats[idx].kill()
        up = h.probe(RECOVERY_TIMEOUT_SECS)
        f.recovered(None if up is None else time.monotonic() - t0, "killing the stream leader")
        time.sleep(max(0.0, down_secs - (time.monotonic() - t0)))
        h.nats[idx].start()
    f.notes["killed_leaders"] = leaders
    f.notes["leader_after"] = h.nats[h.stream_leader(h.names[0])].server_name
    return f


# -- 6. storage ------------------------------------------------------------------------


def _fill(mount: Path) -> Path:
    """Fill the filesystem with one file until ENOSPC."""
    filler = mount / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def _remount(mount: Path, mode: str) -> None:
    """``mount -o remount,<mode>``, retried while a file is open for writing (EBUSY)."""
    for _ in range(200):
        done = subprocess.run(
            ["mount", "-o", f"remount,{mode}", str(mount)], capture_output=True, text=True
        )
        if done.returncode == 0:
            return
        time.sleep(0.02)
    raise RuntimeError(f"cannot remount {mount} {mode}: {done.stderr}")


@contextlib.contextmanager
def _permission_denied(data_dir: Path) -> Iterator[None]:
    """Every directory of the data root made read-only (0555) for its owner: creating,
    renaming or deleting a file anywhere there fails with EACCES. The harness runs the
    writer and closer without CAP_DAC_OVERRIDE, so this binds them as root too."""
    modes: dict[Path, int] = {}
    for _ in range(2):  # a second pass catches a directory created during the first
        for dirpath, _dirs, _files in os.walk(data_dir):
            path = Path(dirpath)
            if path not in modes:
                modes[path] = stat.S_IMODE(path.stat().st_mode)
                path.chmod(0o555)
    try:
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


@contextlib.contextmanager
def _not_directories(h: Harness, secs: float) -> Iterator[None]:
    """A regular file where the writer must create the staging directories of the coming
    buckets: every write there fails with ENOTDIR."""
    layout = Layout(h.data_dir, h.width)
    now = time.time()
    blockers = []
    for t in h.names:
        start = bucket_start(now, h.width)
        while start <= now + secs + h.width:
            path = layout.staging_dir(BucketKey(t, start))
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")
                blockers.append(path)
            start += h.width
    try:
        yield
    finally:
        for p in blockers:
            p.unlink(missing_ok=True)


def storage(h: Harness, o: Options) -> Faults:
    """Disk full, read-only, permission denied and a path that cannot be created, each
    held for a while under load; then removed. The writer must back off without acking (errors grow
    logarithmically with time, not per loop) and both services must recover."""
    f = Faults()
    assert h.mount is not None
    hold = _storage_hold_secs(o)
    phases: list[tuple[str, Callable[[], contextlib.AbstractContextManager[None]]]] = [
        ("disk_full", lambda: _disk_full(h.mount)),  # type: ignore[arg-type]
        ("read_only", lambda: _read_only(h.mount)),  # type: ignore[arg-type]
        ("not_a_directory", lambda: _not_directories(h, hold)),
    ]
    if h.permissions_enforced:
        phases.insert(2, ("permission_denied", lambda: _permission_denied(h.data_dir)))
    else:
        f.notes["permission_denied"] = "skipped: root without setpriv ignores permissions"
    gap = _storage_gap_secs(o)
    for name, fault in phases:
        time.sleep(gap)
        w0 = h.metric("writer", "courier_writer_storage_errors_total") or 0
        c0 = h.metric("closer", "courier_closer_close_failures_total") or 0
        flushes0 = h.metric("writer", "courier_writer_flushes_total") or 0
        with fault():
            time.sleep(hold)
            werr = (h.metric("writer", "courier_writer_storage_errors_total") or 0) - w0
            cerr = (h.metric("closer", "courier_closer_close_failures_total") or 0) - c0
            flushed = (h.metric("writer", "courier_writer_flushes_total") or 0) - flushes0
        t0 = time.monotonic()
        closed0 = h.closed_buckets()

        def working(flushes0: float = flushes0 + flushed, closed0: int = closed0) -> bool:
            flushes = h.metric("writer", "courier_writer_flushes_total") or 0
            return flushes > flushes0 and h.closed_buckets() > closed0

        up = wait_for(working, RECOVERY_TIMEOUT_SECS)
        f.recovered(None if up is None else time.monotonic() - t0, f"removing {name}")
        f.notes[name] = {
            "hold_secs": hold,
            "writer_storage_errors": int(werr),
            "writer_flushes_during_fault": int(flushed),
            "closer_failures": int(cerr),
        }
        if werr == 0:
            f.problems.append(f"{name}: the writer saw no storage error (fault not effective?)")
        # Exponential backoff from 0.5 s: about log2(hold / 0.5) + 1 attempts, per type
        # buffer at most; a busy loop would make thousands.
        if werr > 4 * (hold + 2):
            f.problems.append(f"{name}: {int(werr)} writer storage errors in {hold}s (busy loop)")
        if cerr > 4 * hold / 0.3 + 10:
            f.problems.append(f"{name}: {int(cerr)} closer failures in {hold}s (busy loop)")
    return f


def _storage_hold_secs(o: Options) -> float:
    return 4.0 if o.quick else max(8.0, o.duration_secs / 6)


_STORAGE_PHASES = 4


def _storage_gap_secs(o: Options) -> float:
    return max(2.0, (o.duration_secs - _STORAGE_PHASES * _storage_hold_secs(o)) / 5)


def _storage_load_secs(o: Options) -> float:
    """Load must run through all the faults and their recoveries."""
    return (_STORAGE_PHASES + 1) * _storage_gap_secs(o) + _STORAGE_PHASES * (
        _storage_hold_secs(o) + 5.0
    )


@contextlib.contextmanager
def _disk_full(mount: Path) -> Iterator[None]:
    filler = _fill(mount)
    try:
        yield
    finally:
        filler.unlink()


@contextlib.contextmanager
def _read_only(mount: Path) -> Iterator[None]:
    _remount(mount, "ro")
    try:
        yield
    finally:
        _remount(mount, "rw")


# -- 7. transport outage ---------------------------------------------------------------


def outage(h: Harness, o: Options) -> Faults:
    """NATS down for longer than the client's first retries; gateways answer 503 with
    Retry-After meanwhile. Recovery = restart until an event of every type is acked."""
    f = Faults(expect_503=True)
    out_secs = 6.0 if o.quick else max(15.0, o.duration_secs / 3)
    time.sleep(max(2.0, (o.duration_secs - out_secs) / 2))
    h.nats[0].kill()
    time.sleep(out_secs)
    t0 = time.monotonic()
    h.nats[0].start()
    up = h.probe(RECOVERY_TIMEOUT_SECS)
    f.recovered(None if up is None else time.monotonic() - t0, "NATS coming back")
    f.notes["outage_secs"] = out_secs
    return f


# -- 8. clock --------------------------------------------------------------------------


def clock(h: Harness, o: Options) -> Faults:
    """The closer's clock ahead by 90 % of the allowed skew for half the run, then behind by
    as much: no bucket may close early (no event may arrive for a closed bucket). The
    writer reads no wall clock (buckets come from the transport's timestamps)."""
    f = Faults(expect_no_skew=True)
    skew = float(h.env["COURIER_MAX_CLOCK_SKEW_SECS"])
    for offset in (0.9 * skew, -0.9 * skew):
        h.restart_with("closer", {CLOCK_OFFSET_ENV: f"{offset:+.3f}"})
        f.injected += 1
        time.sleep(o.duration_secs / 2)
    f.notes["closer_clock_offsets_secs"] = [0.9 * skew, -0.9 * skew]
    return f


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Harness, Options], Faults]
    nodes: int = 1
    tmpfs: bool = False
    #: Share of the run's event rate (the clock scenario wants idle moments).
    rate_share: float = 1.0
    #: Seconds of load, when the faults need more than ``--duration`` to play out.
    load_secs: Callable[[Options], float] | None = None


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("gateway-kill", gateway_kill),
        Scenario("writer-kill", writer_kill),
        Scenario("closer-steps", closer_steps),
        Scenario("nats-kill", nats_kill),
        Scenario("cluster-leader", cluster_leader, nodes=3),
        Scenario("storage", storage, tmpfs=True, load_secs=_storage_load_secs),
        Scenario("outage", outage),
        Scenario("clock", clock, rate_share=0.1),
    )
}

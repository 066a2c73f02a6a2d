"""Helpers of the multi-DC tests: provision a :class:`~bench.topology.Topology`, publish
into a DC, and run the dashboard in the delivery region."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from bench.topology import Topology

from courier.model import INVALID_TYPE
from courier.schema import Registry
from courier.settings import load_settings
from courier.transport import SCHEMAS_KV, Transport, free_port, provision_base, provision_type
from courier_testing import (
    courier_process,
    example_definitions,
    settings_for,
    stop_process,
    wait_answering,
)

TYPE = "PlaySong"


async def provision(t: Topology, tmp_path: Path, central_only: tuple[str, ...] = ()) -> None:
    """Each DC's streams, then central's base buckets, schemas and sourcing streams.

    ``central_only`` types are registered and sourced at central but have no stream
    in any DC (their sources never start)."""
    for name, server in t.dcs.items():
        conn = await Transport.connect(server.url)
        try:
            for ty in (INVALID_TYPE, TYPE):
                await provision_type(conn, load_settings(data_dir=tmp_path / name), ty)
        finally:
            await conn.close()
    settings = load_settings(data_dir=tmp_path / "central", dc={"domains": list(t.domains)})
    central = await Transport.connect(t.central.url)
    try:
        await provision_base(central, settings)
        registry = Registry(await central.key_value(SCHEMAS_KV))
        await registry.apply(example_definitions(TYPE, *central_only))
        for ty in (INVALID_TYPE, TYPE, *central_only):
            await provision_type(central, settings, ty)
    finally:
        await central.close()


async def publish(url: str, n: int, prefix: str) -> None:
    """``n`` events of ``TYPE`` into the server at ``url`` (a DC's)."""
    conn = await Transport.connect(url)
    try:
        for i in range(n):
            await conn.publish_events(
                TYPE, b"{}", msg_id=f"{prefix}-{i}", headers={}, timeout_secs=5
            )
    finally:
        await conn.close()


@contextlib.contextmanager
def dashboard(t: Topology, data_dir: Path, **dc: Any) -> Iterator[str]:
    """``courier dashboard`` against central with ``[dc]`` naming the topology's DCs
    (``dc``: more ``[dc]`` settings); yields its base URL and stops it after."""
    port = free_port()
    settings = settings_for(
        data_dir,
        t.central.url,
        dc={"domains": list(t.domains), **dc},
        dashboard={"port": port, "refresh_secs": 0.5, "require_key": "off"},
    )
    proc = courier_process(settings, "dashboard")
    try:
        url = f"http://127.0.0.1:{port}/"
        asyncio.run(wait_answering(f"{url}healthz", proc))
        yield url
    finally:
        stop_process(proc)


Rows = dict[str, dict[str, Any]]


def dc_rows(url: str) -> Rows:
    """The dashboard's ``/api/dcs`` rows of ``TYPE``, by DC."""
    resp = httpx.get(f"{url}api/dcs", timeout=10)
    assert resp.status_code == 200, resp.text
    return {r["domain"]: r for r in resp.json()["rows"] if r["event_type"] == TYPE}


def wait_rows(url: str, done: Callable[[Rows], bool], timeout_secs: float = 60) -> Rows:
    """Poll ``/api/dcs`` until ``done(rows)``; fail with the last rows after the timeout."""
    deadline = time.monotonic() + timeout_secs
    while True:
        rows = dc_rows(url)
        if done(rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)


def caught_up(rows: Rows) -> bool:
    return bool(rows) and all(
        r["dc_last_seq"] is not None and r["stored"] == r["dc_last_seq"] for r in rows.values()
    )

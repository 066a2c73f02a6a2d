"""``courier dc status`` and ``courier dc watch``: the delivery region's view of each DC."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any, Protocol

import click

from courier.model import INVALID_TYPE
from courier.settings import Settings

#: How often ``courier dc watch`` looks for stalled sources.
WATCH_INTERVAL_SECS = 0.5
#: Longest one check may take (a probe per DC and the type's stream info and updates).
CHECK_DEADLINE_SECS = 30.0


class SettingsSource(Protocol):
    def settings(self, **more: Any) -> Settings: ...


@click.group()
def dc() -> None:
    """Several data centres: per-DC progress of the sourced streams, and the source nudger."""


async def _types(transport: Any) -> list[str]:
    from courier.schema import Registry
    from courier.transport import SCHEMAS_KV

    records = await Registry(await transport.key_value(SCHEMAS_KV)).list()
    return [INVALID_TYPE, *(r.name for r in records)]


async def _status(settings: Settings) -> list[dict[str, object]]:
    from courier.transport import Transport
    from courier.transport.sources import dc_progress

    transport = await Transport.connect(settings.resolved_nats_url, name="courier-dc")
    direct = {}
    try:
        for domain, url in settings.dc.nats_urls.items():
            direct[domain] = await Transport.connect(url, name="courier-dc")
        rows = []
        for t in await _types(transport):
            for p in await dc_progress(transport, settings, t, direct=direct):
                rows.append(
                    {
                        "type": t,
                        "dc": p.domain,
                        "stored_seq": p.stored_seq,
                        "dc_last_seq": p.dc_last_seq,
                        "behind_messages": p.behind_messages,
                        "behind_secs": p.behind_secs,
                        "source_idle_secs": p.source_idle_secs,
                        "caught_up": p.caught_up,
                    }
                )
        return rows
    finally:
        for c in (*direct.values(), transport):
            await c.close()


@dc.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def status(obj: SettingsSource, as_json: bool) -> None:
    """Per type and DC: sequences stored here, the DC's last, how far behind (exit 1 if any is)."""
    settings = obj.settings()
    if not settings.dc.domains:
        raise click.ClickException("no DCs configured: set [dc] domains in the settings")
    rows = asyncio.run(_status(settings))
    for r in rows:
        if as_json:
            click.echo(json.dumps(r))
            continue
        last = "unreachable" if r["dc_last_seq"] is None else r["dc_last_seq"]
        behind = r["behind_secs"]
        click.echo(
            f"{r['type']:24} {r['dc']:10} stored={r['stored_seq']} dc_last={last} "
            f"behind={r['behind_messages']} msgs "
            f"({'-' if behind is None else f'{behind:.1f}'} s) "
            f"{'ok' if r['caught_up'] else 'BEHIND'}"
        )
    if not all(r["caught_up"] for r in rows):
        raise SystemExit(1)


async def _watch(settings: Settings, stop: asyncio.Event) -> None:
    from courier.errors import CourierError
    from courier.transport import Transport
    from courier.transport.sources import SourceNudger

    transport = await Transport.connect(
        settings.resolved_nats_url, name="courier-dc-watch", wait_for_server_secs=10
    )
    try:
        nudger = SourceNudger(transport, settings)
        types: list[str] = []
        types_at = 0.0
        while not stop.is_set():
            try:
                # One deadline for the whole check: whatever a call does while central
                # restarts, the loop comes back and checks again.
                async with asyncio.timeout(CHECK_DEADLINE_SECS):
                    if time.monotonic() - types_at > 10:
                        types, types_at = await _types(transport), time.monotonic()
                    await nudger.check(types)
            except (CourierError, TimeoutError) as exc:
                what = str(exc) or f"a check took longer than {CHECK_DEADLINE_SECS:g}s"
                click.echo(f"courier dc watch: {what}; retrying", err=True)
            try:
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL_SECS)
            except TimeoutError:
                pass
    finally:
        await transport.close()


@dc.command("watch")
@click.pass_obj
def watch(obj: SettingsSource) -> None:
    """Run the source nudger: re-add a stalled source as soon as its DC answers again.

    nats-server alone resumes a source 30-40 s after its link returns; with this
    running in the delivery region, within about a second (README "Several data centres").
    """
    settings = obj.settings()
    if not settings.dc.domains:
        raise click.ClickException("no DCs configured: set [dc] domains in the settings")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await _watch(settings, stop)

    asyncio.run(main())

"""The delivery region sources each DC's stream: exactly once across link cuts and kill -9."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from bench.topology import CENTRAL, Topology

from courier.errors import ProvisioningError
from courier.settings import Settings, load_settings
from courier.transport import Transport, provision_type, stream_name, verify_type
from courier.transport.sources import (
    SOURCE_HEADER,
    SourceNudger,
    dc_progress,
    parse_source_header,
    readd_sources,
    source_key,
)

TYPE = "PlaySong"


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    with Topology(tmp_path / "topology") as t:
        yield t


def central_settings(tmp_path: Path, t: Topology, domains: tuple[str, ...]) -> Settings:
    return load_settings(
        data_dir=tmp_path / "central",
        nats_url=t.central.url,
        # Shorter than the cuts below, so central's own Nats-Msg-Id dedup cannot hide a copy.
        nats={"duplicate_window_secs": 1},
        dc={"domains": list(domains)},
    )


async def until(cond: Callable[[], Awaitable[bool]], what: str, timeout_secs: float = 90) -> None:
    deadline = time.monotonic() + timeout_secs
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_secs}s waiting for {what}")
        await asyncio.sleep(0.2)


async def stored_sources(central: Transport) -> Counter[tuple[str, int]]:
    """(source key, DC seq) of every message central holds, with multiplicity."""
    first, last = await central.stream_bounds(TYPE)
    seen: Counter[tuple[str, int]] = Counter()
    async for m in central.scan(TYPE, first, last):
        parsed = parse_source_header(m.headers.get(SOURCE_HEADER, ""))
        assert parsed is not None, f"message {m.seq} was not sourced"
        seen[parsed] += 1
    return seen


async def publish(dc: Transport, n: int, prefix: str) -> None:
    for i in range(n):
        await dc.publish_events(TYPE, b"{}", msg_id=f"{prefix}-{i}", headers={}, timeout_secs=5)


@pytest.fixture
async def linked(
    tmp_path: Path, topology: Topology
) -> AsyncIterator[tuple[Topology, Settings, dict[str, Transport]]]:
    """Each DC provisioned for its own gateways; central provisioned to source them."""
    conns = {dc: await Transport.connect(s.url) for dc, s in topology.dcs.items()}
    for dc, conn in conns.items():
        await provision_type(conn, load_settings(data_dir=tmp_path / dc), TYPE)
    settings = central_settings(tmp_path, topology, topology.domains)
    conns[CENTRAL] = await Transport.connect(topology.central.url)
    await provision_type(conns[CENTRAL], settings, TYPE)
    try:
        yield topology, settings, conns
    finally:
        for c in conns.values():
            await c.close()


async def test_every_dc_message_arrives_exactly_once_across_a_long_cut_and_a_central_kill(
    linked: tuple[Topology, Settings, dict[str, Transport]],
) -> None:
    t, settings, conns = linked
    central = conns[CENTRAL]
    nudger = SourceNudger(central, settings)
    await publish(conns["dcA"], 200, "a1")
    await publish(conns["dcB"], 200, "b1")

    t.cut("dcA")
    # A cut DC keeps accepting: 300 more, and the cut outlasts central's duplicate window.
    await publish(conns["dcA"], 300, "a2")
    await asyncio.sleep(settings.nats.duplicate_window_secs + 1)
    t.restore("dcA")
    await publish(conns["dcB"], 100, "b2")

    t.kill(CENTRAL)
    t.restart(CENTRAL)
    t.wait_linked()

    async def complete() -> bool:
        await nudger.check([TYPE])
        try:
            _, last = await central.stream_bounds(TYPE)
        except Exception:
            return False
        return last >= 800

    await until(complete, "central to hold all 800 DC messages", timeout_secs=150)
    seen = await stored_sources(central)
    assert max(seen.values()) == 1, "a DC message was stored twice"
    for dc, n in (("dcA", 500), ("dcB", 300)):
        # Each DC stored only its own publishes (the hub isolates leaf interest).
        assert (await conns[dc].stream_bounds(TYPE))[1] == n
        key = source_key(TYPE, dc)
        assert sorted(s for k, s in seen if k == key) == list(range(1, n + 1))
    await verify_type(central, settings, TYPE)


async def test_progress_shows_a_cut_off_dc_behind_and_caught_up_after(
    linked: tuple[Topology, Settings, dict[str, Transport]],
) -> None:
    t, settings, conns = linked
    central = conns[CENTRAL]
    await publish(conns["dcA"], 50, "a1")
    await publish(conns["dcB"], 50, "b1")

    async def caught_up() -> bool:
        return all(p.caught_up for p in await dc_progress(central, settings, TYPE))

    await until(caught_up, "both DCs caught up")

    t.cut("dcA")
    await publish(conns["dcA"], 30, "a2")
    direct = {"dcA": conns["dcA"]}
    by_dc = {p.domain: p for p in await dc_progress(central, settings, TYPE, direct=direct)}
    a, b = by_dc["dcA"], by_dc["dcB"]
    assert (a.stored_seq, a.dc_last_seq, a.behind_messages) == (50, 80, 30)
    assert not a.caught_up and a.behind_secs is not None and a.behind_secs >= 0
    assert b.caught_up and b.stored_seq == 50
    # Without a direct connection, a cut-off DC is unknown, never "caught up".
    a_blind = (await dc_progress(central, settings, TYPE))[0]
    assert a_blind.dc_last_seq is None and not a_blind.caught_up

    t.restore("dcA")
    nudger = SourceNudger(central, settings)

    async def a_caught_up() -> bool:
        await nudger.check([TYPE])
        return all(p.caught_up for p in await dc_progress(central, settings, TYPE))

    await until(a_caught_up, "dcA caught up after the link returned")
    a = (await dc_progress(central, settings, TYPE))[0]
    assert (a.stored_seq, a.dc_last_seq, a.behind_secs) == (80, 80, 0.0)


async def test_adding_a_dc_is_a_settings_change_and_a_provision(
    tmp_path: Path, topology: Topology
) -> None:
    conns = {dc: await Transport.connect(s.url) for dc, s in topology.dcs.items()}
    central = await Transport.connect(topology.central.url)
    try:
        for dc, conn in conns.items():
            await provision_type(conn, load_settings(data_dir=tmp_path / dc), TYPE)
        one = central_settings(tmp_path, topology, ("dcA",))
        two = central_settings(tmp_path, topology, ("dcA", "dcB"))
        await provision_type(central, one, TYPE)
        await provision_type(central, one, TYPE)  # idempotent
        await verify_type(central, one, TYPE)
        with pytest.raises(ProvisioningError, match="sources missing: COURIER_PlaySong via"):
            await verify_type(central, two, TYPE)
        await provision_type(central, two, TYPE)
        await verify_type(central, two, TYPE)
        await publish(conns["dcB"], 10, "b")

        async def b_arrived() -> bool:
            return (await central.stream_bounds(TYPE))[1] == 10

        await until(b_arrived, "dcB's messages at central")
    finally:
        for c in (*conns.values(), central):
            await c.close()


async def test_a_nudge_of_the_only_source_keeps_the_stream_subjectless_and_exact(
    tmp_path: Path, topology: Topology
) -> None:
    dc = await Transport.connect(topology.dcs["dcA"].url)
    central = await Transport.connect(topology.central.url)
    try:
        await provision_type(dc, load_settings(data_dir=tmp_path / "dcA"), TYPE)
        one = central_settings(tmp_path, topology, ("dcA",))
        await provision_type(central, one, TYPE)
        await publish(dc, 20, "a1")

        def arrived(n: int) -> Callable[[], Awaitable[bool]]:
            async def cond() -> bool:
                return (await central.stream_bounds(TYPE))[1] >= n

            return cond

        await until(arrived(20), "the first 20")
        await readd_sources(central, one, TYPE, ["dcA"])
        await verify_type(central, one, TYPE)  # no placeholder subject left behind
        await publish(dc, 20, "a2")
        await until(arrived(40), "the next 20")
        seen = await stored_sources(central)
        assert sorted(s for _, s in seen) == list(range(1, 41)) and max(seen.values()) == 1
    finally:
        await dc.close()
        await central.close()


async def test_a_source_lost_between_the_two_updates_of_a_nudge_is_restored_exactly(
    linked: tuple[Topology, Settings, dict[str, Transport]],
) -> None:
    _, settings, conns = linked
    central = conns[CENTRAL]
    await publish(conns["dcA"], 20, "a1")
    await publish(conns["dcB"], 20, "b1")

    async def holds(n: int) -> bool:
        return (await central.stream_bounds(TYPE))[1] >= n

    await until(lambda: holds(40), "the first 40")
    # A re-add removes the source, then adds it back: central (or the nudger) dying in
    # between leaves the stream without it, and nothing else would ever add it again.
    live = (await central.js.stream_info(stream_name(TYPE))).config
    kept = [s for s in live.sources or () if s.external and "dcA" not in s.external.api]
    await central.js.update_stream(live.evolve(sources=kept))
    with pytest.raises(ProvisioningError, match="sources missing"):
        await verify_type(central, settings, TYPE)
    await publish(conns["dcA"], 10, "a2")

    nudger = SourceNudger(central, settings)

    async def all_there() -> bool:
        await nudger.check([TYPE])
        return await holds(50)

    await until(all_there, "dcA's source restored and caught up")
    await verify_type(central, settings, TYPE)
    seen = await stored_sources(central)
    assert max(seen.values()) == 1
    assert sorted(s for k, s in seen if k == source_key(TYPE, "dcA")) == list(range(1, 31))

"""Several DCs: sourcing throughput and how long sourcing takes to resume after a fault.

``python -m bench.multidc`` starts a central hub and two DC leaf nodes (real
nats-server processes, ``sync_interval: always``, see :mod:`bench.topology`) and:

1. **throughput**: fills each DC's stream with ``--fill`` messages of
   ``--message-bytes``, then provisions central's sourcing stream and times how
   long central takes to store them all;
2. **resume** after each fault, with producers trickling ``--rate`` messages/s
   into each DC the whole time:

   * ``cut``: dcA's leaf link cut (proxy stopped) for ``--cut-secs``, then restored;
   * ``central``: ``kill -9`` of central, restarted after ``--down-secs``;
   * ``dc``: ``kill -9`` of dcA, restarted after ``--cut-secs``.

   Resume time = from the moment the link is up again (central sees the leaf
   connection) until central stores the first message of the affected DC it did
   not have; catch-up = until it holds everything the DC held at that moment.
   Each scenario runs ``--repeat`` times ``before`` (nats-server alone) and as
   often ``after`` (with :class:`courier.transport.sources.SourceNudger` checking
   every 0.5 s); the summary gives the median, the maximum and every run.

Every scenario ends with a check that central holds each DC sequence exactly once.
Figures are from one run on a shared machine: noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench._report import emit
from bench.topology import CENTRAL, Topology
from courier.errors import CourierError
from courier.settings import Settings, load_settings
from courier.transport import Transport, provision_type, stream_name
from courier.transport.sources import (
    SOURCE_HEADER,
    SourceNudger,
    newest_stored,
    parse_source_header,
    source_key,
)

TYPE = "PlaySong"
STREAM = stream_name(TYPE)
POLL_SECS = 0.2


class _Run:
    def __init__(self, t: Topology, settings: Settings, conns: dict[str, Transport]) -> None:
        self.t = t
        self.settings = settings
        self.conns = conns
        self.keys = {d: source_key(TYPE, d) for d in t.domains}
        self.published = Counter[str]()

    @property
    def central(self) -> Transport:
        return self.conns[CENTRAL]

    async def stored(self) -> dict[str, int]:
        """Newest DC sequence central holds, per DC (0 when none)."""
        try:
            found = await newest_stored(self.central, TYPE, self.keys, 10**9)
        except CourierError:
            return {}
        return {d: found.get(d, (0, 0.0))[0] for d in self.keys}

    async def dc_last(self, dc: str) -> int | None:
        try:
            return (await self.conns[dc].stream_bounds(TYPE))[1]
        except CourierError:
            return None

    async def trickle(self, dc: str, rate: float, body: bytes) -> None:
        """Publish ``rate`` messages/s into ``dc`` forever, retrying through outages."""
        i = 0
        while True:
            try:
                await self.conns[dc].publish_events(
                    TYPE, body, msg_id=f"{dc}-t-{i}", headers={}, timeout_secs=2
                )
                i += 1
                self.published[dc] += 1
            except CourierError:
                pass  # retried with the same id: the DC's duplicate window drops a copy
            await asyncio.sleep(1 / rate)

    async def until(self, what: str, timeout_secs: float, cond: object) -> float:
        """Monotonic time at which ``cond()`` (an async predicate) first held."""
        deadline = time.monotonic() + timeout_secs
        while True:
            if await cond():  # type: ignore[operator]
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout_secs}s")
            await asyncio.sleep(POLL_SECS)

    async def resume(
        self, dc: str, before: int, linked_at: float, timeout_secs: float
    ) -> tuple[float, float]:
        """(resume secs, catch-up secs) of ``dc`` from ``linked_at``."""

        async def dc_ahead() -> bool:
            last = await self.dc_last(dc)
            return last is not None and last > before

        dc_new_at = await self.until(f"{dc} has new messages", timeout_secs, dc_ahead)
        target = await self.dc_last(dc) or 0

        async def arrived() -> bool:
            return (await self.stored()).get(dc, 0) > before

        first_at = await self.until(f"central has new messages of {dc}", timeout_secs, arrived)

        async def caught_up() -> bool:
            return (await self.stored()).get(dc, 0) >= target

        done_at = await self.until(f"central caught up with {dc}", timeout_secs, caught_up)
        start = max(linked_at, dc_new_at)
        return first_at - start, done_at - start

    async def check_exactly_once(self, timeout_secs: float) -> int:
        """Wait until central has every DC message, then check each is there once."""

        async def complete() -> bool:
            stored = await self.stored()
            for dc in self.t.domains:
                last = await self.dc_last(dc)
                if last is None or stored.get(dc, 0) < last:
                    return False
            return True

        await self.until("central complete", timeout_secs, complete)
        first, last = await self.central.stream_bounds(TYPE)
        seen: Counter[tuple[str, int]] = Counter()
        # One direct read per message, not a scan: this check must not share the
        # reading code it could be fooled by.
        for seq in range(first, last + 1):
            raw = await self.central.js.get_msg(STREAM, seq=seq)
            parsed = parse_source_header((raw.headers or {}).get(SOURCE_HEADER, ""))
            if parsed is not None:
                seen[parsed] += 1
        scanned = 0
        async for _ in self.central.scan(TYPE, first, last):
            scanned += 1
        if scanned != sum(seen.values()):
            print(f"note: a scan read {scanned} of {sum(seen.values())} messages", flush=True)
        doubled = sum(n - 1 for n in seen.values() if n > 1)
        if doubled:
            raise AssertionError(f"{doubled} DC messages stored twice at central")
        for dc, key in self.keys.items():
            seqs = sorted(s for k, s in seen if k == key)
            dc_last = await self.dc_last(dc) or 0
            if seqs != list(range(1, dc_last + 1)):
                missing = sorted(set(range(1, dc_last + 1)) - set(seqs))
                info = await self.conns[dc].js.stream_info(STREAM)
                raise AssertionError(
                    f"central holds {len(seqs)} of {dc}'s messages (seqs {seqs[:1]}..{seqs[-1:]}),"
                    f" lacks {len(missing)} of {dc}'s 1..{dc_last}: {missing[:20]}; "
                    f"{dc} stream state {info.state}; published {self.published[dc]}"
                )
        return sum(seen.values())


async def _connect(t: Topology) -> dict[str, Transport]:
    conns = {dc: await Transport.connect(s.url) for dc, s in t.dcs.items()}
    conns[CENTRAL] = await Transport.connect(t.central.url)
    return conns


async def _fill(conn: Transport, n: int, prefix: str, body: bytes) -> None:
    batch = 256
    for lo in range(0, n, batch):
        await asyncio.gather(
            *(
                conn.publish_events(TYPE, body, msg_id=f"{prefix}-{i}", headers={}, timeout_secs=30)
                for i in range(lo, min(n, lo + batch))
            )
        )


async def throughput(root: Path, fill: int, body: bytes) -> dict[str, object]:
    with Topology(root / "throughput") as t:
        conns = await _connect(t)
        try:
            for dc in t.domains:
                await provision_type(conns[dc], load_settings(data_dir=root / dc), TYPE)
            await asyncio.gather(*(_fill(conns[dc], fill, dc, body) for dc in t.domains))
            settings = load_settings(data_dir=root / CENTRAL, dc={"domains": list(t.domains)})
            start = time.monotonic()
            await provision_type(conns[CENTRAL], settings, TYPE)
            total = fill * len(t.domains)

            async def all_there() -> bool:
                return (await conns[CENTRAL].stream_bounds(TYPE))[1] >= total

            run = _Run(t, settings, conns)
            end = await run.until("sourcing throughput", 600, all_there)
            await run.check_exactly_once(60)
        finally:
            for c in conns.values():
                await c.close()
    secs = end - start
    return {
        "sourced_messages": total,
        "sourced_secs": round(secs, 2),
        "sourced_messages_per_sec": round(total / secs),
        "sourced_mb_per_sec": round(total * len(body) / secs / 1e6, 1),
    }


async def scenario(
    root: Path, name: str, *, nudge: bool, cut_secs: float, down_secs: float, rate: float
) -> dict[str, float]:
    body = b'{"track_id":"t1","ms_played":1}\n' * 10
    with Topology(root / f"{name}-{'after' if nudge else 'before'}") as t:
        conns = await _connect(t)
        settings = load_settings(
            data_dir=root / CENTRAL,
            nats={"duplicate_window_secs": 5},
            dc={"domains": list(t.domains)},
        )
        run = _Run(t, settings, conns)
        tasks = []
        try:
            for dc in t.domains:
                await provision_type(conns[dc], load_settings(data_dir=root / dc), TYPE)
            await provision_type(conns[CENTRAL], settings, TYPE)
            tasks = [asyncio.create_task(run.trickle(dc, rate, body)) for dc in t.domains]
            if nudge:
                tasks.append(asyncio.create_task(_nudge_forever(conns[CENTRAL], settings)))

            async def flowing() -> bool:
                return all(v > 0 for v in (await run.stored()).values()) and bool(
                    await run.stored()
                )

            await run.until("sourcing starts", 60, flowing)
            out: dict[str, float] = {}
            if name == "cut":
                t.cut("dcA")
                await asyncio.sleep(cut_secs)
                before = (await run.stored())["dcA"]
                t.restore("dcA")
                await asyncio.to_thread(t.wait_linked, 60)
                linked = time.monotonic()
                out["resume_secs"], out["catch_up_secs"] = await run.resume(
                    "dcA", before, linked, 300
                )
            elif name == "central":
                t.kill(CENTRAL)
                await asyncio.sleep(down_secs)
                await asyncio.to_thread(t.restart, CENTRAL)
                await asyncio.to_thread(t.wait_linked, 60)
                linked = time.monotonic()
                stored = await run.stored()
                times = [await run.resume(dc, stored.get(dc, 0), linked, 300) for dc in t.domains]
                out["resume_secs"] = max(r for r, _ in times)
                out["catch_up_secs"] = max(c for _, c in times)
            elif name == "dc":
                t.kill("dcA")
                await asyncio.sleep(cut_secs)
                await asyncio.to_thread(t.restart, "dcA")
                await asyncio.to_thread(t.wait_linked, 60)
                linked = time.monotonic()
                before = (await run.stored())["dcA"]
                out["resume_secs"], out["catch_up_secs"] = await run.resume(
                    "dcA", before, linked, 300
                )
            # Stop the producers for good before checking: a publish in flight when the
            # check began would land in the DC after it and look missing at central.
            for task in tasks:
                task.cancel()
            for r in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(r, Exception):
                    print(f"note: a producer task had stopped early: {r!r}", flush=True)
            tasks = []
            await asyncio.sleep(1)  # a publish sent just before the cancel lands in its DC
            try:
                out["messages_checked"] = float(await run.check_exactly_once(300))
                out["check_failed"] = 0.0
            except AssertionError as exc:
                # Recorded, not raised: the other runs' figures still matter.
                print(f"CHECK FAILED ({name}, nudge={nudge}, {t.root}): {exc}", flush=True)
                out["messages_checked"], out["check_failed"] = 0.0, 1.0
            return out
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for c in conns.values():
                await c.close()


async def _nudge_forever(central: Transport, settings: Settings) -> None:
    nudger = SourceNudger(central, settings)
    while True:
        with contextlib.suppress(CourierError):
            await nudger.check([TYPE])
        await asyncio.sleep(0.5)


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    summary: dict[str, object] = {}
    root = Path(tempfile.mkdtemp(prefix="courier-multidc-"))
    print(f"working in {root}", flush=True)
    try:
        if args.fill:
            body = b"x" * args.message_bytes
            summary.update(await throughput(root, args.fill, body))
        for name in [n for n in args.scenarios.split(",") if n]:
            for mode in args.modes.split(","):
                runs: dict[str, list[float]] = {}
                for i in range(args.repeat):
                    res = await scenario(
                        root / f"run{i}",
                        name,
                        nudge=mode == "after",
                        cut_secs=args.cut_secs,
                        down_secs=args.down_secs,
                        rate=args.rate,
                    )
                    print(f"{name} {mode} #{i + 1}: {res}", flush=True)
                    for k, v in res.items():
                        runs.setdefault(k, []).append(v)
                for k in ("resume_secs", "catch_up_secs"):
                    vals = sorted(runs[k])
                    summary[f"{name}_{mode}_{k}_median"] = round(statistics.median(vals), 2)
                    summary[f"{name}_{mode}_{k}_max"] = round(vals[-1], 2)
                summary[f"{name}_{mode}_resume_secs_runs"] = " ".join(
                    f"{v:.1f}" for v in runs["resume_secs"]
                )
                summary[f"{name}_{mode}_messages_checked"] = int(sum(runs["messages_checked"]))
                summary[f"{name}_{mode}_check_failures"] = int(sum(runs["check_failed"]))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.multidc", description=__doc__)
    p.add_argument("--fill", type=int, default=20_000, help="messages per DC (0: skip)")
    p.add_argument("--message-bytes", type=int, default=1000)
    p.add_argument("--scenarios", default="cut,central,dc")
    p.add_argument("--modes", default="before,after")
    p.add_argument("--cut-secs", type=float, default=20.0)
    p.add_argument("--down-secs", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=20.0, help="messages/s into each DC")
    p.add_argument("--keep", action="store_true", help="keep the servers' directories")
    p.add_argument("--repeat", type=int, default=3, help="runs of each scenario and mode")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("courier.transport.sources").setLevel(logging.INFO)
    emit("several DCs: sourcing", asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()

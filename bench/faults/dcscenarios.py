"""Fault scenarios on several DCs (issue 12): two DCs plus the delivery region, on this machine.

* ``dc-link-cut``: dcA's leaf link cut (its TCP proxy stopped) for longer than
  the delivery region's duplicate window; dcA keeps accepting meanwhile;
* ``dc-central-kill``: ``kill -9`` of the delivery region's nats-server;
* ``dc-kill``: ``kill -9`` of dcA's nats-server (its gateway answers 503);
* ``dc-failover``: a producer with both DCs' gateways (the SDK's policy,
  :class:`courier.sdk.delivery.GatewayClient`) loses dcA's gateway to
  ``kill -9`` mid-run, fails over to dcB, and fails back once dcA returns;
  three batches whose answers dcA lost are retried to dcB after central's
  duplicate window, so both DCs store them and the closer must drop one copy.

Run, per scenario (:func:`run_dc_scenario`):

1. start the topology and the processes (:class:`DcHarness`);
2. run one load generator per DC against that DC's gateway (ledger of every
   acked id), and inject the faults meanwhile;
3. once the load is over: probe every gateway, wait until the delivery region
   holds every message of every DC stream (per-DC progress from the stored
   ``Nats-Stream-Source`` sequences), then until every bucket up to that moment
   is closed;
4. check that each DC sequence is stored exactly once in the delivery region
   (:func:`courier.audit.dc.audit_dc_sources`), stop everything and verify
   the closed buckets against the ledger: 0 lost, 0 duplicated.

Waits are on conditions; the only fixed durations are how long a fault lasts.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.faults.dcharness import CENTRAL, DcHarness
from bench.faults.harness import wait_for
from bench.faults.runner import CLOSE_TIMEOUT_SECS, _client_view
from bench.faults.scenarios import RECOVERY_TIMEOUT_SECS, Faults, Options, _fault_times
from bench.loadgen import LoadConfig, LoadResult, run_load, verify
from bench.loadgen.events import Batch, BatchFactory
from bench.loadgen.ledger import Ledger
from courier.audit.dc import audit_dc_sources
from courier.sdk.delivery import DeliveryPolicy, DeliveryStopped, GatewayClient
from courier.transport import Transport

CUT_DC = "dcA"


def _resumed(h: DcHarness, what: str, f: Faults, t0: float) -> None:
    """Wait until central holds every DC message that existed once the fault ended."""
    up = h.wait_central_holds_now(RECOVERY_TIMEOUT_SECS, 0.2)
    f.recovered(time.monotonic() - t0 if up else None, what)


# -- a. the link to a DC cut -----------------------------------------------------------


def dc_link_cut(h: DcHarness, o: Options) -> Faults:
    """Cut dcA's link for longer than central's duplicate window, restore it. dcA must keep
    acknowledging events during the cut. Recovery = restore until central holds every
    message dcA (and dcB) held at that moment."""
    f = Faults()
    f.expect_dc_alert = True
    cut_secs = max(3.0 * h.duplicate_window_secs, 6.0 if o.quick else o.duration_secs / 3)
    cuts = 1 if o.quick else 2
    accepted_during_cut = []
    for _ in _fault_times(o, cuts):
        h.topology.cut(CUT_DC)
        started = time.monotonic()
        # A cut-off DC keeps answering 2xx for what it stores (DESIGN §13).
        accepted_during_cut.append(h.probe(cut_secs, h.gateway_urls[CUT_DC]) is not None)
        time.sleep(max(0.0, cut_secs - (time.monotonic() - started)))
        h.topology.restore(CUT_DC)
        t0 = time.monotonic()
        _resumed(h, f"restoring {CUT_DC}'s link", f, t0)
    if not all(accepted_during_cut):
        f.problems.append(f"{CUT_DC}'s gateway did not acknowledge events while cut off")
    f.notes["cut_secs"] = cut_secs
    f.notes["central_duplicate_window_secs"] = h.duplicate_window_secs
    return f


# -- b. kill -9 of central -------------------------------------------------------------


def dc_central_kill(h: DcHarness, o: Options) -> Faults:
    """``kill -9`` the delivery region's nats-server, restart it after 2 s. Recovery =
    restart until central holds every DC message that existed then."""
    f = Faults()
    kills = 1 if o.quick else max(2, int(o.duration_secs / 15))
    for _ in _fault_times(o, kills):
        h.kill_server(CENTRAL)
        time.sleep(2.0)
        h.restart_server(CENTRAL)
        t0 = time.monotonic()
        _resumed(h, "a central kill", f, t0)
    return f


# -- c. kill -9 of a DC ----------------------------------------------------------------


def dc_kill(h: DcHarness, o: Options) -> Faults:
    """``kill -9`` dcA's nats-server; its gateway answers 503 with Retry-After; restart it
    after 3 s. Recovery = restart until dcA's gateway acknowledges events again and central
    holds every DC message that existed then."""
    f = Faults(expect_503=True)
    kills = 1 if o.quick else max(2, int(o.duration_secs / 15))
    for _ in _fault_times(o, kills):
        h.kill_server(CUT_DC)
        time.sleep(3.0)
        h.restart_server(CUT_DC)
        t0 = time.monotonic()
        if h.probe(RECOVERY_TIMEOUT_SECS, h.gateway_urls[CUT_DC]) is None:
            f.recovered(None, f"restarting {CUT_DC}")
            continue
        _resumed(h, f"restarting {CUT_DC}", f, t0)
    return f


# -- d. a producer failing over to another DC ------------------------------------------


def _events(batch: Batch) -> list[bytes]:
    """The events of a load generator batch, one JSON object each (what the SDK sends)."""
    return [json.dumps(e, separators=(",", ":")).encode() for e in json.loads(batch.body)["events"]]


def _answers_lost_in_dca(h: DcHarness, f: Faults) -> tuple[list[Batch], float]:
    """Batches dcA's gateway stores while their answers are lost (the client never sees
    them; nothing enters the ledger yet); and when central has stored them.

    Central's duplicate window runs from its own store of dcA's copy, not dcA's: timed
    from dcA's, a retry could reach central inside the window while sourcing lagged
    (two CPU burners), be dropped there by its ``Nats-Msg-Id``, and leave the retrying
    DC's sequence missing at central (seen once: 0 lost, but a DC sequence missing)."""
    factory = BatchFactory(types=h.types, batch_events=20)
    batches = [factory.next() for _ in range(3)]
    for b in batches:
        r = httpx.post(
            f"{h.gateway_urls[CUT_DC]}/v1/events",
            content=b.body,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        if r.status_code != 200:
            f.problems.append(f"{CUT_DC}'s gateway did not store a batch: {r.status_code}")
    if not h.wait_central_holds_now(RECOVERY_TIMEOUT_SECS, 0.05, dcs={CUT_DC}):
        f.problems.append(f"central did not store {CUT_DC}'s batches whose answers were lost")
    return batches, time.monotonic()


def _retry_lost_answers(h: DcHarness, batches: list[Batch], f: Faults) -> int:
    """The client retries the batches whose answers it lost, with the SDK's policy: dcA's
    gateway is down, so they go to dcB. Their ids are then stored by both DCs; the closer
    (not central's duplicate window, long passed) must deliver each once. Events acked."""
    policy = DeliveryPolicy(
        gateway_url=",".join(h.gateway_urls.values()),
        compression="none",
        request_timeout_secs=10.0,
        backoff_initial_secs=0.1,
        backoff_max_secs=1.0,
    )
    client = GatewayClient(policy)
    acked = 0
    try:
        with Ledger(h.ledger_dir, "lost-answers") as ledger:
            for b in batches:
                bad = {r.index for r in client.deliver(_events(b))}
                ledger.acked_keys(
                    b"".join(b.keys[i * 16 : (i + 1) * 16] for i in range(b.count) if i not in bad)
                )
                acked += b.count - len(bad)
            if client.gateway_url != h.gateway_urls["dcB"]:
                f.problems.append("the retried batches did not go to dcB")
    finally:
        client.close()
    return acked


class FailoverProducer(threading.Thread):
    """One producer with the SDK's delivery policy over both DCs' gateways, dcA first.

    Each batch is delivered with :meth:`GatewayClient.deliver` (which fails over and
    back by itself); its accepted ids go to the ledger once it returns, and the
    gateway that took it is counted. A batch interrupted by :meth:`stop` is recorded
    as outcome-unknown.
    """

    def __init__(self, h: DcHarness, *, batches_per_sec: float, failback_secs: float) -> None:
        super().__init__(name="failover-producer", daemon=True)
        self.h = h
        self.interval_secs = 1.0 / batches_per_sec
        self.policy = DeliveryPolicy(
            gateway_url=",".join(h.gateway_urls.values()),
            compression="none",
            request_timeout_secs=10.0,
            backoff_initial_secs=0.1,
            backoff_max_secs=1.0,
            failback_secs=failback_secs,
        )
        self._stop_event = threading.Event()
        self.by_gateway: Counter[str] = Counter()
        self.acked_events = 0
        #: (monotonic time, gateway) of every delivered batch.
        self.deliveries: list[tuple[float, str]] = []
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def run(self) -> None:
        factory = BatchFactory(types=self.h.types, batch_events=20)
        client = GatewayClient(self.policy, stop=self._stop_event)
        try:
            with Ledger(self.h.ledger_dir, "failover") as ledger:
                while not self._stop_event.is_set():
                    batch = factory.next()
                    events = _events(batch)
                    try:
                        rejected = client.deliver(events)
                    except DeliveryStopped:
                        ledger.unknown_keys(batch.keys)
                        return
                    bad = {r.index for r in rejected}
                    keys = b"".join(
                        batch.keys[i * 16 : (i + 1) * 16]
                        for i in range(batch.count)
                        if i not in bad
                    )
                    ledger.acked_keys(keys)
                    self.acked_events += batch.count - len(bad)
                    self.by_gateway[client.gateway_url] += 1
                    self.deliveries.append((time.monotonic(), client.gateway_url))
                    self._stop_event.wait(self.interval_secs)
        except BaseException as exc:  # reported by the scenario, never swallowed
            self.error = exc
        finally:
            client.close()


def dc_failover(h: DcHarness, o: Options) -> Faults:
    """A producer listing dcA's then dcB's gateway; ``kill -9`` dcA's gateway, keep it down,
    restart it. Recovery = kill until the producer's next batch is acknowledged (by dcB);
    it must also fail back to dcA after dcA returns. Before the first kill, dcA stores
    three batches whose answers are lost; the client retries them (to dcB) after
    central's duplicate window: stored by both DCs, they must be delivered once."""
    f = Faults()
    hold_secs = 4.0 if o.quick else 10.0
    failback_secs = 2.0
    producer = FailoverProducer(h, batches_per_sec=10.0, failback_secs=failback_secs)
    producer.start()
    name = f"gateway-{CUT_DC}"
    a_url, b_url = h.gateway_urls[CUT_DC], h.gateway_urls["dcB"]
    kills = 1 if o.quick else 2
    copies = 0
    try:
        for i in _fault_times(o, kills):
            lost = _answers_lost_in_dca(h, f) if i == 0 else None
            h.kill9_and_hold(name)
            t0 = time.monotonic()
            before = len(producer.deliveries)

            def went_to_b(before: int = before) -> bool:
                return any(g == b_url for _, g in producer.deliveries[before:])

            up = wait_for(went_to_b, RECOVERY_TIMEOUT_SECS, 0.05)
            f.recovered(None if up is None else time.monotonic() - t0, "killing dcA's gateway")
            if lost is not None:
                # The client retries once central's duplicate window has passed since dcA
                # stored them (a fault parameter: how late the retry comes).
                batches, stored_at = lost
                time.sleep(max(0.0, stored_at + h.duplicate_window_secs + 1 - time.monotonic()))
                copies += _retry_lost_answers(h, batches, f)
            time.sleep(max(0.0, hold_secs - (time.monotonic() - t0)))
            h.release(name)
            back = len(producer.deliveries)

            def back_on_a(back: int = back) -> bool:
                return any(g == a_url for _, g in producer.deliveries[back:])

            if wait_for(back_on_a, RECOVERY_TIMEOUT_SECS, 0.1) is None:
                f.problems.append(f"the producer never failed back to {CUT_DC}'s gateway")
    finally:
        producer.stop()
    if producer.error is not None:
        f.problems.append(f"the failover producer failed: {producer.error!r}")
    f.notes["failover_batches_by_gateway"] = {
        dc: producer.by_gateway[url] for dc, url in h.gateway_urls.items()
    }
    f.notes["failover_acked_events"] = producer.acked_events
    f.notes["events_stored_by_both_dcs"] = copies
    return f


@dataclass(frozen=True)
class DcScenario:
    name: str
    run: Callable[[DcHarness, Options], Faults]


DC_SCENARIOS: dict[str, DcScenario] = {
    s.name: s
    for s in (
        DcScenario("dc-link-cut", dc_link_cut),
        DcScenario("dc-central-kill", dc_central_kill),
        DcScenario("dc-kill", dc_kill),
        DcScenario("dc-failover", dc_failover),
    )
}


def _exact_per_dc(h: DcHarness) -> dict[str, dict[str, object]]:
    """Per type and DC: sequences missing or stored twice in the delivery region."""

    async def check() -> dict[str, dict[str, object]]:
        central = await Transport.connect(h.nats_url)
        direct = {dc: await Transport.connect(s.url) for dc, s in h.topology.dcs.items()}
        try:
            out: dict[str, dict[str, object]] = {}
            for t in h.names:
                for c in await audit_dc_sources(central, h.settings, t, direct=direct):
                    out[f"{t}/{c.domain}"] = {
                        "stored": c.stored,
                        "dc_last_seq": c.dc_last_seq,
                        "missing": c.missing,
                        "repeated": c.repeated,
                    }
            return out
        finally:
            for conn in (*direct.values(), central):
                await conn.close()

    return asyncio.run(check())


def run_dc_scenario(
    name: str, opts: Options, *, workdir: Path | None = None, keep: bool = False
) -> dict[str, object]:
    """Run one multi-DC scenario; the result row (the fields of ``bench.faults`` rows)."""
    scenario = DC_SCENARIOS[name]
    root = Path(tempfile.mkdtemp(prefix=f"courier-faults-{name}-", dir=workdir))
    faults = Faults()
    row: dict[str, object] = {"scenario": name}
    results: dict[str, LoadResult] = {}
    exact: dict[str, dict[str, object]] = {}
    try:
        h = DcHarness(root)
        try:
            h.start()
            loads = []
            for dc, url in h.gateway_urls.items():
                cfg = LoadConfig(
                    url=url,
                    duration_secs=opts.duration_secs,
                    rate_events_per_s=opts.rate_events_per_s / len(h.gateway_urls),
                    types=h.types,
                    concurrency=8,
                    duplicate_rate=0.01,
                    ledger_dir=h.ledger_dir,
                    ledger_prefix=f"{dc}-",
                    retry_budget_secs=120.0,
                )

                def one(cfg: LoadConfig = cfg, dc: str = dc) -> None:
                    results[dc] = run_load(cfg)

                loads.append(threading.Thread(target=one, name=f"load-{dc}", daemon=True))
            t0 = time.time()
            for t in loads:
                t.start()
            faults = scenario.run(h, opts)
            for t in loads:
                t.join()
            last_ack = time.time()
            if h.probe_all(CLOSE_TIMEOUT_SECS) is None:
                faults.problems.append("a DC's gateway did not accept events after the faults")
            if wait_for(h.caught_up, CLOSE_TIMEOUT_SECS, 0.3) is None:
                faults.problems.append("the delivery region never caught up with every DC")
            all_closed = h.wait_all_closed(time.time(), CLOSE_TIMEOUT_SECS)
            drain = time.time() - last_ack
            exact = _exact_per_dc(h)
            auditor = _auditor_view(h)
            skewed, dups_removed, dups_other_buckets = h.bucket_totals()
            nudges = _nudges(h)
        finally:
            h.close()
        delays = transfer_delays(h)
        per_dc = manifest_dcs(h)
        report = verify(h.ledger_dir, h.data_dir, bucket_width_secs=h.width, event_types=h.names)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    result = LoadResult()
    for r in results.values():
        result.merge(r)
    client = _client_view(result)
    if faults.expect_503 and not client["http_503"]:
        faults.problems.append("the client never saw a 503 during the outage")
    if client["missing_retry_after"]:
        faults.problems.append("some 429/503 answers had no Retry-After")
    if not all_closed:
        faults.problems.append("not every bucket closed in time")
    if client["rejected_events"]:
        faults.problems.append(f"{client['rejected_events']} valid events were rejected")
    if auditor["missing"] or auditor["repeated"]:
        faults.problems.append(f"the auditor reports DC sequences missing or repeated: {auditor}")
    if auditor["behind"] is None or auditor["behind"] > 0:
        faults.problems.append(f"the auditor never saw every DC caught up: {auditor}")
    if faults.expect_dc_alert and not auditor["delay_breaches"]:
        faults.problems.append("the auditor raised no DC transfer delay alert during the fault")
    for dc, d in delays.items():
        if d["wrong_received_dc"]:
            faults.problems.append(f"{d['wrong_received_dc']} events {dc} accepted name another DC")
    if sum(d["events"] for d in per_dc.values()) != report.delivered_rows:
        faults.problems.append(
            f"the manifests' per-DC events {per_dc} do not add up to the buckets'"
        )
    for key, c in exact.items():
        if c["missing"] or c["repeated"]:
            faults.problems.append(f"{key}: DC sequences missing or repeated at central: {c}")
    ok = report.ok and result.acked_events > 0 and not faults.problems
    return {
        **row,
        "ok": ok,
        **report.ledger_row(),
        "faults": faults.injected,
        "recovery_max_secs": max(faults.recovery_secs) if faults.recovery_secs else None,
        "recovery_secs": faults.recovery_secs,
        **client,
        "skewed": skewed,
        "duplicates_removed": dups_removed,
        "duplicates_removed_other_buckets": dups_other_buckets,
        "open_buckets": report.open_buckets,
        "load_secs": round(last_ack - t0, 1),
        "drain_secs": round(drain, 1),
        "events_per_s": round(result.events_per_s, 1),
        "notes": {
            **faults.notes,
            "nudges": nudges,
            "auditor": auditor,
            "transfer_delays": delays,
            "manifest_dcs": per_dc,
            "dc_sequences": exact,
        },
        "problems": faults.problems,
    }


def _auditor_view(h: DcHarness) -> dict[str, float | None]:
    """The auditor's per-DC metrics once it has seen every DC caught up (its own view,
    next to this runner's): missing and repeated sequences, delay alerts raised."""

    def behind() -> float | None:
        return h.metric("auditor", "courier_audit_dc_behind_messages")

    wait_for(lambda: behind() == 0, CLOSE_TIMEOUT_SECS / 2, 0.3)
    return {
        "behind": behind(),
        "missing": h.metric("auditor", "courier_audit_dc_missing_sequences"),
        "repeated": h.metric("auditor", "courier_audit_dc_repeated_sequences"),
        "delay_breaches": h.metric("auditor", "courier_audit_dc_delay_breaches_total"),
    }


def transfer_delays(h: DcHarness) -> dict[str, dict[str, float]]:
    """Per DC, ``published_at - received_at`` (delivery-region store time minus the DC
    gateway's receive time) of the events its own load generator sent, read back from
    the closed buckets: p50, p99 and max in seconds, and how many of them name another
    DC (or none) in ``received_dc`` (must be 0). The failover producer's events are
    left out (they are in either DC)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from bench.loadgen.ledger import read_keys
    from bench.loadgen.verify import keys_of
    from courier.storage import BucketReader, Layout

    layout = Layout(h.data_dir, h.width)
    reader = BucketReader(h.data_dir, h.width)
    keys, delays, dcs = [], [], []
    for t in h.names:
        for start in layout.closed_bucket_starts(t):
            table = reader.read(
                t,
                start,
                start + h.width,
                columns=["id", "received_at", "published_at", "received_dc"],
            )
            if not table.num_rows:
                continue
            keys.append(keys_of(table.column("id")))
            secs = pc.divide(
                pc.cast(
                    pc.subtract(table.column("published_at"), table.column("received_at")),
                    pa.int64(),
                ),
                1e6,
            )
            delays.append(secs.to_numpy())
            dcs.append(pc.fill_null(table.column("received_dc"), "").to_numpy(zero_copy_only=False))
    if not keys:
        return {}
    all_keys, all_delays = np.concatenate(keys), np.concatenate(delays)
    all_dcs = np.concatenate(dcs)
    out = {}
    for dc in h.gateway_urls:
        files = sorted(h.ledger_dir.glob(f"acked-{dc}-*.ids"))
        mine = np.concatenate([read_keys(f) for f in files]) if files else all_keys[:0]
        found = np.isin(all_keys, mine)
        d = all_delays[found]
        if len(d):
            out[dc] = {
                "events": len(d),
                "p50_secs": round(float(np.percentile(d, 50)), 3),
                "p99_secs": round(float(np.percentile(d, 99)), 3),
                "max_secs": round(float(d.max()), 3),
                "wrong_received_dc": int((all_dcs[found] != dc).sum()),
            }
    return out


def manifest_dcs(h: DcHarness) -> dict[str, dict[str, float]]:
    """Per DC, what the closed buckets' manifests say: events (all of them, the failover
    producer's included), the largest per-bucket p50/p99 and the max transfer delay."""
    from courier.storage import BucketReader

    reader = BucketReader(h.data_dir, h.width)
    out: dict[str, dict[str, float]] = {}
    for b in (b for t in h.names for b in reader.states(t) if b.state == "closed"):
        for name, d in b.dcs.items():
            row = out.setdefault(
                name, {"events": 0, "worst_p50_secs": 0.0, "worst_p99_secs": 0.0, "max_secs": 0.0}
            )
            row["events"] += d.events
            row["worst_p50_secs"] = max(row["worst_p50_secs"], d.transfer_delay_p50_secs)
            row["worst_p99_secs"] = max(row["worst_p99_secs"], d.transfer_delay_p99_secs)
            row["max_secs"] = max(row["max_secs"], d.transfer_delay_max_secs)
    return out


def _nudges(h: DcHarness) -> int:
    """Sources ``courier dc watch`` re-added, from its log."""
    try:
        text = (h.logs_dir / "dc-watch.log").read_text(errors="replace")
    except OSError:
        return -1
    return text.count("nudged the source")

"""Exact completeness per DC: every DC sequence reaches the delivery region exactly once.

With several DCs (DESIGN §13) the delivery region's stream of a type sources the
stream of the same name in each DC, and every sourced message carries
``Nats-Stream-Source: <stream>:<hash of the DC> <DC seq> …``. Counts alone cannot
tell a lost message from a doubled one that makes up for it, so the check is by
sequence, per (type, DC):

1. read the delivery region's stream (headers only) from the sequence after the
   last one read, and file each message under its DC by the source header
   (:class:`SourceTally`): a DC sequence above the highest seen opens a gap for
   the ones skipped, one inside a gap closes that part of it, any other one at or
   below the highest seen is a **repeat**;
2. the gaps still open are **missing** sequences. The tally expects the DC's
   sequence 1 first when the delivery region's stream has never dropped a
   message (its first sequence is 1); otherwise it starts at the first it sees;
3. against the DC stream's last sequence (asked over the leaf link, or directly
   through ``dc.nats_urls``): messages behind, the age of the DC's oldest message
   not yet stored here, and the transfer delay of the newest one stored (its
   store time here minus its store time in the DC). The source's own ``lag``
   is not used (stale while a link is down).

:class:`DcAuditor` keeps the tallies between checks (the auditor service reads only
new messages each time; after a restart it reads the retained stream once) and
raises the alerts: a metric and one log line when a DC starts breaching
``dc.max_transfer_delay_secs``, when it becomes unreachable, and for every new
missing or repeated sequence. :func:`audit_dc_sources` does one full pass for
``courier audit``; :class:`DcChecker` (the dashboard's) keeps the tallies without the
metrics and alerts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import nats.errors
from prometheus_client import CollectorRegistry, Counter, Gauge

from courier.errors import CourierError
from courier.settings import Settings
from courier.transport import MessageLike, Transport
from courier.transport.names import stream_name
from courier.transport.sources import (
    SOURCE_HEADER,
    DcProgress,
    dc_progress,
    link_answers,
    parse_source_header,
    source_key,
)

log = logging.getLogger("courier.audit.dc")

#: Missing ranges and repeated sequences kept as examples per (type, DC).
_SAMPLES = 10


@dataclass
class SourceTally:
    """The DC sequences the delivery region holds from one DC, added in stream order."""

    #: The first DC sequence that must be present (None: whichever comes first).
    expect_from: int | None = None
    #: Highest DC sequence seen + 1 (0: none yet).
    next_seq: int = 0
    #: Sequences below ``next_seq`` not seen: inclusive ``[first, last]`` ranges.
    gaps: list[list[int]] = field(default_factory=list)
    stored: int = 0
    repeated: int = 0
    repeated_sample: list[int] = field(default_factory=list)
    #: Delivery-region store time of the highest sequence (epoch secs).
    newest_at: float | None = None

    @property
    def highest_seq(self) -> int:
        return max(0, self.next_seq - 1)

    @property
    def missing(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.gaps)

    def add(self, seq: int, stored_at: float) -> None:
        self.stored += 1
        if self.next_seq == 0:
            start = seq if self.expect_from is None else min(self.expect_from, seq)
            if seq > start:
                self.gaps.append([start, seq - 1])
            self.next_seq = seq + 1
            self.newest_at = stored_at
            return
        if seq >= self.next_seq:
            if seq > self.next_seq:
                self.gaps.append([self.next_seq, seq - 1])
            self.next_seq = seq + 1
            self.newest_at = stored_at
            return
        for i, (lo, hi) in enumerate(self.gaps):
            if lo <= seq <= hi:  # late, out of order: fills its place in a gap
                parts = [[lo, seq - 1]] if seq > lo else []
                parts += [[seq + 1, hi]] if seq < hi else []
                self.gaps[i : i + 1] = parts
                return
        self.repeated += 1
        if len(self.repeated_sample) < _SAMPLES:
            self.repeated_sample.append(seq)


@dataclass
class _TypeState:
    """What has been read of one type's delivery-region stream."""

    read_to: int = 0
    tallies: dict[str, SourceTally] = field(default_factory=dict)
    #: Messages that carry no source header of a configured DC (e.g. from before [dc]).
    unsourced: int = 0


@dataclass(frozen=True)
class DcAudit:
    """Exact completeness and delay of one DC's stream of one type, as stored centrally."""

    event_type: str
    domain: str
    #: Messages from this DC in the delivery region's stream (repeats included).
    stored: int
    highest_seq: int
    missing: int
    missing_ranges: list[list[int]]
    repeated: int
    repeated_sample: list[int]
    #: The DC stream's last sequence; None when the DC did not answer.
    dc_last_seq: int | None
    behind_messages: int | None
    #: Age of the DC's oldest message not stored here yet (0 when none is behind).
    behind_secs: float | None
    #: Delivery-region time minus DC time of the newest message stored here.
    last_transfer_secs: float | None
    max_transfer_delay_secs: float

    @property
    def reachable(self) -> bool:
        return self.dc_last_seq is not None

    @property
    def delay_secs(self) -> float | None:
        """How late this DC's events are: the older of what waits and what last came."""
        known = [v for v in (self.behind_secs, self.last_transfer_secs) if v is not None]
        return max(known) if known else None

    @property
    def delay_breached(self) -> bool:
        return self.delay_secs is not None and self.delay_secs > self.max_transfer_delay_secs

    @property
    def exact(self) -> bool:
        return self.missing == 0 and self.repeated == 0

    @property
    def ok(self) -> bool:
        return self.exact and self.reachable and not self.delay_breached

    @property
    def status(self) -> Literal["ok", "unreachable", "mismatch", "late"]:
        """The one word for this row, worst first: the DC does not answer, a sequence is
        missing or repeated, the delay breaches ``dc.max_transfer_delay_secs``, or ok."""
        if not self.reachable:
            return "unreachable"
        if not self.exact:
            return "mismatch"
        return "late" if self.delay_breached else "ok"

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.update(delay_secs=self.delay_secs, delay_breached=self.delay_breached, ok=self.ok)
        return doc


async def _read_new(transport: Transport, settings: Settings, t: str, state: _TypeState) -> None:
    """Step 1: file the messages after ``state.read_to`` under their DC."""
    first, last = await transport.stream_bounds(t)
    if last == 0:
        return
    if state.read_to + 1 < first:  # expired before it was read: start again from here
        state.tallies.clear()
        state.read_to = first - 1
    if not state.tallies:
        expect = 1 if first <= 1 else None
        state.tallies = {d: SourceTally(expect_from=expect) for d in settings.dc.domains}
    by_key = {source_key(t, d): d for d in settings.dc.domains}
    if last <= state.read_to:
        return
    async for m in transport.scan(t, state.read_to + 1, last, headers_only=True):
        state.unsourced += file_messages(state.tallies, by_key, [m])
        state.read_to = m.seq
    state.read_to = max(state.read_to, last)


def file_messages(
    tallies: dict[str, SourceTally], by_key: dict[str, str], messages: Iterable[MessageLike]
) -> int:
    """Add each message's DC sequence to its DC's tally (``by_key``: source key -> DC);
    returns how many carry no source header of a configured DC."""
    unsourced = 0
    for m in messages:
        parsed = parse_source_header(m.headers.get(SOURCE_HEADER, ""))
        domain = by_key.get(parsed[0]) if parsed is not None else None
        if parsed is None or domain is None:
            unsourced += 1
        else:
            tallies[domain].add(parsed[1], m.published_at)
    return unsourced


async def _dc_stored_at(
    transport: Transport, t: str, domain: str, seq: int, direct: Any, linked: bool
) -> float | None:
    """When the DC stored its message ``seq`` (over the link, else directly)."""
    timeout = min(2.0, transport.request_timeout_secs)
    tries = [transport.nc.jetstream(domain=domain, timeout=timeout)] if linked else []
    if direct and domain in direct:
        tries.append(direct[domain].nc.jetstream(timeout=timeout))
    for js in tries:
        try:
            raw = await js.get_msg(stream_name(t), seq=seq)
        except (nats.errors.Error, TimeoutError):
            continue
        return raw.time.timestamp() if raw.time is not None else None
    return None


async def _audit_type(
    transport: Transport,
    settings: Settings,
    t: str,
    state: _TypeState,
    direct: dict[str, Transport] | None,
    unlinked: Collection[str],
) -> list[DcAudit]:
    await _read_new(transport, settings, t, state)  # steps 1-2
    progress: dict[str, DcProgress] = {
        p.domain: p
        for p in await dc_progress(transport, settings, t, direct=direct, unlinked=unlinked)
    }  # step 3
    out = []
    for d in settings.dc.domains:
        tally = state.tallies.get(d) or SourceTally()
        p = progress[d]
        behind = None if p.dc_last_seq is None else max(0, p.dc_last_seq - tally.highest_seq)
        transfer = None
        if tally.highest_seq and tally.newest_at is not None:
            dc_at = await _dc_stored_at(
                transport, t, d, tally.highest_seq, direct, d not in unlinked
            )
            transfer = None if dc_at is None else max(0.0, tally.newest_at - dc_at)
        out.append(
            DcAudit(
                event_type=t,
                domain=d,
                stored=tally.stored,
                highest_seq=tally.highest_seq,
                missing=tally.missing,
                missing_ranges=[list(g) for g in tally.gaps[:_SAMPLES]],
                repeated=tally.repeated,
                repeated_sample=list(tally.repeated_sample),
                dc_last_seq=p.dc_last_seq,
                behind_messages=behind,
                behind_secs=p.behind_secs if behind else (0.0 if behind == 0 else None),
                last_transfer_secs=transfer,
                max_transfer_delay_secs=settings.dc.max_transfer_delay_secs,
            )
        )
    return out


async def audit_dc_sources(
    transport: Transport,
    settings: Settings,
    event_type: str,
    *,
    direct: dict[str, Transport] | None = None,
) -> list[DcAudit]:
    """One full pass over the type's retained stream: per DC, exact completeness and delay.

    ``direct`` maps a domain to a connection to that DC's own server, asked when the
    DC does not answer over the leaf link.
    """
    unlinked = await _unlinked(transport, settings)
    return await _audit_type(transport, settings, event_type, _TypeState(), direct, unlinked)


async def _unlinked(transport: Transport, settings: Settings) -> set[str]:
    """The DCs whose link does not answer now: probed once per check, not once per type."""
    return {d for d in settings.dc.domains if not await link_answers(transport, d)}


class DcAuditMetrics:
    """The auditor's per-DC telemetry, in the auditor's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["type", "dc"]
        self.behind_messages = Gauge(
            "courier_audit_dc_behind_messages",
            "Messages of the DC's stream the delivery region has not stored yet",
            labels,
            registry=registry,
        )
        self.transfer_delay = Gauge(
            "courier_audit_dc_transfer_delay_seconds",
            "How late the DC's events reach the delivery region: the age of the oldest one "
            "not stored yet, or the transfer time of the newest one stored",
            labels,
            registry=registry,
        )
        self.missing = Gauge(
            "courier_audit_dc_missing_sequences",
            "DC sequences the delivery region skipped (gaps below the highest it holds)",
            labels,
            registry=registry,
        )
        self.repeated = Gauge(
            "courier_audit_dc_repeated_sequences",
            "DC sequences the delivery region stored more than once",
            labels,
            registry=registry,
        )
        self.reachable = Gauge(
            "courier_audit_dc_reachable",
            "1 when the DC's stream answered the last check, else 0",
            labels,
            registry=registry,
        )
        self.delay_breaches = Counter(
            "courier_audit_dc_delay_breaches_total",
            "Times a DC started breaching dc.max_transfer_delay_secs (or became unreachable)",
            labels,
            registry=registry,
        )


#: How often a checker tries again to reach a DC's own server (``dc.nats_urls``) that
#: did not answer, so a DC down when the checker started is seen once it is back, and a
#: down DC costs a connection attempt at most this often.
DIRECT_RETRY_SECS = 10.0


async def connect_direct(urls: Mapping[str, str]) -> dict[str, Transport]:
    """Connections to the DCs' own servers (domain -> URL) that answer now."""
    out = {}
    for domain, url in urls.items():
        try:
            out[domain] = await Transport.connect(url, name="courier-audit-dc")
        except CourierError as exc:
            log.warning("cannot reach %s directly at %s (%s)", domain, url, exc)
    return out


async def audit_dcs(
    settings: Settings, transport: Transport, event_types: Sequence[str]
) -> list[DcAudit]:
    """:func:`audit_dc_sources` of every type, asking a DC directly when its link is down."""
    direct = await connect_direct(settings.dc.nats_urls)
    try:
        unlinked = await _unlinked(transport, settings)
        return [
            row
            for t in event_types
            for row in await _audit_type(transport, settings, t, _TypeState(), direct, unlinked)
        ]
    finally:
        for conn in direct.values():
            await conn.close()


class DcChecker:
    """Per-DC checks that keep their tallies between calls: each :meth:`check` reads only
    the messages stored since the last one. No metrics and no alerts (the dashboard's;
    the auditor's :class:`DcAuditor` adds both). Call :meth:`close` at the end."""

    def __init__(self, settings: Settings, transport: Transport) -> None:
        self.settings = settings
        self.transport = transport
        self.direct: dict[str, Transport] | None = None
        self._direct_retry_at = 0.0
        self._states: dict[str, _TypeState] = {}

    async def _connect_missing(self) -> dict[str, Transport]:
        """The direct connections, after trying again (at most every
        :data:`DIRECT_RETRY_SECS`) the DCs that did not answer before."""
        direct = self.direct if self.direct is not None else {}
        self.direct = direct
        missing = {d: u for d, u in self.settings.dc.nats_urls.items() if d not in direct}
        if missing and time.monotonic() >= self._direct_retry_at:
            direct.update(await connect_direct(missing))
            self._direct_retry_at = time.monotonic() + DIRECT_RETRY_SECS
        return direct

    async def check(self, event_types: Sequence[str]) -> list[DcAudit]:
        """Read what is new; per type and DC, exact completeness and delay."""
        direct = await self._connect_missing()
        rows: list[DcAudit] = []
        unlinked = await _unlinked(self.transport, self.settings)
        for t in event_types:
            state = self._states.setdefault(t, _TypeState())
            try:
                rows += await _audit_type(self.transport, self.settings, t, state, direct, unlinked)
            except CourierError as exc:
                log.warning("per-DC audit of %s failed (%s); retrying next check", t, exc)
        return rows

    async def close(self) -> None:
        for conn in (self.direct or {}).values():
            await conn.close()
        self.direct = None


class DcAuditor(DcChecker):
    """The auditor's per-DC checks; call :meth:`check` from each audit check and
    :meth:`close` at the end."""

    def __init__(
        self, settings: Settings, transport: Transport, registry: CollectorRegistry
    ) -> None:
        super().__init__(settings, transport)
        self.metrics = DcAuditMetrics(registry)
        #: (type, DC) currently in breach, so each breach is alerted once.
        self._breaching: set[tuple[str, str]] = set()
        self._reported: dict[tuple[str, str], tuple[int, int]] = {}

    async def check(self, event_types: Sequence[str]) -> list[DcAudit]:
        """Read what is new, update the metrics, alert on new breaches; the rows."""
        rows = await super().check(event_types)
        for r in rows:
            self._publish(r)
        return rows

    def _publish(self, r: DcAudit) -> None:
        m, key = self.metrics, (r.event_type, r.domain)
        labels = m.behind_messages.labels(*key), m.transfer_delay.labels(*key)
        if r.behind_messages is not None:
            labels[0].set(r.behind_messages)
        if r.delay_secs is not None:
            labels[1].set(r.delay_secs)
        m.missing.labels(*key).set(r.missing)
        m.repeated.labels(*key).set(r.repeated)
        m.reachable.labels(*key).set(1 if r.reachable else 0)
        breach = r.delay_breached or not r.reachable
        if breach and key not in self._breaching:
            self._breaching.add(key)
            m.delay_breaches.labels(*key).inc()
            if r.reachable:
                log.warning(
                    "DC transfer delay breach: %s from %s is %.1fs late (limit %.0fs), "
                    "%s messages behind",
                    r.event_type,
                    r.domain,
                    r.delay_secs,
                    r.max_transfer_delay_secs,
                    r.behind_messages,
                )
            else:
                log.warning(
                    "DC unreachable: %s's stream of %s does not answer; its delay is unknown",
                    r.domain,
                    r.event_type,
                )
        elif not breach and key in self._breaching:
            self._breaching.discard(key)
            log.info("%s from %s is within its transfer delay again", r.event_type, r.domain)
        seen = (r.missing, r.repeated)
        if seen != self._reported.get(key, (0, 0)) and (r.missing or r.repeated):
            log.error(
                "DC sequence mismatch: %s from %s: %d missing (%s), %d repeated (%s)",
                r.event_type,
                r.domain,
                r.missing,
                r.missing_ranges,
                r.repeated,
                r.repeated_sample,
            )
        self._reported[key] = seen

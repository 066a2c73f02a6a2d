"""Several data centres: the delivery region's streams source every DC's stream.

Topology (DESIGN §13): each DC runs its own JetStream domain (``dcA``, ``dcB``, …)
with a stream per type named as everywhere (``COURIER_<Type>``) that its gateways
publish to. The delivery region's server is the leaf node hub; its stream per type
has **no subject** and sources ``COURIER_<Type>`` from each domain in
``settings.dc.domains`` through ``$JS.<domain>.API``. It must not have the subject:
the DCs' publishes would otherwise reach it over the leaf links too and be stored
twice. Writers, closers and the auditor read it as they read a single-DC stream;
a sourced message keeps its subject and headers (``Nats-Msg-Id`` included) plus
``Nats-Stream-Source: <Stream>:<hash of the DC's API prefix> <DC seq> …``, and gets
the delivery region's timestamp.

Here:

* :func:`with_dc_sources` turns a type's stream config into the sourcing one
  (provisioning calls it, so creation and verification agree);
* :func:`provision_sources` / :func:`verify_sources`: the live sources equal the
  settings' DCs (idempotent; services refuse to run on a mismatch);
* :class:`AcceptingDc`: the DC that accepted a message, from its ``Nats-Stream-Source``
  (set by the server when it sources, never by a producer: the gateway publishes
  no ``Nats-*`` header it did not make, and a replay drops them), for the
  ``received_dc`` column;
* :func:`dc_progress`: per DC, how far the delivery region is behind, from what it
  has actually stored (the newest ``Nats-Stream-Source`` sequence per DC) against
  the DC stream's last sequence. The server's own ``lag`` of a source is stale
  while the source is inactive, so it is not used;
* :func:`nudge_stalled_sources`: nats-server retries a lost source only after its
  consumer-create request times out (30 s) plus a backoff growing by 10 s a
  failure up to 2 min, and the retry it starts when a leaf link comes back is
  skipped while such a request is outstanding. So sourcing resumed 34-40 s after
  a link returned. Re-adding a silent source whose DC answers again starts it at
  once; its start sequence comes from the stream's persisted source state, so no
  message is skipped or stored twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ExternalStream, StreamConfig, StreamSource

from courier.errors import ProvisioningError, TransportError
from courier.settings import Settings
from courier.transport.client import Transport
from courier.transport.names import events_subject, stream_name

log = logging.getLogger("courier.transport.sources")

SOURCE_HEADER = "Nats-Stream-Source"
_HASH_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def dc_api_prefix(domain: str) -> str:
    """The JetStream API prefix of a DC's domain, as seen across the leaf link."""
    return f"$JS.{domain}.API"


def source_key(event_type: str, domain: str) -> str:
    """The first word of ``Nats-Stream-Source`` on messages sourced from ``domain``.

    nats-server names an external source ``<stream>:<hash>``, the hash being its
    ``getHash`` (sha256, first 8 bytes mapped onto base62 digits) of the API prefix.
    """
    digest = hashlib.sha256(dc_api_prefix(domain).encode()).digest()
    return f"{stream_name(event_type)}:" + "".join(_HASH_DIGITS[b % 62] for b in digest[:8])


def parse_source_header(value: str) -> tuple[str, int] | None:
    """``(source key, DC sequence)`` of a ``Nats-Stream-Source`` header, or None."""
    parts = value.split(" ")
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


class AcceptingDc:
    """Names the DC that accepted a message of one type in the delivery region's stream.

    A sourced message is named by its ``Nats-Stream-Source`` key (one per domain in
    ``settings.dc.domains``); one stored straight into this stream (no DCs, or stored
    before the stream sourced any) by ``settings.dc.local_name``. A source key of no
    configured domain (a DC removed from the settings) names nothing: null, not a
    guess.
    """

    __slots__ = ("_by_key", "_local")

    def __init__(self, settings: Settings, event_type: str) -> None:
        self._by_key = {source_key(event_type, d): d for d in settings.dc.domains}
        self._local = settings.dc.local_name

    def __call__(self, headers: Mapping[str, str]) -> str | None:
        value = headers.get(SOURCE_HEADER)
        if value is None:
            return self._local
        parsed = parse_source_header(value)
        return None if parsed is None else self._by_key.get(parsed[0])


def dc_sources(settings: Settings, event_type: str) -> list[StreamSource]:
    """The sources the delivery region's stream of ``event_type`` should have."""
    return [
        StreamSource(name=stream_name(event_type), external=ExternalStream(api=dc_api_prefix(d)))
        for d in settings.dc.domains
    ]


def with_dc_sources(settings: Settings, event_type: str, cfg: StreamConfig) -> StreamConfig:
    """``cfg`` as the delivery region's sourcing stream (unchanged with no DCs configured)."""
    if not settings.dc.domains:
        return cfg
    return cfg.evolve(subjects=None, sources=dc_sources(settings, event_type))


def _source_ids(sources: Sequence[StreamSource] | None) -> list[tuple[str, str]]:
    return sorted((s.name, s.external.api if s.external is not None else "") for s in sources or ())


def source_problems(settings: Settings, event_type: str, live: StreamConfig) -> list[str]:
    """What differs between the live sources of a stream and the settings' DCs."""
    want = _source_ids(dc_sources(settings, event_type))
    have = _source_ids(live.sources)
    if want == have:
        return []
    missing = [f"{n} via {a}" for n, a in want if (n, a) not in have]
    extra = [f"{n} via {a}" for n, a in have if (n, a) not in want]
    out = []
    if missing:
        out.append("sources missing: " + ", ".join(missing))
    if extra:
        out.append("sources not in the settings: " + ", ".join(extra))
    return out


async def provision_sources(transport: Transport, settings: Settings, event_type: str) -> None:
    """Make the live sources of the type's stream those of ``settings.dc`` (idempotent).

    Adding a DC starts its source from its stream's first message; removing one stops
    sourcing it (drain it first: :func:`dc_progress` shows when it is caught up).
    """
    name = stream_name(event_type)
    try:
        info = await transport.js.stream_info(name)
        problems = source_problems(settings, event_type, info.config)
        if not problems:
            return
        cfg = info.config.evolve(sources=dc_sources(settings, event_type) or None)
        if settings.dc.domains:
            cfg = cfg.evolve(subjects=None)
        await transport.js.update_stream(cfg)
    except nats.js.errors.NotFoundError as exc:
        raise ProvisioningError(f"stream {name} does not exist; provision the type first") from exc
    except nats.errors.Error as exc:
        raise ProvisioningError(f"provisioning the sources of {name}: {exc}") from exc
    log.info("updated the sources of %s: %s", name, "; ".join(problems))


async def verify_sources(transport: Transport, settings: Settings, event_type: str) -> None:
    """Raise ProvisioningError unless the live sources match ``settings.dc``."""
    name = stream_name(event_type)
    try:
        info = await transport.js.stream_info(name)
    except nats.errors.Error as exc:
        raise TransportError(f"verifying the sources of {name}: {exc}") from exc
    problems = source_problems(settings, event_type, info.config)
    if problems:
        raise ProvisioningError(
            f"live sources of {name} differ from the settings ([dc] domains); refusing to run "
            "(run `courier provision` to apply the settings): " + "; ".join(problems)
        )


# -- progress ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DcProgress:
    """How far the delivery region's stream of a type is behind one DC."""

    domain: str
    #: Newest DC sequence the delivery region has stored (0: none yet).
    stored_seq: int
    #: When the delivery region stored it (epoch secs), None when nothing is stored.
    stored_at: float | None
    #: The DC stream's last sequence; None when the DC did not answer.
    dc_last_seq: int | None
    #: Seconds since the source last delivered anything or heartbeated (server view).
    source_idle_secs: float | None
    #: Age of the DC's oldest message not yet in the delivery region, when known.
    behind_secs: float | None

    @property
    def reachable(self) -> bool:
        return self.dc_last_seq is not None

    @property
    def behind_messages(self) -> int | None:
        if self.dc_last_seq is None:
            return None
        return max(0, self.dc_last_seq - self.stored_seq)

    @property
    def caught_up(self) -> bool:
        """True only when the DC answered and every message it holds is stored here."""
        return self.behind_messages == 0


async def newest_stored(
    transport: Transport, event_type: str, keys: dict[str, str], max_messages: int
) -> dict[str, tuple[int, float]]:
    """``domain -> (DC seq, stored at)`` of the newest stored message from each DC.

    Reads backwards in windows (each one short-lived consumer scan) until every DC is
    found or ``max_messages`` were read: one window when the DCs interleave.
    """
    first, last = await transport.stream_bounds(event_type)
    found: dict[str, tuple[int, float]] = {}
    by_key = {k: d for d, k in keys.items()}
    window = 256
    hi = last
    read = 0
    while hi >= max(first, 1) and len(found) < len(keys) and read < max_messages:
        lo = max(first, 1, hi - window + 1)
        newest: dict[str, tuple[int, float]] = {}
        async for m in transport.scan(event_type, lo, hi):
            parsed = parse_source_header(m.headers.get(SOURCE_HEADER, ""))
            domain = by_key.get(parsed[0]) if parsed is not None else None
            if parsed is not None and domain is not None:
                newest[domain] = (parsed[1], m.published_at)  # oldest first: last one wins
        for domain, value in newest.items():
            found.setdefault(domain, value)  # a later window is older
        read += hi - lo + 1
        hi = lo - 1
        window *= 4
    return found


async def _source_idle_secs(transport: Transport, event_type: str) -> dict[str, float]:
    """``API prefix -> seconds`` since each external source was last heard from.

    Read from the raw stream info: nats-py's ``StreamSourceInfo`` drops ``external``,
    which is what tells two DCs' sources of the same stream name apart. The server
    sends ``active: -1`` for a source never heard from (infinitely idle here).
    """
    name = stream_name(event_type)
    try:
        reply = await transport.nc.request(
            f"$JS.API.STREAM.INFO.{name}", b"", timeout=transport.request_timeout_secs
        )
        doc = json.loads(reply.data)
    except (nats.errors.Error, TimeoutError, ValueError) as exc:
        raise TransportError(f"stream info {name}: {exc}") from exc
    if "error" in doc:
        raise TransportError(f"stream info {name}: {doc['error'].get('description')}")
    out = {}
    for src in doc.get("sources") or ():
        api = (src.get("external") or {}).get("api")
        active = src.get("active")
        if api and isinstance(active, int):
            out[api] = active / 1e9 if active >= 0 else float("inf")
    return out


async def _dc_last(js: JetStreamContext, event_type: str) -> int | None:
    try:
        info = await js.stream_info(stream_name(event_type))
    except (nats.errors.Error, TimeoutError):
        return None
    return int(info.state.last_seq or 0)


async def _dc_time_of(js: JetStreamContext, event_type: str, seq: int) -> float | None:
    try:
        raw = await js.get_msg(
            stream_name(event_type), seq=seq, subject=events_subject(event_type), next=True
        )
    except (nats.errors.Error, TimeoutError):
        return None
    return raw.time.timestamp() if raw.time is not None else None


async def dc_progress(
    transport: Transport,
    settings: Settings,
    event_type: str,
    *,
    direct: dict[str, Transport] | None = None,
    unlinked: Collection[str] = (),
) -> list[DcProgress]:
    """Per DC of ``settings.dc``: stored sequence, the DC's last one, how far behind.

    A DC is asked over the leaf link (``$JS.<domain>.API``) and, when that does not
    answer, through ``direct[domain]`` (a connection to the DC's own server) if given.
    DCs in ``unlinked`` (their link did not answer :func:`link_answers` just now) are
    asked directly at once, which saves a timeout per type.
    """
    domains = settings.dc.domains
    keys = {d: source_key(event_type, d) for d in domains}
    stored = await newest_stored(
        transport, event_type, keys, settings.dc.progress_scan_max_messages
    )
    idle = await _source_idle_secs(transport, event_type)
    out = []
    timeout = min(2.0, transport.request_timeout_secs)
    for d in domains:
        seq, at = stored.get(d, (0, None))
        js = transport.nc.jetstream(domain=d, timeout=timeout)
        last = None if d in unlinked else await _dc_last(js, event_type)
        if last is None and direct and d in direct:
            js = direct[d].nc.jetstream(timeout=timeout)
            last = await _dc_last(js, event_type)
        behind_secs = None
        if last is not None:
            behind_secs = 0.0
            if last > seq:
                oldest = await _dc_time_of(js, event_type, seq + 1)
                behind_secs = None if oldest is None else max(0.0, time.time() - oldest)
        out.append(DcProgress(d, seq, at, last, idle.get(dc_api_prefix(d)), behind_secs))
    return out


async def link_answers(transport: Transport, domain: str) -> bool:
    """Does the DC's JetStream answer over the leaf link?"""
    js = transport.nc.jetstream(domain=domain, timeout=min(2.0, transport.request_timeout_secs))
    try:
        await js.account_info()
    except (nats.errors.Error, TimeoutError):
        return False
    return True


# -- the nudge -----------------------------------------------------------------


async def readd_sources(
    transport: Transport, settings: Settings, event_type: str, domains: Sequence[str]
) -> None:
    """Remove the source of each of ``domains`` and add it back, one DC at a time.

    The server then starts each re-added source at once, from the sequence after the
    last one it stored (kept in the stream's source state), instead of waiting out
    its retry timer. A stream needs a subject or a source, so while its only source
    is out it gets a placeholder subject nobody publishes to
    (``courier.nudge.<Type>``), never the events subject.
    """
    name = stream_name(event_type)
    for domain in domains:
        api = dc_api_prefix(domain)
        try:
            live = (await transport.js.stream_info(name)).config
            kept = [s for s in live.sources or () if s.external is None or s.external.api != api]
            if len(kept) == len(live.sources or ()):
                continue  # not a source of this stream
            without = (
                live.evolve(sources=kept)
                if kept
                else live.evolve(sources=None, subjects=[f"courier.nudge.{event_type}"])
            )
            await transport.js.update_stream(without)
            await transport.js.update_stream(live)
        except nats.errors.Error as exc:
            raise TransportError(f"re-adding the source {api} of {name}: {exc}") from exc


class SourceNudger:
    """Re-adds stalled sources whose DC answers again (call :meth:`check` every second or so).

    A live source heartbeats every second, even when idle. A source is stalled when
    the server reports it silent for ``dc.nudge_after_secs``, or reports it never
    heard from (``active: -1``: just created, or central just restarted) for that
    long as seen by this nudger. It is nudged only when its DC answers over the leaf
    link, and at most once per ``dc.nudge_interval_secs``. A needless nudge costs
    two stream updates and nothing else: the re-added source resumes from the
    stream's own record of what it stored. A configured source missing from the
    live stream (a crash between the two updates of a re-add) is restored.
    """

    def __init__(self, transport: Transport, settings: Settings) -> None:
        self._transport = transport
        self._settings = settings
        self._last: dict[tuple[str, str], float] = {}
        self._never_since: dict[tuple[str, str], float] = {}
        self.nudges = 0

    def _silent_secs(self, key: tuple[str, str], idle: float | None, now: float) -> float:
        if idle is None:
            return 0.0
        if idle != float("inf"):
            self._never_since.pop(key, None)
            return idle
        return now - self._never_since.setdefault(key, now)

    async def check(self, event_types: Sequence[str]) -> list[tuple[str, str]]:
        """Nudge what needs it; returns the (type, domain) pairs nudged."""
        dc = self._settings.dc
        candidates: dict[str, list[str]] = {}  # type -> stalled domains
        for t in event_types:
            try:
                idle = await _source_idle_secs(self._transport, t)
            except TransportError:
                continue
            if any(dc_api_prefix(d) not in idle for d in dc.domains):
                # A configured source is gone: a crash (of central, or of a nudger) between
                # the two updates of a re-add. Restore it from the settings; it resumes
                # from the stream's persisted source state, as after a nudge.
                await provision_sources(self._transport, self._settings, t)
                log.warning("restored the missing sources of %s from the settings", t)
                continue
            now = time.monotonic()
            for d in dc.domains:
                key = (t, d)
                if self._silent_secs(key, idle.get(dc_api_prefix(d)), now) < dc.nudge_after_secs:
                    continue
                if now - self._last.get(key, -1e18) < dc.nudge_interval_secs:
                    continue
                candidates.setdefault(t, []).append(d)
        # One probe per DC, not per type: a cut-off DC costs one timeout per check.
        answering = {
            d: await self._answers(d) for d in {d for ds in candidates.values() for d in ds}
        }
        done = []
        for t, domains in candidates.items():
            stalled = [d for d in domains if answering[d]]
            if not stalled:
                continue  # still cut off: nothing to gain
            await readd_sources(self._transport, self._settings, t, stalled)
            now = time.monotonic()
            for d in stalled:
                self._last[(t, d)] = now
                self._never_since.pop((t, d), None)
                done.append((t, d))
                log.info("nudged the source of %s from %s (silent, DC answers)", t, d)
        self.nudges += len(done)
        return done

    async def _answers(self, domain: str) -> bool:
        return await link_answers(self._transport, domain)

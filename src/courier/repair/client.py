"""The repair API seen from a client: what ``courier repair`` does, without the printing.

:class:`RepairClient` calls the gateway's ``/v1/admin/*`` routes with the admin
key; :func:`replay_quarantine` and :func:`replay_invalid` are the two replays
that also read the data dir. The commands in ``cli/repair.py`` only parse their
arguments and print what these return.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from courier.errors import GatewayCallError, StorageError
from courier.model import iso_utc
from courier.repair.quarantine import (
    QuarantinedMessage,
    mark_replayed,
    quarantined_keys,
    read_quarantined,
)
from courier.repair.resubmit import ResubmitRequest
from courier.storage import Layout

#: Answers to a republish that refuse that one record (the replay goes on with the next).
_REFUSED_ONE = frozenset({400, 404, 409, 413})


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """What the gateway accepts in one request, as it states in ``/openapi.json``."""

    max_body_bytes: int
    max_events_per_batch: int


class RepairClient:
    """Calls to one gateway's repair routes with one key (``transport``: tests)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout_secs: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout_secs, transport=transport
        )

    def __enter__(self) -> RepairClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def _call(
        self, method: str, path: str, *, content: bytes | None = None, **params: Any
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            return self._client.request(
                method, path, content=content, headers=headers, params=params or None
            )
        except httpx.HTTPError as exc:
            raise GatewayCallError(
                f"cannot reach the gateway at {self.base_url}: {exc}; nothing was changed "
                "by this call (or, after a timeout, maybe it was: running it again is safe)"
            ) from exc

    def _ok(self, response: httpx.Response, what: str) -> Any:
        if response.status_code != 200:
            raise GatewayCallError(
                f"{what}: HTTP {response.status_code}: {error_text(response)}",
                response.status_code,
            )
        return response.json()

    def limits(self) -> GatewayLimits:
        """The gateway's own request limits (not this host's settings, which may differ)."""
        doc = self._ok(self._call("GET", "/openapi.json"), "reading the gateway's limits")
        limits = doc["info"]["x-courier-limits"]
        return GatewayLimits(int(limits["max_body_bytes"]), int(limits["max_events_per_batch"]))

    def repairs(self, limit: int) -> list[dict[str, Any]]:
        """The repair log, newest first."""
        records: list[dict[str, Any]] = self._ok(
            self._call("GET", "/v1/admin/repairs", limit=limit), "listing repairs"
        )
        return records

    def redeliver(
        self, event_type: str, *, from_seq: int | None = None, from_time: str | None = None
    ) -> dict[str, Any]:
        """Redeliver ``event_type`` from a sequence or a time; the repair record."""
        body = {"from_seq": from_seq} if from_seq is not None else {"from_time": from_time}
        response = self._call(
            "POST", f"/v1/admin/redeliver/{event_type}", content=json.dumps(body).encode()
        )
        record: dict[str, Any] = self._ok(response, f"redelivering {event_type}")
        return record

    def republish(self, event_type: str, message: QuarantinedMessage) -> httpx.Response:
        """Publish one quarantined message again; the raw answer (the caller sorts refusals)."""
        body = json.dumps(message.republish_request()).encode()
        return self._call("POST", f"/v1/admin/republish/{event_type}", content=body)

    def resubmit(self, event_type: str, request: ResubmitRequest) -> dict[str, Any]:
        """Validate ``request.events`` again; the repair record plus every rejection."""
        response = self._call(
            "POST", f"/v1/admin/resubmit/{event_type}", content=msgspec.json.encode(request)
        )
        what = f"resubmitting {len(request.events)} {event_type} events"
        record: dict[str, Any] = self._ok(response, what)
        return record


def error_text(response: httpx.Response) -> str:
    """The gateway's ``error`` message of a refused call, else the raw body."""
    try:
        doc = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return response.text[:500]


# -- replay-quarantine ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuarantineStep:
    """What happened to one quarantine record (``outcome``: see :func:`replay_quarantine`)."""

    outcome: str  # "unreadable", "would-replay", "refused", "duplicate", "replayed"
    detail: str
    record: QuarantinedMessage | None = None
    stored_seq: int | None = None


@dataclass
class QuarantineReplay:
    """Counts of a replay so far, by outcome."""

    files: int = 0
    counts: Counter[str] = field(default_factory=Counter)


def replay_quarantine(
    client: RepairClient,
    layout: Layout,
    event_type: str,
    report: QuarantineReplay,
    *,
    dry_run: bool,
) -> Iterator[QuarantineStep]:
    """Replay ``event_type``'s quarantine records, one step per record (see repair/quarantine.py).

    ``report`` counts the steps as they are yielded. A record moves to
    ``_replayed/`` only after the gateway stored it. Raises GatewayCallError
    (the remaining records stay in place) when the gateway fails other than by
    refusing one record.
    """
    keys = quarantined_keys(layout, event_type)
    report.files = len(keys)
    for key in keys:
        step = _replay_one(client, layout, key, event_type, report, dry_run=dry_run)
        report.counts[step.outcome] += 1
        yield step


def _replay_one(
    client: RepairClient,
    layout: Layout,
    key: str,
    event_type: str,
    report: QuarantineReplay,
    *,
    dry_run: bool,
) -> QuarantineStep:
    try:
        record = read_quarantined(layout, key)
        if record.event_type != event_type:
            raise StorageError(f"{layout.where(key)} holds a {record.event_type!r} message")
    except StorageError as exc:
        return QuarantineStep("unreadable", str(exc))
    if dry_run:
        return QuarantineStep("would-replay", record.reason, record)
    response = client.republish(event_type, record)
    if response.status_code in _REFUSED_ONE:
        return QuarantineStep("refused", error_text(response), record)
    if response.status_code != 200:
        done = report.counts["replayed"] + report.counts["duplicate"]
        left = report.files - sum(report.counts.values())
        raise GatewayCallError(
            f"replaying seq {record.stream_seq}: HTTP {response.status_code}: "
            f"{error_text(response)}; stopped, {left} records left in place "
            f"(replayed {done}); run again later",
            response.status_code,
        )
    result = response.json()["result"]
    # Only now that the message is stored: a crash before this move replays it again.
    mark_replayed(layout, record)
    if result["duplicate"]:
        return QuarantineStep("duplicate", "", record)
    return QuarantineStep("replayed", "", record, stored_seq=int(result["stream_seq"]))


# -- replay-invalid ---------------------------------------------------------------


@dataclass
class InvalidReplay:
    """The outcome of re-submitting a type's rejected events."""

    found: int = 0
    accepted: int = 0
    without_id: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def still_rejected(self) -> int:
        return sum(self.reasons.values())


def replay_invalid(
    client: RepairClient, raws: list[str], event_type: str, start: float, end: float
) -> InvalidReplay:
    """Send the raw texts of ``event_type``'s rejected events to the gateway again.

    ``raws`` are the ``raw`` column of its ``_invalid`` rows in [start, end).
    Each is parsed once: texts that are not JSON objects are counted, not sent.
    Batches fit the gateway's own limits.
    """
    out = InvalidReplay(found=len(raws))
    events: list[msgspec.Raw] = []
    for raw in raws:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            out.reasons["the stored raw text is not a JSON object"] += 1
            continue
        out.without_id += "id" not in doc
        events.append(msgspec.Raw(raw.encode()))
    if not events:
        return out
    limits = client.limits()
    # Half the body limit: room for the request's envelope around the events.
    budget = max(1024, limits.max_body_bytes // 2)
    for batch in _batches(events, budget, limits.max_events_per_batch):
        request = ResubmitRequest(events=batch, from_time=iso_utc(start), to_time=iso_utc(end))
        record = client.resubmit(event_type, request)
        out.accepted += record["counts"]["accepted"]
        out.reasons.update(r["error"] for r in record["rejected"])
    return out


def _batches(
    events: list[msgspec.Raw], max_bytes: int, max_events: int
) -> Iterator[list[msgspec.Raw]]:
    batch: list[msgspec.Raw] = []
    size = 0
    for event in events:
        n = len(event) + 1
        if batch and (size + n > max_bytes or len(batch) >= max_events):
            yield batch
            batch, size = [], 0
        batch.append(event)
        size += n
    if batch:
        yield batch

"""The gateway's repair routes (DESIGN §10), for the admin key only, every call recorded.

- ``GET /v1/admin/repairs?limit=N``: the repair log, newest first.
- ``POST /v1/admin/redeliver/{type}`` with ``{"from_seq": N}`` or
  ``{"from_time": "<RFC 3339>"}``: the type's writers receive its messages
  again from there (:mod:`courier.repair.redeliver` says why that is safe).
- ``POST /v1/admin/republish/{type}`` with a quarantine record's
  ``stream_seq``, ``headers`` and ``body_base64``: publishes that body again
  and answers after the publish ack (:mod:`courier.repair.republish`).
- ``POST /v1/admin/resubmit/{type}`` with ``{"events": [...]}`` (raw events of
  ``_invalid``): the ingest of ``POST /v1/events`` validates them again against
  the current schema (:mod:`courier.repair.resubmit`); the answer adds every
  rejection (``rejected``) to the record.

A request without a key is 401 and with another key 403; neither is recorded.
Every call past that is (:mod:`courier.repair.log`): its answer is the repair
record (200), or an error naming the record's id: 400 malformed, 404 unknown
type, 409 refused in the current state (data no longer retained, unacked
messages would be skipped, consumer not as provisioned), 503 transport or
repair log unavailable (the repair was not done, or may be retried safely).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from courier.errors import (
    ConflictError,
    MalformedRequestError,
    NotFoundError,
    ProvisioningError,
    RepairRefusedError,
    RequestError,
    SchemaError,
    TransportError,
    UnknownEventTypeError,
)
from courier.gateway.body import BodyFormat
from courier.gateway.ingest import DecodedBatch
from courier.gateway.responses import (
    error_response,
    json_response,
    read_admin_body,
    refused,
)
from courier.gateway.service import EventService
from courier.repair import RepairLog, RepairRecord
from courier.repair.redeliver import parse_redeliver, redeliver, redeliver_result
from courier.repair.republish import (
    parse_republish,
    replay_msg_id,
    republish,
    republish_arguments,
)
from courier.repair.resubmit import RECORDED_REJECTIONS, parse_resubmit
from courier.repair.target import RepairTarget
from courier.schema import Registry
from courier.service.auth import KeyRing, Principal
from courier.settings import Settings

log = logging.getLogger("courier.gateway")

#: Most repair records one ``GET /v1/admin/repairs`` lists.
MAX_REPAIRS_LISTED = 10_000
#: The ``limit`` query parameter of that route.
RepairsLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_REPAIRS_LISTED)]


class RepairRoutes:
    """Handlers of ``/v1/admin/*``; ``target`` and ``registry`` are set by the lifespan."""

    def __init__(self, settings: Settings, keyring: KeyRing) -> None:
        self.settings = settings
        self.keyring = keyring
        self.target: RepairTarget | None = None
        self.registry: Registry | None = None
        self.service: EventService | None = None
        self._log: RepairLog | None = None
        self._log_target: RepairTarget | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/v1/admin/repairs", self.list_repairs, methods=["GET"]),
            Route("/v1/admin/redeliver/{type}", self.redeliver, methods=["POST"]),
            Route("/v1/admin/republish/{type}", self.republish, methods=["POST"]),
            Route("/v1/admin/resubmit/{type}", self.resubmit, methods=["POST"]),
        ]

    def _unavailable(self, what: str) -> Response:
        retry = str(self.settings.gateway.retry_after_secs)
        return error_response(503, f"{what}; retry after {retry}s", {"Retry-After": retry})

    async def _repair_log(self) -> RepairLog:
        """The repair log, opened on first use (the bucket may be provisioned after start)."""
        if self.target is None:
            raise TransportError("this gateway has no transport (NATS) to repair")
        if self._log is None or self._log_target is not self.target:
            self._log = RepairLog(await self.target.log_kv())
            self._log_target = self.target
        return self._log

    async def list_repairs(self, request: Request) -> Response:
        try:
            self.keyring.require_admin(request.headers)
            limit = _limit(request.query_params.get("limit"))
        except RequestError as exc:
            return refused(exc)
        try:
            records = await (await self._repair_log()).list(limit)
        except TransportError as exc:
            return self._unavailable(f"the repair log cannot be read: {exc}")
        return json_response([r.to_json() for r in records])

    async def redeliver(self, request: Request) -> Response:
        event_type = request.path_params["type"]

        def parse(body: bytes) -> tuple[dict[str, Any], Any]:
            req = parse_redeliver(body)
            return req.arguments(), req

        async def act(record: RepairRecord, req: Any) -> dict[str, Any]:
            assert self.target is not None
            done = await redeliver(self.target, event_type, req)
            record.counts, record.result = redeliver_result(done)
            return {}

        return await self._repair(request, "redeliver", event_type, parse, act)

    async def republish(self, request: Request) -> Response:
        event_type = request.path_params["type"]

        def parse(body: bytes) -> tuple[dict[str, Any], Any]:
            req, data, headers = parse_republish(body)
            return republish_arguments(req, data, headers), (req, data, headers)

        async def act(record: RepairRecord, parsed: Any) -> dict[str, Any]:
            req, data, headers = parsed
            assert self.target is not None
            stored = await republish(self.target, event_type, req, data, headers)
            record.counts = {"published": 0 if stored.duplicate else 1}
            record.result = {
                "stream_seq": stored.seq,
                "duplicate": stored.duplicate,
                "msg_id": replay_msg_id(event_type, req.stream_seq),
            }
            return {}

        return await self._repair(request, "republish", event_type, parse, act)

    async def resubmit(self, request: Request) -> Response:
        event_type = request.path_params["type"]

        def parse(body: bytes) -> tuple[dict[str, Any], Any]:
            req, events = parse_resubmit(body)
            return req.arguments(), events

        async def act(record: RepairRecord, events: Any) -> dict[str, Any]:
            if self.service is None:
                raise TransportError("the gateway is starting")
            now = dt.datetime.now(dt.UTC)
            result = await self.service.ingest(
                events, BodyFormat.JSON, now, admit=_only(event_type)
            )
            rejected = [{"index": r.index, "id": r.id, "error": r.error} for r in result.rejections]
            record.counts = {"accepted": result.accepted, "rejected": len(rejected)}
            record.result = {"rejected": rejected[:RECORDED_REJECTIONS]}
            return {"rejected": rejected}  # every one in the answer, the first ones recorded

        return await self._repair(request, "resubmit", event_type, parse, act)

    async def _repair(
        self,
        request: Request,
        operation: str,
        event_type: str,
        parse: Callable[[bytes], tuple[dict[str, Any], Any]],
        act: Callable[[RepairRecord, Any], Awaitable[dict[str, Any]]],
    ) -> Response:
        """Authenticate, read and ``parse`` the body, then ``act`` inside a recorded repair.

        ``parse`` gives the arguments to record (before anything changes) and what
        ``act`` needs; ``act`` fills the record's counts and result and returns
        fields to add to the answer. A body that cannot be read or parsed is
        recorded as refused (with no arguments).
        """
        try:
            principal: Principal = self.keyring.require_admin(request.headers)
        except RequestError as exc:
            return refused(exc)  # not recorded: nobody we know asked
        problem: RequestError | None = None
        arguments: dict[str, Any] = {}
        parsed: Any = None
        try:
            arguments, parsed = parse(await read_admin_body(request, self.settings.gateway))
        except ClientDisconnect:
            return error_response(400, "the client disconnected before sending the whole body")
        except RequestError as exc:
            problem = exc
        try:
            repair_log = await self._repair_log()
        except TransportError as exc:
            return self._unavailable(f"the repair log cannot be written ({exc}); nothing was done")
        record: RepairRecord | None = None
        extra: dict[str, Any] = {}
        try:
            async with repair_log.recording(
                operation, event_type, principal.name, arguments
            ) as record:
                if problem is not None:
                    raise problem
                await self._require_type(event_type)
                extra = await act(record, parsed)
        except RequestError as exc:
            return refused(exc, **_ref(record))
        except UnknownEventTypeError as exc:
            return refused(NotFoundError(str(exc)), **_ref(record))
        except (RepairRefusedError, ProvisioningError) as exc:
            return refused(ConflictError(str(exc)), **_ref(record))
        except (TransportError, SchemaError) as exc:
            if record is None:
                return self._unavailable(f"the repair log cannot be written ({exc}); nothing done")
            return self._unavailable(
                f"{operation} of {event_type} failed: {exc} (repair {record.id})"
            )
        return json_response({**record.to_json(), **extra})

    async def _require_type(self, event_type: str) -> None:
        if self.registry is None:
            raise TransportError("the schema registry is not loaded yet")
        known = await self.registry.compiled()
        if event_type not in known:
            raise UnknownEventTypeError(
                f"event type {event_type[:64]!r} is not registered (see GET /v1/schemas); "
                "nothing was done"
            )


def _only(event_type: str) -> Callable[[DecodedBatch], None]:
    """An ``admit`` for the ingest: refuses, whole, a batch holding another type."""

    def admit(batch: DecodedBatch) -> None:
        sent = set(batch.valid) | {r.event_type for r in batch.rejections if r.event_type}
        others = sorted(t for t in sent if t != event_type)
        if others:
            names = ", ".join(repr(t[:64]) for t in others[:10])
            raise MalformedRequestError(
                f"a resubmission of {event_type!r} may only hold {event_type!r} events, "
                f"not {names}; nothing was accepted"
            )

    return admit


def _ref(record: RepairRecord | None) -> dict[str, str]:
    return {} if record is None else {"repair_id": record.id}


def _limit(text: str | None) -> int:
    if text is None:
        return 100
    try:
        return msgspec.convert(int(text), RepairsLimit)
    except (ValueError, msgspec.ValidationError):
        raise MalformedRequestError(
            f"limit must be a whole number from 1 to {MAX_REPAIRS_LISTED}"
        ) from None

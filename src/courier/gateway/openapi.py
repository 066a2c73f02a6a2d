"""The OpenAPI 3.1 document served at ``/openapi.json``, generated from the code.

Every request and answer body is a msgspec Struct that the gateway decodes or
encodes with; their component schemas come from
:func:`msgspec.json.schema_components`, so the document states what the code
checks (types, required fields, ``Meta`` bounds, enums, docstrings). Each
registered event type's envelope and ``data`` come from its compiled schema in
the registry: clients see the real shape of every type, under
``<Type>.<name>``. Written here by hand is only what no Struct holds: the
paths, their answers, and this gateway's limits (from its settings).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec

from courier.gateway.admin import SchemaChange
from courier.gateway.ingest import batch_struct
from courier.gateway.repair import RepairsLimit
from courier.gateway.responses import Accepted, ErrorAnswer, RejectedEvent
from courier.model import INVALID_TYPE, TYPE_NAME_PATTERN
from courier.repair import RedeliverRequest, RepairRecord, RepublishRequest
from courier.repair.resubmit import ResubmitRequest
from courier.schema import ApplyResult, CompiledType
from courier.settings import GatewaySettings

log = logging.getLogger("courier.gateway")

_REF = "#/components/schemas/{name}"
#: The bodies the routes decode and the answers they encode, by component name.
_BODIES: dict[str, Any] = {
    "Accepted": Accepted,
    "Applied": ApplyResult,
    "Error": ErrorAnswer,
    "Redeliver": RedeliverRequest,
    "RejectedEvent": RejectedEvent,
    "Repair": RepairRecord,
    "Republish": RepublishRequest,
    "Resubmit": ResubmitRequest,
    "SchemaChange": SchemaChange,
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _components(limits: GatewaySettings, types: Mapping[str, CompiledType]) -> dict[str, Any]:
    """Component schemas: the bodies of ``_BODIES``, each type's envelope, the batch."""
    refs, schemas = msgspec.json.schema_components(list(_BODIES.values()), ref_template=_REF)
    for name, ref in zip(_BODIES, refs, strict=True):
        struct_name = ref["$ref"].rsplit("/", 1)[1]
        if struct_name != name:
            schemas[name] = schemas.pop(struct_name)
    # Each type on its own, under its own prefix: two types may both nest a record
    # called, say, "Location", with different fields.
    mapping: dict[str, str] = {}
    for name, compiled in sorted(types.items()):
        if name == INVALID_TYPE:
            continue
        template = _REF.format(name=f"{name}.{{name}}")
        try:
            (envelope,), own = msgspec.json.schema_components(
                [compiled.event_struct], ref_template=template
            )
        except (KeyError, TypeError, ValueError) as exc:
            # The document must not fail for a type it cannot describe: say so instead.
            log.warning(
                "the OpenAPI document cannot describe %s v%d: %r", name, compiled.version, exc
            )
            own = {"event": {"type": "object", "description": f"See GET /v1/schemas/{name}."}}
            envelope = {"$ref": template.format(name="event")}
        schemas.update({f"{name}.{k}": v for k, v in own.items()})
        mapping[name] = envelope["$ref"]
    if mapping:
        schemas["Event"] = {
            "oneOf": [{"$ref": ref} for ref in mapping.values()],
            "discriminator": {"propertyName": "type", "mapping": mapping},
        }
    else:
        schemas["Event"] = {
            "type": "object",
            "description": "No event type is registered yet (see /v1/schemas).",
        }
    schemas["Batch"] = _batch_schema(limits)
    return schemas


def _batch_schema(limits: GatewaySettings) -> dict[str, Any]:
    """``{"events": [...], "sent_at"?}``, with this gateway's limit on the events."""
    (ref,), schemas = msgspec.json.schema_components([batch_struct(msgspec.Raw)], ref_template=_REF)
    schema: dict[str, Any] = schemas[ref["$ref"].rsplit("/", 1)[1]]
    events = schema["properties"]["events"]
    events["items"] = _ref("Event")
    events["maxItems"] = limits.max_events_per_batch  # counted by hand: a 413, not a 400
    return schema


# -- answers -------------------------------------------------------------------------


def _error(description: str, retry: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if retry:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying the whole batch.",
                "schema": {"type": "integer"},
            }
        }
    return response


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _refusals(*, admin: bool = False) -> dict[str, Any]:
    """The 401/403 answers of a route behind API keys."""
    return {
        "401": _error("No API key, or an unknown one (send Authorization: Bearer or X-API-Key)."),
        "403": _error(
            "Not the admin key, or none is configured."
            if admin
            else "The key may not send an event type of the batch (named); nothing accepted."
        ),
    }


_TYPE_PARAM = {
    "name": "type",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{TYPE_NAME_PATTERN}$"},
}


# -- paths ---------------------------------------------------------------------------


def _repair_paths(security: list[dict[str, list[str]]]) -> dict[str, Any]:
    """The ``/v1/admin/`` repair routes (DESIGN §10): admin key, every call recorded."""

    def post(summary: str, body: str, extra: dict[str, Any], answer: Any) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "security": security,
                "parameters": [_TYPE_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(body)}},
                },
                "responses": {
                    "200": _json("Done; the repair record.", answer),
                    "400": _error("Malformed body (recorded as refused)."),
                    **_refusals(admin=True),
                    "404": _error("Unknown event type (recorded as refused)."),
                    "408": _error("The body did not arrive in time."),
                    **extra,
                    "413": _error("Body too large."),
                    "503": _error(
                        "Transport or repair log unavailable; retrying is safe.", retry=True
                    ),
                },
            }
        }

    resubmitted = {
        "allOf": [
            _ref("Repair"),
            {
                "type": "object",
                "properties": {
                    "rejected": {
                        "type": "array",
                        "description": "Every event rejected again, with the reason.",
                        "items": _ref("RejectedEvent"),
                    }
                },
            },
        ]
    }
    return {
        "/v1/admin/repairs": {
            "get": {
                "summary": "The repair log, newest first (admin key)",
                "security": security,
                "parameters": [
                    {"name": "limit", "in": "query", "schema": msgspec.json.schema(RepairsLimit)}
                ],
                "responses": {
                    "200": _json("Repair records", {"type": "array", "items": _ref("Repair")}),
                    "400": _error("Bad limit."),
                    **_refusals(admin=True),
                    "503": _error("Repair log unavailable.", retry=True),
                },
            }
        },
        "/v1/admin/redeliver/{type}": post(
            "Redeliver a type from a stream sequence or time (admin key)",
            "Redeliver",
            {
                "409": _error(
                    "Refused: the start is no longer retained, would skip unacked messages, "
                    "or the consumer is not as provisioned; nothing changed."
                )
            },
            _ref("Repair"),
        ),
        "/v1/admin/resubmit/{type}": post(
            "Validate rejected (_invalid) events again and store the valid ones (admin key)",
            "Resubmit",
            {},
            resubmitted,
        ),
        "/v1/admin/republish/{type}": post(
            "Publish a stored (quarantined) message again, after the fix (admin key)",
            "Republish",
            {"409": _error("Refused in the current state; nothing changed.")},
            _ref("Repair"),
        ),
    }


def _events_path(limits: GatewaySettings, security: list[dict[str, list[str]]]) -> dict[str, Any]:
    return {
        "post": {
            "summary": "Send a batch of events",
            "security": security,
            "parameters": [
                {
                    "name": "Content-Encoding",
                    "in": "header",
                    "schema": {"type": "string", "enum": ["identity", "gzip", "zstd"]},
                }
            ],
            "requestBody": {
                "required": True,
                "description": f"At most {limits.max_body_bytes} bytes compressed and "
                f"decompressed, {limits.max_event_bytes} bytes per event, JSON depth "
                f"{limits.max_json_depth}.",
                "content": {
                    "application/json": {"schema": _ref("Batch")},
                    "application/x-ndjson": {
                        "schema": {"type": "string", "description": "One Event object per line."}
                    },
                },
            },
            "responses": {
                "200": _json(
                    "Every accepted event is stored; rejected ones are listed with the reason.",
                    _ref("Accepted"),
                ),
                "400": _error("Malformed body or nested too deeply; fix it."),
                **_refusals(),
                "408": _error(
                    f"The body did not arrive within {limits.body_read_timeout_secs:g}s."
                ),
                "413": _error("Body or batch too large; split it."),
                "415": _error("Unsupported Content-Type or Content-Encoding."),
                "429": _error(
                    "The key is over its rate limit; nothing accepted, retry the whole "
                    "batch after Retry-After.",
                    retry=True,
                ),
                "503": _error(
                    "Transport unavailable or full; nothing accepted, retry the "
                    "whole batch (same ids) after Retry-After.",
                    retry=True,
                ),
            },
        }
    }


def _schema_paths(
    security: list[dict[str, list[str]]], admin_security: list[dict[str, list[str]]]
) -> dict[str, Any]:
    return {
        "/v1/schemas": {
            "get": {
                "summary": "Registered event types with every schema version",
                "security": security,
                "responses": {
                    "200": _json("Type records", {"type": "array", "items": _ref("TypeRecord")}),
                    **_refusals(),
                    "503": _error("Registry unavailable.", retry=True),
                },
            }
        },
        "/v1/schemas/{type}": {
            "put": {
                "summary": "Register a type or a new schema version (admin key)",
                "security": admin_security,
                "parameters": [_TYPE_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("SchemaChange")}},
                },
                "responses": {
                    "200": _json("Applied (or unchanged); streams provisioned.", _ref("Applied")),
                    "400": _error("Malformed body or invalid schema/settings."),
                    **_refusals(admin=True),
                    "408": _error("The body did not arrive in time."),
                    "409": _error("Incompatible with the current version; send force."),
                    "413": _error("Body too large."),
                    "503": _error(
                        "Registry unavailable, or the type's stream could not be created "
                        "(the error says why); PUT again after Retry-After (idempotent).",
                        retry=True,
                    ),
                },
            },
            "get": {
                "summary": "One event type",
                "security": security,
                "parameters": [_TYPE_PARAM],
                "responses": {
                    "200": _json("Type record", _ref("TypeRecord")),
                    "404": _error("No such event type."),
                    **_refusals(),
                    "503": _error("Registry unavailable.", retry=True),
                },
            },
        },
    }


#: The registry's record of a type (``courier.schema.record_to_json``, not a Struct).
_TYPE_RECORD = {
    "type": "object",
    "required": ["name", "settings", "latest_version", "versions"],
    "properties": {
        "name": {"type": "string"},
        "settings": {"type": "object"},
        "enabled_at": {"type": "string", "format": "date-time"},
        "latest_version": {"type": "integer"},
        "versions": {"type": "array", "items": {"type": "object"}},
    },
}


def openapi_document(
    limits: GatewaySettings,
    *,
    auth_required: bool = False,
    types: Mapping[str, CompiledType] | None = None,
) -> dict[str, Any]:
    """The API description: ``types`` (the registry's) and the configured limits written in.

    ``auth_required``: the gateway has API keys configured, so the key is not optional.
    """
    keyed: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    security = keyed if auth_required else [*keyed, {}]
    plain_ok = {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Courier Event Service",
            "version": "1",
            "description": "Reliable event delivery into hourly buckets. A 2xx answer means "
            "every accepted event is stored durably.",
            # This gateway's limits, for clients that size their own requests (courier repair).
            "x-courier-limits": {
                "max_body_bytes": limits.max_body_bytes,
                "max_events_per_batch": limits.max_events_per_batch,
                "max_event_bytes": limits.max_event_bytes,
            },
        },
        "paths": {
            "/v1/events": _events_path(limits, security),
            **_schema_paths(security, security),
            **_repair_paths(security),
            "/healthz": {"get": {"summary": "Process alive", "responses": {"200": plain_ok}}},
            "/readyz": {
                "get": {
                    "summary": "Transport connected and registry loaded",
                    "responses": {"200": plain_ok, "503": _error("Not ready.")},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": plain_ok}}},
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`courier keys new`). Optional while the gateway "
                    "has no keys configured (local demo).",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": {
                **_components(limits, types or {}),
                "TypeRecord": _TYPE_RECORD,
            },
        },
    }

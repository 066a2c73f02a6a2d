"""The hand-written OpenAPI 3.1 document served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from courier.settings import GatewaySettings


def _error(description: str, retry: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying the whole batch.",
                "schema": {"type": "integer"},
            }
        }
    return response


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


def _record_answer(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Repair"}}},
    }


def _repair_paths(security: list[dict[str, list[str]]]) -> dict[str, Any]:
    """The ``/v1/admin/`` repair routes (DESIGN §10): admin key, every call recorded."""
    type_param = [{"name": "type", "in": "path", "required": True, "schema": {"type": "string"}}]

    def post(summary: str, body_ref: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "security": security,
                "parameters": type_param,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": body_ref}}},
                },
                "responses": {
                    "200": _record_answer("Done; the repair record."),
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

    return {
        "/v1/admin/repairs": {
            "get": {
                "summary": "The repair log, newest first (admin key)",
                "security": security,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "Repair records",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Repair"},
                                }
                            }
                        },
                    },
                    "400": _error("Bad limit."),
                    **_refusals(admin=True),
                    "503": _error("Repair log unavailable.", retry=True),
                },
            }
        },
        "/v1/admin/redeliver/{type}": post(
            "Redeliver a type from a stream sequence or time (admin key)",
            "#/components/schemas/Redeliver",
            {
                "409": _error(
                    "Refused: the start is no longer retained, would skip unacked messages, "
                    "or the consumer is not as provisioned; nothing changed."
                )
            },
        ),
        "/v1/admin/resubmit/{type}": post(
            "Validate rejected (_invalid) events again and store the valid ones (admin key)",
            "#/components/schemas/Resubmit",
            {},
        ),
        "/v1/admin/republish/{type}": post(
            "Publish a stored (quarantined) message again, after the fix (admin key)",
            "#/components/schemas/Republish",
            {"409": _error("Refused in the current state; nothing changed.")},
        ),
    }


def _repair_schemas() -> dict[str, Any]:
    return {
        "Redeliver": {
            "type": "object",
            "additionalProperties": False,
            "description": "Exactly one of from_seq and from_time.",
            "properties": {
                "from_seq": {"type": "integer", "minimum": 1},
                "from_time": {"type": "string", "format": "date-time"},
            },
        },
        "Resubmit": {
            "type": "object",
            "required": ["events"],
            "additionalProperties": False,
            "description": "The raw events of _invalid rows of this type; answered like "
            "POST /v1/events, with the repair record.",
            "properties": {
                "events": {"type": "array", "items": {"type": "object"}},
                "from_time": {"type": "string", "format": "date-time"},
                "to_time": {"type": "string", "format": "date-time"},
            },
        },
        "Republish": {
            "type": "object",
            "required": ["stream_seq", "body_base64"],
            "additionalProperties": False,
            "description": "A quarantine record's fields; published with the message id "
            "replay.<type>.<stream_seq>.",
            "properties": {
                "stream_seq": {"type": "integer", "minimum": 1},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "body_base64": {"type": "string", "contentEncoding": "base64"},
            },
        },
        "Repair": {
            "type": "object",
            "required": [
                "id",
                "operation",
                "event_type",
                "arguments",
                "principal",
                "started_at",
                "outcome",
            ],
            "properties": {
                "format_version": {"type": "integer"},
                "id": {"type": "string"},
                "operation": {"type": "string"},
                "event_type": {"type": "string"},
                "arguments": {"type": "object"},
                "principal": {"type": "string", "description": "The key's name, never the key."},
                "started_at": {"type": "string", "format": "date-time"},
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
                "outcome": {"type": "string", "enum": ["started", "done", "refused", "failed"]},
                "error": {"type": ["string", "null"]},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                "result": {"type": "object"},
                "rejected": {
                    "type": "array",
                    "description": "resubmit only: every event rejected again, with the reason.",
                    "items": {"type": "object"},
                },
            },
        },
    }


def openapi_document(limits: GatewaySettings, *, auth_required: bool = False) -> dict[str, Any]:
    """The API description, with the configured limits written into it.

    ``auth_required``: the gateway has API keys configured, so the key is not optional.
    """
    keyed: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    security = keyed if auth_required else [*keyed, {}]
    admin_security = security
    event = {
        "type": "object",
        "required": ["type", "data"],
        "additionalProperties": False,
        "properties": {
            "type": {
                "type": "string",
                "pattern": "^[A-Z][A-Za-z0-9_]{0,63}$",
                "description": "A registered event type (see /v1/schemas).",
            },
            "id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 128,
                "description": "Idempotency key (UUIDv7 recommended). Missing: the gateway "
                "assigns one and retries of the event cannot be deduplicated.",
            },
            "time": {"type": "string", "format": "date-time", "description": "Client time."},
            "data": {"type": "object", "description": "Payload, validated by the type's schema."},
        },
    }
    batch = {
        "type": "object",
        "required": ["events"],
        "additionalProperties": False,
        "properties": {
            "sent_at": {"type": "string", "format": "date-time"},
            "events": {
                "type": "array",
                "maxItems": limits.max_events_per_batch,
                "items": {"$ref": "#/components/schemas/Event"},
            },
        },
    }
    accepted = {
        "type": "object",
        "required": ["accepted", "rejected"],
        "properties": {
            "accepted": {"type": "integer", "description": "Events stored durably."},
            "rejected": {
                "type": "array",
                "description": "Events rejected for good (stored in _invalid); do not retry.",
                "items": {
                    "type": "object",
                    "required": ["index", "error"],
                    "properties": {
                        "index": {"type": "integer"},
                        "id": {"type": "string"},
                        "error": {"type": "string"},
                    },
                },
            },
        },
    }
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What happened, what to do."}},
    }
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
            "/v1/events": {
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
                            "application/json": {"schema": {"$ref": "#/components/schemas/Batch"}},
                            "application/x-ndjson": {
                                "schema": {
                                    "type": "string",
                                    "description": "One Event object per line.",
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Every accepted event is stored; rejected ones "
                            "are listed with the reason.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Accepted"}
                                }
                            },
                        },
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
            },
            "/v1/schemas": {
                "get": {
                    "summary": "Registered event types with every schema version",
                    "security": security,
                    "responses": {
                        "200": {
                            "description": "Type records",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/TypeRecord"},
                                    }
                                }
                            },
                        },
                        **_refusals(),
                        "503": _error("Registry unavailable.", retry=True),
                    },
                }
            },
            "/v1/schemas/{type}": {
                "put": {
                    "summary": "Register a type or a new schema version (admin key)",
                    "security": admin_security,
                    "parameters": [
                        {
                            "name": "type",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/SchemaChange"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Applied (or unchanged); streams provisioned.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Applied"}
                                }
                            },
                        },
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
                    "parameters": [
                        {
                            "name": "type",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "Type record",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/TypeRecord"}
                                }
                            },
                        },
                        "404": _error("No such event type."),
                        **_refusals(),
                        "503": _error("Registry unavailable.", retry=True),
                    },
                },
            },
            **_repair_paths(admin_security),
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
                "SchemaChange": {
                    "type": "object",
                    "required": ["schema"],
                    "additionalProperties": False,
                    "properties": {
                        "schema": {"type": "object", "description": "Avro record; name = type."},
                        "settings": {
                            "type": "object",
                            "description": "owner, tier, finance, grace_secs.",
                        },
                        "force": {"type": "boolean", "default": False},
                    },
                },
                "Applied": {
                    "type": "object",
                    "required": ["name", "action", "version"],
                    "properties": {
                        "name": {"type": "string"},
                        "action": {
                            "type": "string",
                            "enum": ["created", "new-version", "settings-updated", "unchanged"],
                        },
                        "version": {"type": "integer"},
                    },
                },
                **_repair_schemas(),
                "Event": event,
                "Batch": batch,
                "Accepted": accepted,
                "Error": error,
                "TypeRecord": {
                    "type": "object",
                    "required": ["name", "settings", "latest_version", "versions"],
                    "properties": {
                        "name": {"type": "string"},
                        "settings": {"type": "object"},
                        "enabled_at": {"type": "string", "format": "date-time"},
                        "latest_version": {"type": "integer"},
                        "versions": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
    }

"""Names of streams, subjects, consumers and KV buckets: one place, so they never drift."""

from __future__ import annotations

EVENTS_SUBJECT_PREFIX = "courier.events."
CLOSED_SUBJECT_PREFIX = "courier.closed."
CLOSED_STREAM = "COURIER_CLOSED"
WRITER_CONSUMER = "writer"
AUDIT_CONSUMER = "audit"
SCHEMAS_KV = "courier_schemas"
CATALOG_KV = "courier_buckets"
AUDIT_KV = "courier_audit"
REPAIRS_KV = "courier_repairs"


def stream_name(event_type: str) -> str:
    return f"COURIER_{event_type}"


def events_subject(event_type: str) -> str:
    return f"{EVENTS_SUBJECT_PREFIX}{event_type}"


def closed_subject(event_type: str) -> str:
    return f"{CLOSED_SUBJECT_PREFIX}{event_type}"

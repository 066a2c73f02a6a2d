"""The gateway's admin API: schema changes over HTTP, for the admin key only.

``PUT /v1/schemas/{type}`` with ``{"schema": <Avro record>, "settings": {...}?,
"force": false?}`` does what ``courier schema apply`` does for one type:

1. validate the definition (the record's name must be the path's type);
2. apply it to the registry (idempotent; an incompatible change is refused
   with 409 unless ``force``);
3. provision the type's stream and consumers (and ``_invalid``'s).

A crash between 2 and 3 leaves a registered type without a stream: its
events get 503 until the next apply or ``courier provision``, never loss.
The repair routes, under ``/v1/admin/`` behind the same key, are in
:mod:`courier.gateway.repair`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from courier.errors import (
    ConcurrentUpdateError,
    ConflictError,
    IncompatibleSchemaError,
    MalformedRequestError,
    ProvisioningError,
    SchemaError,
)
from courier.gateway.body import check_depth
from courier.schema import ApplyResult, Registry, TypeDefinition
from courier.schema.avro import event_type_name
from courier.schema.registry import settings_from_mapping

#: Creates or updates the streams of an event type (a no-op without a transport).
Provision = Callable[[str], Awaitable[None]]
_MAX_SCHEMA_DEPTH = 64


class SchemaChange(msgspec.Struct, forbid_unknown_fields=True):
    """A type's definition: its Avro record (named like the type), its settings
    (owner, tier, finance, grace_secs), and ``force`` to apply an incompatible change."""

    schema: dict[str, Any]
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    force: bool = False


async def apply_schema(
    registry: Registry, name: str, body: bytes, provision: Provision
) -> ApplyResult:
    """Apply one type definition sent over HTTP; errors are RequestErrors (400/409)."""
    check_depth(body, _MAX_SCHEMA_DEPTH)
    try:  # step 1
        doc = msgspec.json.decode(body, type=SchemaChange)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedRequestError(
            f'body must be {{"schema": <Avro record>, "settings"?: {{...}}, "force"?: bool}}: {exc}'
        ) from exc
    if event_type_name(doc.schema) != name:
        raise MalformedRequestError(
            f"the schema's record name {doc.schema.get('name')!r} must be the type {name!r}"
        )
    try:
        settings = settings_from_mapping(doc.settings, f"type {name}")
        results = await registry.apply(
            [TypeDefinition(name, doc.schema, settings)], force=doc.force
        )
    except IncompatibleSchemaError as exc:  # step 2
        raise ConflictError(str(exc)) from exc
    except ConcurrentUpdateError as exc:
        raise ConflictError(f"{exc}; nothing was applied") from exc
    except SchemaError as exc:
        raise MalformedRequestError(f"invalid definition of {name!r}: {exc}") from exc
    try:
        await provision(name)  # step 3
    except ProvisioningError as exc:
        raise ProvisioningError(
            f"{name} is registered (version {results[0].version}) but has no stream yet, "
            f"so its events get 503: {exc}"
        ) from exc
    return results[0]

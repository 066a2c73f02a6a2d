"""Event type schemas: Avro parsing, compatibility, compiled codecs and the registry."""

from courier.schema.avro import parse_schema
from courier.schema.codec import (
    INVALID_RAW_MAX_BYTES,
    CompiledType,
    TypeSettings,
    compile_type,
    invalid_type,
)
from courier.schema.compat import check_backward_compatible
from courier.schema.registry import (
    ApplyResult,
    Registry,
    SchemaVersion,
    TypeDefinition,
    TypeRecord,
    load_definitions,
    record_to_json,
)

__all__ = [
    "INVALID_RAW_MAX_BYTES",
    "ApplyResult",
    "CompiledType",
    "Registry",
    "SchemaVersion",
    "TypeDefinition",
    "TypeRecord",
    "TypeSettings",
    "check_backward_compatible",
    "compile_type",
    "invalid_type",
    "load_definitions",
    "parse_schema",
    "record_to_json",
]

"""Any schema JSON gives a SchemaError or a type; any event JSON a ValidationError or a
stored line that decodes. Nothing else escapes (a PUT or POST must never answer 500)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgspec
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from courier.errors import SchemaError
from courier.schema import TypeSettings, check_backward_compatible, compile_type

_WORDS = ["null", "int", "long", "string", "bytes", "record", "enum", "fixed", "array", "map",
          "decimal", "X", "n.X", "date", "timestamp-millis", "time-millis", "a", "T", "uuid"]  # fmt: skip
_KEYS = ["type", "name", "namespace", "fields", "symbols", "size", "items", "values",
         "logicalType", "precision", "scale", "default", "aliases"]  # fmt: skip
_LEAF = st.none() | st.booleans() | st.integers(-3, 40) | st.sampled_from(_WORDS)
_JSON = st.recursive(
    _LEAF,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(_KEYS), c, max_size=6),
    max_leaves=25,
)
_FIELD = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b", "c"]), "type": _JSON},
    optional={"default": _JSON, "aliases": _JSON},
)


def _record(fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "record", "name": "T", "fields": fields}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_FIELD, max_size=3), st.lists(_FIELD, max_size=3))
def test_any_schema_json_compiles_or_raises_a_schema_error(
    old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> None:
    for attempt in (
        lambda: compile_type("T", _record(new), 1, TypeSettings()),
        lambda: check_backward_compatible(_record(old), _record(new)),
        lambda: compile_type("T", _record(new), 2, TypeSettings(), history=[_record(old)]),
    ):
        try:
            attempt()
        except SchemaError:
            pass


_TYPES: list[Any] = [
    {"type": "int", "logicalType": "date"},
    {"type": "int", "logicalType": "time-millis"},
    {"type": "long", "logicalType": "time-micros"},
    {"type": "long", "logicalType": "timestamp-millis"},
    {"type": "long", "logicalType": "timestamp-nanos"},
    {"type": "long", "logicalType": "local-timestamp-micros"},
    {"type": "long", "logicalType": "local-timestamp-nanos"},
    {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2},
    {"type": "fixed", "name": "F", "size": 4, "logicalType": "decimal", "precision": 5, "scale": 1},
    ["null", "string", "long"],
    ["null", "int"],
    {"type": "array", "items": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
]
_T = compile_type(
    "T", _record([{"name": f"f{i}", "type": t} for i, t in enumerate(_TYPES)]), 1, TypeSettings()
)
_GOOD: dict[str, Any] = {f"f{i}": 0 for i in range(7)} | {
    "f7": "1", "f8": "1", "f9": None, "f10": None, "f11": []
}  # fmt: skip
_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["2026-11-26", "10:14:59.001", "2026-11-26T10:14:59.123456789Z",
                       "9999-12-31T23:59:59.999999999-23:59", "12.34", "-0.00", "NaN", "1e400"])
)  # fmt: skip
_VALUE = st.recursive(
    _SCALAR,
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(st.sampled_from(["string", "long", "int", "bytes"]), c, max_size=2)
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(_GOOD)), _VALUE)
def test_any_event_json_is_rejected_or_stored_and_decoded(field: str, value: Any) -> None:
    raw = json.dumps({"type": "T", "data": {**_GOOD, field: value}}).encode()
    try:
        event = msgspec.json.decode(raw, type=_T.event_struct)
    except msgspec.ValidationError:
        return
    body = _T.encode_stored([event], ["i"], None, dt.datetime.now(dt.UTC))
    now = pa.array([dt.datetime.now(dt.UTC)], pa.timestamp("us", tz="UTC"))
    assert _T.decode_stored(body, now).num_rows == 1

"""encode_stored -> decode_stored keeps every value of every supported type."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from courier.errors import StoredBodyError
from courier.schema import CompiledType, TypeSettings, _structs, compile_type, invalid_type
from courier.schema.avro import Array, AvroType, Enum, Fixed, Map, Nullable, Primitive, Record

RECEIVED = dt.datetime(2026, 11, 26, 10, 15, 2, 500000, tzinfo=dt.UTC)
SENT = dt.datetime(2026, 11, 26, 10, 15, 2, 120000, tzinfo=dt.UTC)
PUBLISHED = dt.datetime(2026, 11, 26, 10, 15, 3, tzinfo=dt.UTC)

ITEM = {
    "type": "record",
    "name": "Item",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "attrs", "type": {"type": "map", "values": {"type": "array", "items": "long"}}},
        {"name": "blob", "type": ["null", "bytes"], "default": None},
    ],
}
RICH = {
    "type": "record",
    "name": "Rich",
    "fields": [
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "by", "type": "bytes"},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "e", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "u", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "ns", "type": ["null", "string"], "default": None},
        {"name": "items", "type": {"type": "array", "items": ITEM}, "default": []},
        {"name": "one", "type": ["null", "Item"], "default": None},
        {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}},
        {
            "name": "grid",
            "type": {"type": "array", "items": {"type": "array", "items": ["null", "int"]}},
        },
        {
            "name": "maybe_day",
            "type": ["null", {"type": "int", "logicalType": "date"}],
            "default": None,
        },
    ],
}


@pytest.fixture(scope="module")
def rich() -> CompiledType:
    return compile_type("Rich", RICH, 7, TypeSettings())


def stored_body(t: CompiledType, payloads: list[dict[str, Any]]) -> tuple[bytes, pa.Array]:
    """The stored body of events with these payloads (ids ``id-0``...), as the gateway
    writes it, and one ``published_at`` per line."""
    events_json = [{"type": t.name, "id": f"e{n}", "data": p} for n, p in enumerate(payloads)]
    events = msgspec.json.decode(msgspec.json.encode(events_json), type=list[t.event_struct])  # type: ignore[name-defined]
    ids = [f"id-{n}" for n in range(len(events))]
    body = t.encode_stored(events, ids, SENT, RECEIVED)
    return body, pa.array([PUBLISHED] * len(events), pa.timestamp("us", tz="UTC"))


def roundtrip(t: CompiledType, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body, published = stored_body(t, payloads)
    assert body.count(b"\n") == len(payloads) and body.endswith(b"\n")
    table = t.decode_stored(body, published)
    assert table.schema == t.arrow_schema
    return table.to_pylist()


def expect(t: AvroType, v: Any) -> Any:
    """What the bucket column holds for the JSON input value ``v``."""
    if v is None:
        return None
    if isinstance(t, Nullable):
        return expect(t.inner, v)
    if isinstance(t, Fixed) or (isinstance(t, Primitive) and t.kind == "bytes"):
        return v.encode("latin-1")
    if isinstance(t, Primitive):
        if t.logical == "date":
            return dt.date.fromisoformat(v)
        if t.logical == "uuid":
            return str(uuid.UUID(v))
        if t.logical in ("timestamp-millis", "timestamp-micros"):
            ts = dt.datetime.fromisoformat(v).astimezone(dt.UTC)
            if t.logical == "timestamp-millis":
                ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)
            return ts
        return float(v) if t.kind in ("float", "double") else v
    if isinstance(t, Array):
        return [expect(t.items, x) for x in v]
    if isinstance(t, Map):
        return [(k, expect(t.values, x)) for k, x in v.items()]
    if isinstance(t, Record):
        return {f.name: expect(f.type, v.get(f.name, f.default)) for f in t.fields}
    assert isinstance(t, Enum)
    return v


def full_payload() -> dict[str, Any]:
    return {
        "b": True,
        "i": -(2**31),
        "l": 2**63 - 1,
        "f": 1.5,
        "d": -0.1,
        "s": 'naïve ☃ "quoted"\n',
        "by": "\u0000\u00ff\u007fA",
        "fx": "ab\u00e9d",
        "e": "GREEN",
        "u": "0193A7C21B2C7D3E8F40123456789ABC",
        "day": "2026-11-26",
        "ms": "2026-11-26T10:14:59.001999+02:00",
        "us": "2026-11-26T10:14:59.000001Z",
        "ns": "x",
        "items": [
            {"name": "a", "attrs": {"k": [1, 2], "empty": []}, "blob": "\u00ff"},
            {"name": "b", "attrs": {}},
        ],
        "one": {"name": "solo", "attrs": {"z": [-1]}, "blob": None},
        "tags": {"x": "1", "y": "2"},
        "grid": [[1, None], [], [3]],
        "maybe_day": "1970-01-01",
    }


def test_every_supported_type_round_trips(rich: CompiledType) -> None:
    payload = full_payload()
    [row] = roundtrip(rich, [payload])
    assert row == {
        "id": "id-0",
        "time": None,
        "sent_at": SENT,
        "received_at": RECEIVED,
        "published_at": PUBLISHED,
        "received_dc": None,  # decode_stored alone names no DC
        "schema_version": 7,
        **expect(rich.record, payload),
    }
    assert row["ms"] == dt.datetime(2026, 11, 26, 8, 14, 59, 1000, tzinfo=dt.UTC)
    assert row["u"] == "0193a7c2-1b2c-7d3e-8f40-123456789abc"
    assert row["items"][0]["attrs"] == [("k", [1, 2]), ("empty", [])]


def test_nulls_and_defaults_round_trip(rich: CompiledType) -> None:
    payload = full_payload()
    for key in ("ns", "items", "one", "tags", "maybe_day"):
        del payload[key]
    [row] = roundtrip(rich, [payload])
    assert (row["ns"], row["items"], row["one"], row["tags"], row["maybe_day"]) == (
        None,
        [],
        None,
        [],
        None,
    )


def test_the_bucket_columns_have_the_documented_types(rich: CompiledType) -> None:
    schema = rich.arrow_schema
    assert schema.names[:7] == [
        "id", "time", "sent_at", "received_at", "published_at", "received_dc", "schema_version"
    ]  # fmt: skip
    utc_us = pa.timestamp("us", tz="UTC")
    assert [schema.field(n).type for n in schema.names[:7]] == [
        pa.string(),
        *[utc_us] * 4,
        pa.string(),
        pa.int32(),
    ]
    assert schema.field("ms").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("day").type == pa.date32()
    assert schema.field("fx").type == pa.binary()
    assert schema.field("tags").type == pa.map_(pa.string(), pa.string())
    assert schema.field("i").type == pa.int32() and schema.field("f").type == pa.float32()
    assert all(f.nullable for f in schema)


def test_line_order_is_kept_across_concatenated_bodies(rich: CompiledType) -> None:
    payloads = []
    for n in range(3000):
        p = full_payload()
        p["l"] = n
        payloads.append(p)
    rows = roundtrip(rich, payloads)
    assert [r["l"] for r in rows] == list(range(3000))


def test_concatenated_message_bodies_decode_as_one_table() -> None:
    t = invalid_type()
    events = [t.event_struct(data=t.payload_struct(event_type=None, error="bad", index=n, raw="{"))  # type: ignore[call-arg]
              for n in range(3)]  # fmt: skip
    body = b"".join(t.encode_stored([e], [f"id{n}"], None, RECEIVED) for n, e in enumerate(events))
    published = pa.array([PUBLISHED] * 3, pa.timestamp("us", tz="UTC"))
    table = t.decode_stored(body, published)
    assert table.column("index").to_pylist() == [0, 1, 2]
    assert table.column("sent_at").to_pylist() == [None] * 3


def test_an_empty_body_decodes_to_an_empty_table(rich: CompiledType) -> None:
    table = rich.decode_stored(b"", pa.array([], pa.timestamp("us", tz="UTC")))
    assert table.num_rows == 0 and table.schema == rich.arrow_schema


def test_a_corrupt_body_raises_a_stored_body_error(rich: CompiledType) -> None:
    with pytest.raises(StoredBodyError, match="Rich v7"):
        rich.decode_stored(b'{"id": \n', pa.array([PUBLISHED], pa.timestamp("us", tz="UTC")))


def test_the_type_tag_in_a_stored_line_is_ignored(rich: CompiledType) -> None:
    t = invalid_type()
    line = (
        b'{"type":"_invalid","id":"x","time":null,"sent_at":null,'
        b'"received_at":"2026-11-26T10:15:02Z","schema_version":1,'
        b'"data":{"event_type":"PlaySong","error":"e","index":4,"raw":"{}"}}\n'
    )
    table = t.decode_stored(line, pa.array([PUBLISHED], pa.timestamp("us", tz="UTC")))
    assert table.column("event_type").to_pylist() == ["PlaySong"]


def test_a_type_with_no_fields_round_trips() -> None:
    t = compile_type("Ping", {"type": "record", "name": "Ping", "fields": []}, 1, TypeSettings())
    [row] = roundtrip(t, [{}])
    assert row["id"] == "id-0" and len(row) == 7


# --- property test over generated payloads ------------------------------------

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)


def strategy(t: AvroType) -> st.SearchStrategy[Any]:
    if isinstance(t, Nullable):
        return st.none() | strategy(t.inner)
    if isinstance(t, Primitive):
        if t.logical == "date":
            return st.dates().map(dt.date.isoformat)
        if t.logical == "uuid":
            return st.uuids().map(str)
        if t.logical:
            tz = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5, minutes=-30))])
            ts = st.datetimes(
                min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(2200, 1, 1), timezones=tz
            )
            return ts.map(dt.datetime.isoformat)
        return {
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "float": st.floats(width=32, allow_nan=False, allow_infinity=False),
            "double": st.floats(allow_nan=False, allow_infinity=False),
            "string": _TEXT,
            "bytes": st.binary(max_size=6).map(lambda b: b.decode("latin-1")),
        }[t.kind]
    if isinstance(t, Fixed):
        return st.binary(min_size=t.size, max_size=t.size).map(lambda b: b.decode("latin-1"))
    if isinstance(t, Enum):
        return st.sampled_from(t.symbols)
    if isinstance(t, Array):
        return st.lists(strategy(t.items), max_size=3)
    if isinstance(t, Map):
        return st.dictionaries(_TEXT, strategy(t.values), max_size=3)
    assert isinstance(t, Record)
    return st.fixed_dictionaries({f.name: strategy(f.type) for f in t.fields})


_RICH = compile_type("Rich", RICH, 7, TypeSettings())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(strategy(_RICH.record), min_size=1, max_size=5))
def test_generated_payloads_round_trip(payloads: list[dict[str, Any]]) -> None:
    rows = roundtrip(_RICH, payloads)
    for row, payload in zip(rows, payloads, strict=True):
        assert {k: row[k] for k in payload} == expect(_RICH.record, payload)


# --- issue 14: exact decimals and the numeric forms of logical types ------------------

NUMERIC = {
    "type": "record",
    "name": "Numeric",
    "fields": [
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 4}},
        {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ns", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "lu", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    ],
}  # fmt: skip
_NUMERIC = compile_type("Numeric", NUMERIC, 1, TypeSettings())
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def roundtrip_text(t: CompiledType, data_json: list[bytes]) -> list[dict[str, Any]]:
    """Like :func:`roundtrip`, from the payloads' JSON text (to keep numbers exact)."""
    text = b",".join(b'{"type":"%s","data":%s}' % (t.name.encode(), d) for d in data_json)
    events = msgspec.json.decode(b"[" + text + b"]", type=list[t.event_struct])  # type: ignore[name-defined]
    body = t.encode_stored(events, [f"id-{n}" for n in range(len(events))], SENT, RECEIVED)
    published = pa.array([PUBLISHED] * len(events), pa.timestamp("us", tz="UTC"))
    table = t.decode_stored(body, published)
    for name in ("ns", "lu"):  # beyond Python's datetime: compare as epoch integers
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(name).cast(pa.int64()))
    return table.to_pylist()


@settings(max_examples=80, deadline=None)
@given(
    amount=st.decimals(min_value=-(10**14) + 1, max_value=10**14 - 1, places=4, allow_nan=False),
    as_number=st.booleans(),
    ms=st.integers(-62_135_596_800_000, 253_402_300_799_999),
    ns=st.integers(-(2**63), 2**63 - 1),
    day=st.integers(-719_162, 2_932_896),
    tm=st.integers(0, 86_399_999),
    lu=st.integers(-(2**63), 2**63 - 1),
)
def test_decimals_and_logical_numbers_are_stored_exactly(
    amount: Decimal, as_number: bool, ms: int, ns: int, day: int, tm: int, lu: int
) -> None:
    text = str(amount) if as_number else f'"{amount}"'
    data = f'{{"amount":{text},"ms":{ms},"ns":{ns},"day":{day},"tm":{tm},"lu":{lu}}}'
    [row] = roundtrip_text(_NUMERIC, [data.encode()])
    assert row["amount"] == amount and row["amount"].as_tuple().exponent == -4
    assert row["ms"] == _EPOCH + dt.timedelta(milliseconds=ms)
    assert row["ns"] == ns
    assert row["day"] == dt.date(1970, 1, 1) + dt.timedelta(days=day)
    assert row["tm"] == (dt.datetime.min + dt.timedelta(milliseconds=tm)).time()
    assert row["lu"] == lu
    assert _NUMERIC.arrow_schema.field("lu").type == pa.timestamp("us")


def test_a_decimal_given_as_a_number_is_never_read_through_a_float() -> None:
    # 0.1 + 0.2 style: 12345678901234.1234 is not a float64 value.
    [row] = roundtrip_text(
        _NUMERIC, [b'{"amount":12345678901234.1234,"ms":0,"ns":0,"day":0,"tm":0,"lu":0}']
    )
    assert row["amount"] == Decimal("12345678901234.1234")


def test_a_decimal_default_fills_the_column_with_its_value() -> None:
    schema = {"type": "record", "name": "Fee", "fields": [
        {"name": "n", "type": "int"},
        {"name": "fee", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6,
                                 "scale": 2}, "default": "\u0001\u0000"},
        {"name": "neg", "type": {"type": "fixed", "name": "F2", "size": 2, "logicalType": "decimal",
                                 "precision": 4, "scale": 1}, "default": "\u00ff\u00ff"},
    ]}  # fmt: skip
    [row] = roundtrip(compile_type("Fee", schema, 1, TypeSettings()), [{"n": 1}])
    assert (row["fee"], row["neg"]) == (Decimal("2.56"), Decimal("-0.1"))


def test_nullable_values_take_avros_json_encoding_as_well_as_the_plain_value() -> None:
    schema = {"type": "record", "name": "Opt", "fields": [
        {"name": "s", "type": ["null", "string"]},
        {"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        {"name": "xs", "type": {"type": "array", "items": ["null", "int"]}},
        {"name": "e", "type": ["null", {"type": "enum", "name": "a.E", "symbols": ["A"]}]},
    ]}  # fmt: skip
    t = compile_type("Opt", schema, 1, TypeSettings())
    rows = roundtrip(
        t,
        [
            {
                "s": {"string": "x"},
                "ts": {"long": 1000},
                "xs": [{"int": 1}, None, 2],
                "e": {"a.E": "A"},
            },
            {"s": "y", "ts": "1970-01-01T00:00:01Z", "xs": [], "e": None},
        ],
    )
    one_second = dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC)
    assert [(r["s"], r["ts"], r["xs"], r["e"]) for r in rows] == [
        ("x", one_second, [1, None, 2], "A"),
        ("y", one_second, [], None),
    ]


def test_events_of_every_earlier_version_are_read_under_each_name_a_field_had() -> None:
    v1 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}
    v2 = {"type": "record", "name": "R", "fields": [
        {"name": "b", "type": "string", "aliases": ["a"]}]}  # fmt: skip
    v3 = {"type": "record", "name": "R", "fields": [{"name": "b", "type": "string"}]}
    old = compile_type("R", v1, 1, TypeSettings())
    middle = compile_type("R", v2, 2, TypeSettings(), history=[v1])
    latest = compile_type("R", v3, 3, TypeSettings(), history=[v1, v2])
    body = b"".join(
        t.encode_stored(
            [msgspec.convert({"data": {name: name + "-value"}}, t.event_struct)],
            [f"id-{t.version}"],
            None,
            RECEIVED,
        )
        for t, name in ((old, "a"), (middle, "b"), (latest, "b"))
    )
    published = pa.array([PUBLISHED] * 3, pa.timestamp("us", tz="UTC"))
    table = latest.decode_stored(body, published)
    assert table.column("a").to_pylist() == ["a-value", "b-value", "b-value"]
    assert "b" not in table.column_names


MAPS = {
    "type": "record",
    "name": "Maps",
    "fields": [
        {"name": "q", "type": "string"},
        {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}},
        {"name": "counts", "type": ["null", {"type": "map", "values": "long"}], "default": None},
        {
            "name": "items",
            "type": {"type": "map", "values": {"type": "array", "items": "long"}},
            "default": {},
        },
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


def test_maps_are_stored_as_entries_by_the_struct_path_with_the_same_bytes() -> None:
    # Maps at the top of a payload take a short path (a copy of the Struct with its
    # maps as entries, issue 13); it must write what the general path writes.
    t = compile_type("Maps", MAPS, 1, TypeSettings())
    payloads = [
        {"q": "a", "tags": {"x": "1", "y": "2"}, "counts": {"n": 3}, "at": 1_700_000_000_123},
        {"q": "b", "counts": None, "items": {"k": [1, 2]}, "at": "2026-11-26T10:00:00Z"},
        {"q": "c", "tags": {}, "at": 0},
    ]
    events_json = [{"type": "Maps", "id": f"e{n}", "data": p} for n, p in enumerate(payloads)]
    events = msgspec.json.decode(msgspec.json.encode(events_json), type=list[t.event_struct])  # type: ignore[name-defined]
    ids = [f"id-{n}" for n in range(len(events))]
    by_struct = t.encode_stored(events, ids, SENT, RECEIVED)
    assert _structs.stored_struct_transform(t.record) is not None  # the short path is taken
    general = _structs.stored_transform(t.record)
    assert general is not None
    lines = [
        {
            "id": i,
            "time": None,
            "sent_at": SENT,
            "received_at": RECEIVED,
            "schema_version": 1,
            "data": general(msgspec.to_builtins(e.data)),  # type: ignore[attr-defined]
        }
        for e, i in zip(events, ids, strict=True)
    ]
    assert by_struct == msgspec.json.Encoder().encode_lines(lines)
    rows = roundtrip(t, payloads)
    assert rows[0]["tags"] == [("x", "1"), ("y", "2")] and rows[0]["counts"] == [("n", 3)]
    assert rows[1]["counts"] is None and rows[2]["tags"] == []

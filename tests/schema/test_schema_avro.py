"""Parsing Avro record schemas into the typed tree."""

from __future__ import annotations

import re
from typing import Any

import pytest

from courier.errors import SchemaError
from courier.schema.avro import (
    Array,
    Decimal,
    Enum,
    Fixed,
    Map,
    Nullable,
    Primitive,
    Record,
    Union,
    parse_schema,
)


def record(*fields: dict[str, Any], name: str = "Thing") -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields)}


def field_type(avro_type: Any, **extra: Any) -> Any:
    return parse_schema(record({"name": "f", "type": avro_type, **extra})).fields[0].type


@pytest.mark.parametrize(
    "kind", ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
)
def test_every_primitive_parses_by_name_and_as_an_object(kind: str) -> None:
    assert field_type(kind) == Primitive(kind)
    assert field_type({"type": kind}) == Primitive(kind)


@pytest.mark.parametrize(
    ("logical", "base"),
    [
        ("timestamp-millis", "long"),
        ("timestamp-micros", "long"),
        ("date", "int"),
        ("uuid", "string"),
    ],
)
def test_supported_logical_types_parse_on_their_base_type(logical: str, base: str) -> None:
    assert field_type({"type": base, "logicalType": logical}) == Primitive(base, logical)


def test_a_logical_type_on_the_wrong_base_type_falls_back_to_the_base_type() -> None:
    assert field_type({"type": "long", "logicalType": "date"}) == Primitive("long")


def test_an_unknown_logical_type_falls_back_to_the_base_type() -> None:
    assert field_type({"type": "string", "logicalType": "iso-8601"}) == Primitive("string")
    fixed = {"type": "fixed", "name": "D", "size": 12, "logicalType": "duration"}
    assert field_type(fixed) == Fixed("D", 12)


def test_containers_enums_fixed_and_nested_records_parse() -> None:
    assert field_type({"type": "array", "items": "int"}) == Array(Primitive("int"))
    assert field_type({"type": "map", "values": "long"}) == Map(Primitive("long"))
    assert field_type({"type": "enum", "name": "E", "symbols": ["A", "B"]}) == Enum("E", ("A", "B"))
    assert field_type({"type": "fixed", "name": "F", "size": 4}) == Fixed("F", 4)
    inner = record({"name": "x", "type": "int"}, name="Inner")
    assert field_type(inner) == Record("Inner", (parse_schema(inner, builtin=True).fields))


@pytest.mark.parametrize("union", [["null", "string"], ["string", "null"]])
def test_nullable_unions_parse_in_either_order(union: list[str]) -> None:
    assert field_type(union) == Nullable(Primitive("string"))


@pytest.mark.parametrize(
    "union",
    [["null"], ["null", "null"], ["int", ["null", "string"]], ["null", {"type": ["null", "int"]}]],
)
def test_unions_with_other_shapes_are_rejected(union: list[Any]) -> None:
    with pytest.raises(SchemaError, match="union"):
        field_type(union)


def test_a_named_type_can_be_referred_to_after_its_definition() -> None:
    schema = record(
        {"name": "a", "type": {"type": "enum", "name": "Colour", "symbols": ["RED"]}},
        {"name": "b", "type": ["null", "Colour"], "default": None},
    )
    parsed = parse_schema(schema)
    assert parsed.fields[1].type == Nullable(Enum("Colour", ("RED",)))


def test_a_recursive_type_is_rejected() -> None:
    schema = record(
        {
            "name": "node",
            "type": record({"name": "next", "type": ["null", "Node"]}, name="Node"),
        }
    )
    with pytest.raises(SchemaError, match=r"Thing\.node\.next: recursive type 'Node'"):
        parse_schema(schema)


def test_an_unknown_type_name_is_rejected() -> None:
    with pytest.raises(SchemaError, match=r"Thing\.f: unknown type 'Nope'"):
        field_type("Nope")


@pytest.mark.parametrize("reserved", ["id", "type", "time", "sent_at", "published_at"])
def test_top_level_fields_may_not_use_reserved_envelope_names(reserved: str) -> None:
    with pytest.raises(
        SchemaError, match=rf"Thing\.{reserved}: field name '{reserved}' is reserved"
    ):
        parse_schema(record({"name": reserved, "type": "string"}))


def test_reserved_names_are_allowed_inside_nested_records() -> None:
    inner = record({"name": "id", "type": "string"}, name="Inner")
    parse_schema(record({"name": "ref", "type": inner}))


@pytest.mark.parametrize("bad", ["1abc", "has-dash", "", "sp ace"])
def test_field_names_must_be_identifiers(bad: str) -> None:
    with pytest.raises(SchemaError, match="must match"):
        parse_schema(record({"name": bad, "type": "string"}))


@pytest.mark.parametrize("bad", ["playSong", "_private", "Has-Dash", "A" * 65])
def test_the_record_name_must_be_a_valid_event_type_name(bad: str) -> None:
    with pytest.raises(SchemaError, match="not a valid event type name"):
        parse_schema(record({"name": "x", "type": "string"}, name=bad))


def test_the_top_level_must_be_a_record() -> None:
    with pytest.raises(SchemaError, match="must be an Avro record"):
        parse_schema({"type": "array", "items": "int"})


def test_a_default_that_does_not_fit_the_type_is_rejected() -> None:
    with pytest.raises(SchemaError, match=r"Thing\.n: default 'x' is not a valid int"):
        parse_schema(record({"name": "n", "type": "int", "default": "x"}))


def test_duplicate_field_names_are_rejected() -> None:
    with pytest.raises(SchemaError, match=r"Thing\.a: field is defined twice"):
        parse_schema(record({"name": "a", "type": "int"}, {"name": "a", "type": "int"}))


# -- issue 14: decimals, logical types, names, aliases, unions -------------------------


def test_a_decimal_on_bytes_or_fixed_parses_with_its_precision_and_scale() -> None:
    assert field_type({"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}) == (
        Decimal(12, 2)
    )
    fixed = {"type": "fixed", "name": "M", "namespace": "x", "size": 8, "logicalType": "decimal",
             "precision": 18, "scale": 4}  # fmt: skip
    assert field_type(fixed) == Decimal(18, 4, 8, "x.M")


@pytest.mark.parametrize(
    ("decimal", "message"),
    [
        ({"precision": 2, "scale": 3}, "'scale' must be an integer from 0 to its precision 2"),
        ({"precision": 0}, "integer 'precision' >= 1"),
        ({"scale": 2}, "integer 'precision' >= 1"),
        ({"precision": 39}, "more than 38"),
    ],
)
def test_an_invalid_decimal_is_refused_rather_than_read_as_bytes(
    decimal: dict[str, Any], message: str
) -> None:
    with pytest.raises(SchemaError, match=re.escape(message)):
        field_type({"type": "bytes", "logicalType": "decimal", **decimal})


def test_a_decimal_too_wide_for_its_fixed_is_refused() -> None:
    fixed = {"type": "fixed", "name": "M", "size": 4, "logicalType": "decimal", "precision": 10}
    with pytest.raises(SchemaError, match=r"does not fit in fixed\(4\) \(at most 9 digits\)"):
        field_type(fixed)


@pytest.mark.parametrize(
    ("logical", "base"),
    [
        ("time-millis", "int"),
        ("time-micros", "long"),
        ("timestamp-nanos", "long"),
        ("local-timestamp-millis", "long"),
        ("local-timestamp-micros", "long"),
        ("local-timestamp-nanos", "long"),
    ],
)
def test_the_newer_logical_types_parse(logical: str, base: str) -> None:
    assert field_type({"type": base, "logicalType": logical}) == Primitive(base, logical)


def test_full_names_follow_the_spec() -> None:
    schema = record(
        {"name": "a", "type": record({"name": "x", "type": "int"}, name="X")},
        {
            "name": "b",
            "type": {**record({"name": "y", "type": "int"}, name="X"), "namespace": "n2"},
        },
        {"name": "c", "type": "X"},
        {"name": "d", "type": "n2.X"},
        {"name": "e", "type": record({"name": "z", "type": "int"}, name="other.Y")},
        name="n1.Thing",
    )
    parsed = parse_schema(schema)
    types = {f.name: f.type for f in parsed.fields}
    assert parsed.name == "n1.Thing" and parsed.short_name == "Thing"
    assert isinstance(types["a"], Record) and types["a"].name == "n1.X"
    assert isinstance(types["b"], Record) and types["b"].name == "n2.X"
    assert types["c"] == types["a"] and types["d"] == types["b"]
    assert isinstance(types["e"], Record) and types["e"].name == "other.Y"


def test_a_reference_to_another_namespace_is_not_resolved_by_short_name() -> None:
    schema = record(
        {"name": "a", "type": record({"name": "x", "type": "int"}, name="n1.X")},
        {"name": "b", "type": "wrong.X"},
    )
    with pytest.raises(SchemaError, match=r"Thing\.b: unknown type 'wrong\.X'"):
        parse_schema(schema)


def test_a_full_name_defined_twice_is_refused() -> None:
    schema = record(
        {"name": "a", "type": record({"name": "x", "type": "int"}, name="n.X")},
        {"name": "b", "type": {**record({"name": "y", "type": "int"}, name="X"), "namespace": "n"}},
    )
    with pytest.raises(SchemaError, match=r"type name 'n\.X' is defined twice"):
        parse_schema(schema)


def test_aliases_are_kept_and_qualified_by_the_namespace() -> None:
    inner = {**record({"name": "n", "type": "int", "aliases": ["count"]}, name="C"),
             "aliases": ["Old", "y.Older"]}  # fmt: skip
    parsed = parse_schema({**record({"name": "c", "type": inner}), "namespace": "x"})
    c = parsed.fields[0].type
    assert isinstance(c, Record)
    assert c.aliases == ("x.Old", "y.Older")
    assert c.fields[0].aliases == ("count",)


def test_a_union_becomes_branches_keyed_as_in_avros_json_encoding() -> None:
    item = {**record({"name": "x", "type": "int"}, name="Item"), "namespace": "com.acme"}
    t = field_type(["null", "string", {"type": "long", "logicalType": "timestamp-millis"}, item])
    assert isinstance(t, Nullable) and isinstance(t.inner, Union)
    assert [b.key for b in t.inner.branches] == ["string", "long", "com.acme.Item"]
    assert t.inner.first == "null"


@pytest.mark.parametrize(
    ("union", "message"),
    [
        (["string", "long", "string"], "two branches of type 'string'"),
        (["int", {"type": "int", "logicalType": "date"}], "two branches of type 'int'"),
        ([{"type": "array", "items": "int"}, {"type": "array", "items": "long"}], "'array'"),
    ],
)
def test_a_union_with_two_branches_of_one_type_is_refused(union: list[Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        field_type(union)


def test_a_union_default_must_be_a_value_of_its_first_branch() -> None:
    assert field_type(["long", "string"], default=5)
    with pytest.raises(SchemaError, match="first branch"):
        field_type(["long", "string"], default="x")


def test_a_decimal_default_is_avros_bytes_string_of_the_unscaled_value() -> None:
    decimal = {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}
    assert field_type(decimal, default="\u0001\u0000")  # 256 unscaled: 2.56
    with pytest.raises(SchemaError, match="unscaled value"):
        field_type(decimal, default="0.00")  # text, not bytes: ambiguous, refused

"""Backward compatibility: the new schema must read data written with the old one."""

from __future__ import annotations

from typing import Any

import pytest

from courier.errors import SchemaError
from courier.schema import check_backward_compatible, parse_schema
from courier.schema.avro import Record
from courier.schema.compat import assign_columns, renamed_columns


def schema(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "Thing", "fields": list(fields)}


def one(avro_type: Any, **extra: Any) -> dict[str, Any]:
    return schema({"name": "f", "type": avro_type, **extra})


def test_an_identical_schema_is_compatible() -> None:
    s = schema({"name": "a", "type": "int"})
    assert check_backward_compatible(s, s) == []


def test_an_added_field_with_a_default_is_compatible() -> None:
    old = schema({"name": "a", "type": "int"})
    new = schema({"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": ""})
    assert check_backward_compatible(old, new) == []


def test_an_added_field_without_a_default_is_incompatible_but_removing_it_is_fine() -> None:
    old = schema({"name": "a", "type": "int"})
    new = schema({"name": "a", "type": "int"}, {"name": "b", "type": "string"})
    assert check_backward_compatible(old, new) == ["Thing.b: added field has no default"]
    assert check_backward_compatible(new, old) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
    ],
)
def test_allowed_promotions_are_compatible(old: str, new: str) -> None:
    assert check_backward_compatible(one(old), one(new)) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("long", "int"),
        ("double", "float"),
        ("float", "long"),
        # Avro promotes these, but Courier stores bytes as byte lists and strings as
        # text: the new schema could not decode events already in the stream.
        ("string", "bytes"),
        ("bytes", "string"),
        ("string", "int"),
        ("int", "boolean"),
    ],
)
def test_narrowing_or_unrelated_type_changes_are_incompatible(old: str, new: str) -> None:
    problems = check_backward_compatible(one(old), one(new))
    assert problems == [f"Thing.f: type changed from {old} to {new} (not a promotion)"]


def test_a_field_may_become_nullable_but_not_the_reverse() -> None:
    plain, nullable = one("string"), one(["null", "string"])
    assert check_backward_compatible(plain, nullable) == []
    problems = check_backward_compatible(nullable, plain)
    assert len(problems) == 1
    assert problems[0].startswith("Thing.f: was nullable")


def test_an_enum_may_gain_symbols_but_not_lose_them_without_a_default() -> None:
    small = one({"type": "enum", "name": "E", "symbols": ["A", "B"]})
    large = one({"type": "enum", "name": "E", "symbols": ["A", "B", "C"]})
    assert check_backward_compatible(small, large) == []
    assert check_backward_compatible(large, small) == [
        "Thing.f: enum symbol(s) C removed and the enum has no default"
    ]


def test_an_enum_with_a_default_may_lose_symbols() -> None:
    large = one({"type": "enum", "name": "E", "symbols": ["A", "B", "C"]})
    small = one({"type": "enum", "name": "E", "symbols": ["A", "B"], "default": "A"})
    assert check_backward_compatible(large, small) == []


def test_nested_records_are_checked_recursively_with_their_path() -> None:
    def ctx(*fields: dict[str, Any]) -> dict[str, Any]:
        return one({"type": "record", "name": "Ctx", "fields": list(fields)})

    old = ctx({"name": "n", "type": "long"})
    new = ctx({"name": "n", "type": "int"}, {"name": "m", "type": "int"})
    assert check_backward_compatible(old, new) == [
        "Thing.f.n: type changed from long to int (not a promotion)",
        "Thing.f.m: added field has no default",
    ]
    assert check_backward_compatible(ctx({"name": "n", "type": "int"}), old) == []


def test_array_items_and_map_values_are_checked_recursively() -> None:
    arr_int = one({"type": "array", "items": "int"})
    arr_long = one({"type": "array", "items": "long"})
    assert check_backward_compatible(arr_int, arr_long) == []
    assert check_backward_compatible(arr_long, arr_int) == [
        "Thing.f[]: type changed from long to int (not a promotion)"
    ]
    map_int = one({"type": "map", "values": "int"})
    map_str = one({"type": "map", "values": "string"})
    assert check_backward_compatible(map_int, map_str) == [
        "Thing.f{}: type changed from int to string (not a promotion)"
    ]


def test_changing_a_logical_type_is_incompatible_in_both_directions() -> None:
    plain = one("long")
    millis = one({"type": "long", "logicalType": "timestamp-millis"})
    micros = one({"type": "long", "logicalType": "timestamp-micros"})
    assert check_backward_compatible(plain, millis) == [
        "Thing.f: logical type changed from none to timestamp-millis"
    ]
    assert check_backward_compatible(millis, plain) == [
        "Thing.f: logical type changed from timestamp-millis to none"
    ]
    assert check_backward_compatible(millis, micros) != []
    assert check_backward_compatible(micros, millis) != []


def test_a_date_cannot_be_promoted_like_a_plain_int() -> None:
    date = one({"type": "int", "logicalType": "date"})
    assert check_backward_compatible(date, one("long")) != []


def test_changing_kind_of_type_is_incompatible() -> None:
    problems = check_backward_compatible(one({"type": "array", "items": "int"}), one("int"))
    assert problems == ["Thing.f: type changed from array<int> to int"]


def test_fixed_size_changes_are_incompatible() -> None:
    four = one({"type": "fixed", "name": "F", "size": 4})
    eight = one({"type": "fixed", "name": "F", "size": 8})
    assert check_backward_compatible(four, eight) == ["Thing.f: fixed size changed from 4 to 8"]


def test_every_problem_is_reported_not_just_the_first() -> None:
    old = schema({"name": "a", "type": "long"}, {"name": "b", "type": ["null", "int"]})
    new = schema(
        {"name": "a", "type": "int"}, {"name": "b", "type": "int"}, {"name": "c", "type": "int"}
    )
    assert len(check_backward_compatible(old, new)) == 3


# -- issue 14: aliases, unions, decimals, columns of renamed fields --------------------

DECIMAL = {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}


def test_a_field_renamed_with_an_alias_is_compatible() -> None:
    old = schema({"name": "user", "type": "string"})
    new = schema({"name": "user_name", "type": "string", "aliases": ["user"]})
    assert check_backward_compatible(old, new) == []


def test_a_renamed_field_is_still_checked_against_its_old_type() -> None:
    old = schema({"name": "n", "type": "long"})
    new = schema({"name": "m", "type": "int", "aliases": ["n"]})
    assert check_backward_compatible(old, new) == [
        "Thing.m: type changed from long to int (not a promotion)"
    ]


def test_a_union_may_gain_branches_but_not_lose_them() -> None:
    assert check_backward_compatible(one(["string", "long"]), one(["string", "long", "int"])) == []
    assert check_backward_compatible(one(["string", "long"]), one(["string", "int"])) == [
        "Thing.f: union branch 'long' removed; old values cannot be read"
    ]


def test_a_value_cannot_become_a_union_because_stored_values_are_not_wrapped() -> None:
    [problem] = check_backward_compatible(one("string"), one(["string", "long"]))
    assert "cannot become a union" in problem


@pytest.mark.parametrize(
    ("new", "ok"),
    [
        ({"precision": 14}, True),
        ({"precision": 14, "scale": 3}, True),
        ({"scale": 3}, False),
        ({"precision": 10}, False),
        ({"type": "fixed", "name": "M", "size": 8}, False),
    ],
)
def test_a_decimal_may_only_widen(new: dict[str, Any], ok: bool) -> None:
    problems = check_backward_compatible(one(DECIMAL), one({**DECIMAL, **new}))
    assert (problems == []) is ok, problems


def cart(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "Cart", "fields": list(fields)}


def versions(*schemas: dict[str, Any]) -> list[Record]:
    return [parse_schema(s, builtin=True) for s in schemas]


def test_a_renamed_field_keeps_its_first_column_name_across_versions() -> None:
    v1 = schema({"name": "a", "type": "string"},
                {"name": "c", "type": cart({"name": "n", "type": "int"})})  # fmt: skip
    v2 = schema({"name": "b", "type": "string", "aliases": ["a"]},
                {"name": "c", "type": cart({"name": "m", "type": "long", "aliases": ["n"]})})  # fmt: skip
    v3 = schema({"name": "z", "type": "string", "aliases": ["b"]},
                {"name": "c", "type": cart({"name": "m", "type": "long"})})  # fmt: skip
    record = assign_columns(versions(v1, v2, v3))
    z, c = record.fields
    assert c.type.fields[0].stored_names == ("m", "n")  # type: ignore[union-attr]
    assert (z.name, z.column, z.stored_names) == ("z", "a", ("z", "a", "b"))
    assert renamed_columns(record) == {"z": "a", "c.m": "c.n"}


def test_a_new_field_may_not_take_the_column_of_a_renamed_one() -> None:
    v1 = schema({"name": "a", "type": "string"})
    v2 = schema({"name": "b", "type": "string", "aliases": ["a"]},
                {"name": "a", "type": "string", "default": ""})  # fmt: skip
    with pytest.raises(SchemaError, match=r"Thing\.a: column 'a' would hold both field 'b' and"):
        assign_columns(versions(v1, v2))


def test_a_chain_of_renames_in_one_version_may_not_merge_two_columns() -> None:
    v1 = schema({"name": "a", "type": "string"}, {"name": "b", "type": "string"})
    v2 = schema({"name": "b", "type": "string", "aliases": ["a"]},
                {"name": "c", "type": "string", "aliases": ["b"]})  # fmt: skip
    with pytest.raises(SchemaError, match=r"Thing\.c: column 'b' would hold both field 'b'"):
        assign_columns(versions(v1, v2))


def test_an_old_name_may_not_be_reused_by_another_field() -> None:
    v1 = schema({"name": "a", "type": "string"})
    v2 = schema({"name": "b", "type": "string", "aliases": ["a"]})
    v3 = schema({"name": "c", "type": "string", "aliases": ["b"]})
    v4 = schema({"name": "c", "type": "string"}, {"name": "b", "type": "string", "default": ""})
    with pytest.raises(SchemaError, match=r"Thing\.b: stored events call two fields 'b'"):
        assign_columns(versions(v1, v2, v3, v4))

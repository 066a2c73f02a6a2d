"""DuckDB reads the gateway's stored bodies into exactly the table pyarrow.json reads."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_schema_roundtrip import ITEM, PUBLISHED, RICH, full_payload, stored_body, strategy

from courier.errors import StoredBodyError, UndecodableError
from courier.gateway.publisher import message_id
from courier.schema import CompiledType, TypeSettings, compile_type
from courier.schema.jsonread import BulkJsonReader, bound_malloc_retention, built_by_gateway
from courier.schema.stored import decode_batch
from courier.transport import StoredMessage

#: Every type the bulk reader is used for: the round-trip suite's, but ``float``
#: (left to pyarrow.json), with decimals and the logical types' numbers added.
BULK = {
    **RICH,
    "name": "Bulk",
    "fields": [
        *(f for f in RICH["fields"] if f["name"] != "f"),
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 4}},
        {"name": "big", "type": ["null", {"type": "fixed", "name": "Dec", "size": 16, "logicalType": "decimal", "precision": 38, "scale": 2}], "default": None},
        {"name": "ts_ns", "type": {"type": "long", "logicalType": "timestamp-nanos"}},
        {"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "tu", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "lu", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    ],
}  # fmt: skip
_BULK = compile_type("Bulk", BULK, 3, TypeSettings())


@pytest.fixture(scope="module")
def reader() -> Iterator[BulkJsonReader]:
    with BulkJsonReader(min_lines=1) as r:
        yield r


def both(
    t: CompiledType, body: bytes | list[bytes], published: pa.Array, reader: BulkJsonReader
) -> pa.Table:
    """The table DuckDB read, after checking that DuckDB read it and that it is
    pyarrow.json's table, value for value and type for type."""
    before = reader.rows
    by_duckdb = t.decode_stored(body, published, bulk=reader)
    assert reader.rows == before + len(published), "DuckDB did not read the body"
    by_pyarrow = t.decode_stored(body, published)
    assert by_duckdb.schema == by_pyarrow.schema == t.arrow_schema
    assert by_duckdb.equals(by_pyarrow)
    return by_duckdb


def bulk_payload() -> dict[str, Any]:
    payload = full_payload()
    del payload["f"]
    return {
        **payload,
        "amount": "-12345678901234.5678",
        "big": "123456789012345678901234567890123456.78",
        "ts_ns": 2**63 - 1,
        "tm": 86_399_999,
        "tu": 86_399_999_999,
        "lu": -(2**63),
    }


def test_every_type_it_reads_decodes_to_pyarrows_table(reader: BulkJsonReader) -> None:
    payload = bulk_payload()
    nulls = {**payload, "ns": None, "one": None, "big": None, "maybe_day": None}
    body, published = stored_body(_BULK, [payload, nulls, payload])
    table = both(_BULK, body, published, reader)
    assert table.column("amount")[0].as_py() == Decimal("-12345678901234.5678")
    assert table.column("l")[0].as_py() == 2**63 - 1


_PLAIN = compile_type(
    "Plain", {**BULK, "name": "Plain", "fields": BULK["fields"][:-6]}, 1, TypeSettings()
)
_EXTRA = st.fixed_dictionaries(
    {
        "amount": st.decimals(-(10**14) + 1, 10**14 - 1, places=4, allow_nan=False).map(str),
        "big": st.none() | st.decimals(-(10**36) + 1, 10**36 - 1, places=2).map(str),
        "ts_ns": st.integers(-(2**63), 2**63 - 1),
        "tm": st.integers(0, 86_399_999),
        "tu": st.integers(0, 86_399_999_999),
        "lu": st.integers(-(2**63), 2**63 - 1),
    }
)
_PAYLOADS = st.lists(
    st.tuples(strategy(_PLAIN.record), _EXTRA).map(lambda p: {**p[0], **p[1]}),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_PAYLOADS)
def test_generated_payloads_decode_to_pyarrows_table(payloads: list[dict[str, Any]]) -> None:
    with BulkJsonReader(min_lines=1) as reader:  # hypothesis takes no module fixture
        body, published = stored_body(_BULK, payloads)
        both(_BULK, body, published, reader)


def test_many_messages_read_in_one_call_keep_their_line_order(reader: BulkJsonReader) -> None:
    bodies = [stored_body(_BULK, [{**bulk_payload(), "i": n}])[0] for n in range(50)]
    published = pa.array([PUBLISHED] * 50, pa.timestamp("us", tz="UTC"))
    table = both(_BULK, bodies, published, reader)  # as the writer passes them: not joined
    assert table.column("i").to_pylist() == list(range(50))
    assert table.equals(_BULK.decode_stored(b"".join(bodies), published))


@pytest.mark.parametrize(
    ("why", "line"),
    [
        ("not JSON", b'{"id":"a",'),
        ("a blank line", b""),
        ("an int out of range", b'{"id":"a","schema_version":3,"data":{"i":3000000000}}'),
        ("a timestamp that is not one", b'{"id":"a","received_at":"yesterday"}'),
        ("a byte out of range", b'{"id":"a","data":{"by":[256]}}'),
    ],
)
def test_a_body_pyarrow_refuses_is_refused_with_pyarrows_error(
    reader: BulkJsonReader, why: str, line: bytes
) -> None:
    good, _ = stored_body(_BULK, [bulk_payload()])
    body = good + line + b"\n" + good
    published = pa.array([PUBLISHED] * 3, pa.timestamp("us", tz="UTC"))
    with pytest.raises((StoredBodyError, ValueError)) as by_pyarrow:
        _BULK.decode_stored(body, published)
    with pytest.raises(by_pyarrow.type, match=re.escape(str(by_pyarrow.value))):
        _BULK.decode_stored(body, published, bulk=reader)


@pytest.mark.parametrize(
    ("why", "avro"),
    [
        ("a float column", RICH),
        (
            "a union",
            {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["int", "string"]}]},
        ),
        ("a union inside a record", {**ITEM, "fields": [{"name": "v", "type": ["null", "int", "string"]}]}),
        ("a null column", {"type": "record", "name": "N", "fields": [{"name": "n", "type": "null"}]}),
    ],
)  # fmt: skip
def test_types_it_cannot_read_exactly_are_left_to_pyarrow(
    reader: BulkJsonReader, why: str, avro: dict[str, Any]
) -> None:
    t = compile_type(avro["name"], avro, 1, TypeSettings())
    assert t._bulk_structure is None
    body = b'{"id":"a","schema_version":1}\n'
    before = reader.rows
    t.decode_stored(body, pa.array([PUBLISHED], pa.timestamp("us", tz="UTC")), bulk=reader)
    assert reader.rows == before


def test_a_renamed_field_is_left_to_pyarrow() -> None:
    v1 = {"type": "record", "name": "R", "fields": [{"name": "old", "type": "string"}]}
    v2 = {**v1, "fields": [{"name": "new", "type": "string", "aliases": ["old"]}]}
    t = compile_type("R", v2, 2, TypeSettings(), history=[v1])
    assert compile_type("R", v1, 1, TypeSettings())._bulk_structure is not None
    assert t._bulk_structure is None


def test_fewer_lines_than_its_minimum_are_left_to_pyarrow() -> None:
    body, published = stored_body(_BULK, [bulk_payload()] * 3)
    with BulkJsonReader(min_lines=4) as reader:
        _BULK.decode_stored(body, published, bulk=reader)
        assert reader.rows == 0
        _BULK.decode_stored(body * 2, pa.concat_arrays([published, published]), bulk=reader)
        assert reader.rows == 6


def test_only_messages_the_gateway_built_are_recognised() -> None:
    ids = ["0193a7c2-1b2c-7d3e-8f40-123456789abc"]
    assert built_by_gateway("Bulk", {"Nats-Msg-Id": message_id("Bulk", ids)})
    assert not built_by_gateway("Bulk", {"Nats-Msg-Id": message_id("Other", ids)})
    assert not built_by_gateway("Bu", {"Nats-Msg-Id": message_id("Bulk", ids)})
    assert not built_by_gateway("Bulk", {"Nats-Msg-Id": "replay.Bulk.17"})  # republished
    assert not built_by_gateway("Bulk", {"Nats-Msg-Id": "Bulk:anything"})
    assert not built_by_gateway("Bulk", {})


def _message(seq: int, body: bytes, msg_id: str | None) -> StoredMessage:
    headers = {"Courier-Schema-Version": "3"}
    if msg_id is not None:
        headers["Nats-Msg-Id"] = msg_id
    return StoredMessage(seq, PUBLISHED.timestamp(), headers, body)


def test_a_batch_is_read_by_duckdb_only_when_the_gateway_built_every_message() -> None:
    body, _ = stored_body(_BULK, [bulk_payload()] * 2)
    gateway = [_message(n, body, message_id("Bulk", [f"id{n}"])) for n in range(1, 4)]
    with BulkJsonReader(min_lines=1) as reader:
        table = decode_batch(_BULK, gateway, lambda _h: None, reader)
        assert reader.rows == 6 and table.num_rows == 6
        republished = _message(9, body, "replay.Bulk.2")
        table = decode_batch(_BULK, [*gateway, republished], lambda _h: None, reader)
        assert reader.rows == 6 and table.num_rows == 8


def test_a_value_of_the_wrong_json_type_is_poison_when_republished() -> None:
    """DuckDB would read ``"5"`` into a long; pyarrow.json refuses it, and only
    pyarrow.json reads a message the gateway did not build."""
    good, _ = stored_body(_BULK, [bulk_payload()])
    bad = good.replace(b'"i":-2147483648', b'"i":"5"')
    assert bad != good
    with BulkJsonReader(min_lines=1) as reader, pytest.raises(UndecodableError):
        decode_batch(_BULK, [_message(1, bad, "replay.Bulk.1")], lambda _h: None, reader)


def test_a_closed_reader_leaves_every_body_to_pyarrow() -> None:
    body, published = stored_body(_BULK, [bulk_payload()])
    reader = BulkJsonReader(min_lines=1)
    reader.close()
    assert _BULK.decode_stored(body, published, bulk=reader).num_rows == 1
    assert reader.rows == 0


def test_a_message_id_that_is_not_the_gateways_is_not_taken_for_one() -> None:
    digest = message_id("Bulk", ["x"]).partition(":")[2]
    assert built_by_gateway("Bulk", {"Nats-Msg-Id": f"Bulk:{digest}"})
    assert not built_by_gateway("Bulk", {"Nats-Msg-Id": f"Bulk:{digest}0"})
    assert not built_by_gateway("Bulk", {"Nats-Msg-Id": f"Bulk:{digest.upper()}"})
    assert not built_by_gateway("Bulk", {"Nats-Msg-Id": f"XBulk:{digest}"})


def test_an_operators_malloc_threshold_is_left_as_it_is(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4096")
    assert bound_malloc_retention() is False


def _glibc() -> bool:
    try:
        return "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "")
    except (AttributeError, ValueError, OSError):
        return False


@pytest.mark.skipif(not _glibc(), reason="the bound is glibc's mallopt")
def test_the_malloc_bound_is_set_on_glibc(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert bound_malloc_retention() is True


def test_a_body_with_text_after_its_last_line_end_is_left_to_pyarrow(
    reader: BulkJsonReader,
) -> None:
    body, published = stored_body(_BULK, [bulk_payload()])
    before = reader.rows
    with pytest.raises((StoredBodyError, ValueError)) as by_pyarrow:
        _BULK.decode_stored([body, b'{"id":"x"}'], published)
    with pytest.raises(by_pyarrow.type, match=re.escape(str(by_pyarrow.value))):
        _BULK.decode_stored([body, b'{"id":"x"}'], published, bulk=reader)
    assert reader.rows == before


def test_a_body_of_spaces_adds_no_line(reader: BulkJsonReader) -> None:
    body, published = stored_body(_BULK, [bulk_payload()])
    both(_BULK, [body, b"   ", b""], published, reader)

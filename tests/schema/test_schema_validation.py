"""Event validation: wrong input is rejected with a message naming the field."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec
import pytest

from courier.examples import SCHEMAS_DIR
from courier.schema import CompiledType, compile_type, invalid_type, load_definitions


@pytest.fixture(scope="module")
def types() -> dict[str, CompiledType]:
    out = {
        d.name: compile_type(d.name, d.avro, 1, d.settings) for d in load_definitions(SCHEMAS_DIR)
    }
    out["_invalid"] = invalid_type()
    return out


@pytest.fixture(scope="module")
def decoder(types: dict[str, CompiledType]) -> msgspec.json.Decoder[Any]:
    union: Any = None
    for t in types.values():
        union = t.event_struct if union is None else union | t.event_struct
    batch = msgspec.defstruct("Batch", [("events", list[union])])  # type: ignore[valid-type]
    return msgspec.json.Decoder(batch)


def play(**data: Any) -> dict[str, Any]:
    payload = {"track_id": "t1", "ms_played": 31500}
    payload.update(data)
    return {"type": "PlaySong", "id": "e1", "time": "2026-11-26T10:14:59.001Z", "data": payload}


def error_of(decoder: msgspec.json.Decoder[Any], *events: dict[str, Any]) -> str:
    with pytest.raises(msgspec.ValidationError) as info:
        decoder.decode(msgspec.json.encode({"events": list(events)}))
    return str(info.value)


def test_a_valid_event_decodes_with_its_defaults_filled(decoder: Any) -> None:
    batch = decoder.decode(msgspec.json.encode({"events": [play()]}))
    event = batch.events[0]
    assert event.id == "e1"
    assert event.time == dt.datetime(2026, 11, 26, 10, 14, 59, 1000, tzinfo=dt.UTC)
    assert (event.data.tags, event.data.shuffle, event.data.context) == ([], False, None)


def test_id_and_time_are_optional(decoder: Any) -> None:
    batch = decoder.decode(b'{"events":[{"type":"Search","data":{"query":"q","results":1}}]}')
    assert (batch.events[0].id, batch.events[0].time) == (None, None)


def test_a_wrong_type_names_the_field(decoder: Any) -> None:
    message = error_of(decoder, play(), play(ms_played="long"))
    assert message == "Expected `int`, got `str` - at `$.events[1].data.ms_played`"


def test_a_missing_required_field_is_named(decoder: Any) -> None:
    event = play()
    del event["data"]["track_id"]
    assert "missing required field `track_id`" in error_of(decoder, event)
    assert "`$.events[0].data`" in error_of(decoder, event)


def test_a_nullable_field_without_a_default_is_still_required() -> None:
    t = compile_type(
        "Opt",
        {
            "type": "record",
            "name": "Opt",
            "fields": [
                {"name": "must", "type": ["null", "string"]},
                {"name": "may", "type": ["null", "string"], "default": None},
            ],
        },
        1,
        invalid_type().settings,
    )
    decode = msgspec.json.Decoder(t.event_struct).decode
    assert decode(b'{"type":"Opt","data":{"must":null}}').data.may is None  # type: ignore[attr-defined]
    with pytest.raises(msgspec.ValidationError, match="missing required field `must`"):
        decode(b'{"type":"Opt","data":{"may":"x"}}')


def test_an_unknown_field_is_named(decoder: Any) -> None:
    message = error_of(decoder, play(colour="red"))
    assert message == "Object contains unknown field `colour` - at `$.events[0].data`"
    message = error_of(decoder, play(context={"device": "TV", "oops": 1}))
    assert message == "Object contains unknown field `oops` - at `$.events[0].data.context`"


def test_an_unknown_envelope_field_is_rejected(decoder: Any) -> None:
    assert "unknown field `extra`" in error_of(decoder, play() | {"extra": 1})


def test_an_unknown_event_type_is_rejected(decoder: Any) -> None:
    assert "Invalid value 'Nope' - at `$.events[0].type`" in error_of(
        decoder, play() | {"type": "Nope"}
    )


@pytest.mark.parametrize("bad", ["yesterday", "2026-11-26T10:14:59", "2026-13-01T00:00:00Z"])
def test_a_bad_or_naive_timestamp_names_the_field(decoder: Any, bad: str) -> None:
    assert error_of(decoder, play() | {"time": bad}).endswith("- at `$.events[0].time`")
    ad = {
        "type": "AdImpression",
        "data": {
            "ad_id": str(uuid.uuid4()),
            "campaign": "c",
            "cost_micros": 1,
            "shown_at": bad,
            "day": "2026-11-26",
            "revenue": 0.5,
        },
    }
    assert error_of(decoder, ad).endswith("- at `$.events[0].data.shown_at`")


def test_an_int_out_of_range_names_the_field(decoder: Any) -> None:
    search = {"type": "Search", "data": {"query": "q", "results": 2**31}}
    assert error_of(decoder, search) == (
        "Expected `int` <= 2147483647 - at `$.events[0].data.results`"
    )
    assert "$.events[0].data.ms_played" in error_of(decoder, play(ms_played=2**63))


def test_a_bad_enum_symbol_names_the_field(decoder: Any) -> None:
    assert error_of(decoder, play(context={"device": "FRIDGE"})) == (
        "Invalid enum value 'FRIDGE' - at `$.events[0].data.context.device`"
    )


def test_bad_uuid_and_date_name_the_field(decoder: Any) -> None:
    ad: dict[str, Any] = {
        "type": "AdImpression",
        "data": {
            "ad_id": "not-a-uuid",
            "campaign": "c",
            "cost_micros": 1,
            "shown_at": "2026-11-26T10:00:00Z",
            "day": "2026-11-26",
            "revenue": 0.5,
        },
    }
    assert error_of(decoder, ad).endswith("- at `$.events[0].data.ad_id`")
    ad["data"] |= {"ad_id": str(uuid.uuid4()), "day": "26/11/2026"}
    assert error_of(decoder, ad).endswith("- at `$.events[0].data.day`")


@pytest.mark.parametrize("bad_id", ["", "x" * 129])
def test_ids_must_be_between_1_and_128_characters(decoder: Any, bad_id: str) -> None:
    assert error_of(decoder, play() | {"id": bad_id}).endswith("- at `$.events[0].id`")


def test_bytes_must_be_latin1_text_and_fixed_must_have_its_size() -> None:
    t = compile_type(
        "Blob",
        {
            "type": "record",
            "name": "Blob",
            "fields": [
                {"name": "b", "type": "bytes"},
                {"name": "f", "type": {"type": "fixed", "name": "F4", "size": 4}},
            ],
        },
        1,
        invalid_type().settings,
    )
    decode = msgspec.json.Decoder(t.event_struct).decode
    decode(b'{"type":"Blob","data":{"b":"\\u00ff\\u0000","f":"abcd"}}')
    with pytest.raises(msgspec.ValidationError, match=r"\$\.data\.b"):
        decode(b'{"type":"Blob","data":{"b":"\\u0100","f":"abcd"}}')
    with pytest.raises(msgspec.ValidationError, match=r"\$\.data\.f"):
        decode(b'{"type":"Blob","data":{"b":"","f":"abc"}}')

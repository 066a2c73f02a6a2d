"""The OpenAPI document is generated from the code, also for types with unions and nullables."""

from __future__ import annotations

from courier.gateway.openapi import openapi_document
from courier.schema.codec import TypeSettings, compile_type
from courier.settings import load_settings

_AVRO = {
    "type": "record",
    "name": "Checkout",
    "fields": [
        {"name": "coupon", "type": ["null", "string"], "default": None},
        {"name": "items", "type": ["null", "long"], "default": None},
        {
            "name": "paid_with",
            "type": [
                "string",
                {"type": "record", "name": "Card", "fields": [{"name": "last4", "type": "string"}]},
            ],
        },
        {"name": "amount", "type": ["long", "double"]},
    ],
}


def test_each_type_gets_its_envelope_and_data_schema_even_with_several_unions():
    compiled = compile_type("Checkout", _AVRO, 1, TypeSettings())
    doc = openapi_document(load_settings().gateway, types={"Checkout": compiled})
    schemas = doc["components"]["schemas"]
    envelope = schemas["Checkout.Checkout-event"]
    assert envelope["properties"]["type"] == {"enum": ["Checkout"]}
    assert envelope["properties"]["data"] == {"$ref": "#/components/schemas/Checkout.Checkout"}
    data = schemas["Checkout.Checkout"]
    assert set(data["properties"]) == {"coupon", "items", "paid_with", "amount"}
    assert "Checkout.Card" in schemas
    mapping = schemas["Event"]["discriminator"]["mapping"]
    assert mapping == {"Checkout": "#/components/schemas/Checkout.Checkout-event"}


def test_limits_and_hand_checked_minimums_come_from_the_code():
    doc = openapi_document(load_settings(gateway={"max_events_per_batch": 7}).gateway)
    schemas = doc["components"]["schemas"]
    assert schemas["Batch"]["properties"]["events"]["maxItems"] == 7
    assert doc["info"]["x-courier-limits"]["max_events_per_batch"] == 7
    assert schemas["Republish"]["properties"]["stream_seq"]["minimum"] == 1
    outcome = schemas["Repair"]["properties"]["outcome"]
    assert sorted(outcome["enum"]) == ["done", "failed", "refused", "started"]

"""The example schemas shipped with Courier load, compile and stay realistic."""

from __future__ import annotations

import datetime as dt

import msgspec
import pyarrow as pa

from courier.examples import SCHEMAS_DIR
from courier.schema import compile_type, load_definitions

EXAMPLES = {
    "PlaySong": {
        "track_id": "spotify:track:4uLU6hMCjMI75M1A2tKUQC",
        "ms_played": 31500,
        "context": {"device": "PHONE", "country": "SE"},
        "tags": ["morning", "commute"],
        "shuffle": True,
    },
    "Search": {
        "query": "lofi hip hop radio beats to relax",
        "results": 48,
        "filters": {"type": "playlist", "lang": "en", "explicit": "false"},
        "clicked_position": 3,
    },
    "AdImpression": {
        "ad_id": "0193a7c2-1b2c-7d3e-8f40-123456789abc",
        "campaign": "winter-sale-2026-nordics",
        "cost_micros": 1250,
        "shown_at": "2026-11-26T10:14:58.412Z",
        "day": "2026-11-26",
        "revenue": 0.00125,
    },
}


def test_the_example_schemas_load_with_their_settings() -> None:
    definitions = {d.name: d for d in load_definitions(SCHEMAS_DIR)}
    assert sorted(definitions) == ["AdImpression", "PlaySong", "Search"]
    ad = definitions["AdImpression"].settings
    assert (ad.tier, ad.finance) == ("high", True)


def test_realistic_example_events_validate_store_and_decode() -> None:
    now = dt.datetime(2026, 11, 26, 10, 15, tzinfo=dt.UTC)
    for d in load_definitions(SCHEMAS_DIR):
        t = compile_type(d.name, d.avro, 1, d.settings)
        event = {
            "type": d.name,
            "id": "0193a7c2-1b2c-7d3e-8f40-000000000001",
            "time": "2026-11-26T10:14:59.001Z",
            "data": EXAMPLES[d.name],
        }
        raw = msgspec.json.encode(event)
        assert 200 <= len(raw) <= 400, (d.name, len(raw))
        decoded = msgspec.json.decode(raw, type=t.event_struct)
        body = t.encode_stored([decoded], [decoded.id], now, now)  # type: ignore[attr-defined]
        table = t.decode_stored(body, pa.array([now], pa.timestamp("us", tz="UTC")))
        assert table.num_rows == 1 and table.schema == t.arrow_schema

"""Quarantine records in the bucket store: read for a replay, filed away only when asked,
never lost; the same on a local directory and on S3 (a real moto_server)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from bench._emulators import MotoS3

from courier.errors import StorageError
from courier.repair import mark_replayed, quarantined_keys, read_quarantined
from courier.storage import Layout
from courier.storage.store import LocalStore, MemoryStore


@pytest.fixture(params=["local", "memory", "s3"])
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Layout:
    if request.param == "local":
        return Layout(LocalStore(tmp_path / "root"), 3600)
    if request.param == "memory":
        return Layout(MemoryStore(), 3600)
    from courier.storage.store.s3 import S3BucketStore

    moto: MotoS3 = request.getfixturevalue("moto_s3")
    return Layout(S3BucketStore(moto.new_bucket(), "courier", **moto.store_config()), 3600)


def _record(layout: Layout, seq: int, body: bytes = b'{"id":"x"}\n', **extra: object) -> str:
    key = layout.quarantine_key("PlaySong", seq)
    doc = {
        "format_version": 1,
        "event_type": "PlaySong",
        "stream_seq": seq,
        "published_at": 1.0,
        "num_delivered": 5,
        "reason": "bad",
        "headers": {"Courier-Schema-Version": "1"},
        "body_base64": base64.b64encode(body).decode(),
        **extra,
    }
    layout.store.put(key, json.dumps(doc).encode())
    return key


def test_a_record_reads_back_as_the_republish_request_of_its_message(layout: Layout) -> None:
    record = read_quarantined(layout, _record(layout, 7, b"body\n"))
    assert record.republish_request() == {
        "stream_seq": 7,
        "headers": {"Courier-Schema-Version": "1"},
        "body_base64": base64.b64encode(b"body\n").decode(),
    }


def test_replayed_records_move_aside_and_are_not_listed_again(layout: Layout) -> None:
    first, second = _record(layout, 2), _record(layout, 10)
    assert quarantined_keys(layout, "PlaySong") == [first, second]
    original = layout.store.get(first)
    moved = mark_replayed(layout, read_quarantined(layout, first))
    assert moved == "_quarantine/PlaySong/_replayed/" + first.rpartition("/")[2]
    assert layout.store.get(moved) == original
    assert layout.store.head(first) is None
    assert quarantined_keys(layout, "PlaySong") == [second]
    assert quarantined_keys(layout, "Search") == []


@pytest.mark.parametrize(
    "damage",
    [{"format_version": 2}, {"body_base64": "not base64!"}, {"headers": {"a": 1}}],
)
def test_an_unreadable_record_is_a_storage_error_and_stays_in_place(
    layout: Layout, damage: dict[str, object]
) -> None:
    key = _record(layout, 3, **damage)
    with pytest.raises(StorageError, match="left in place"):
        read_quarantined(layout, key)
    assert layout.store.head(key) is not None


def test_a_missing_record_is_a_storage_error_naming_it(layout: Layout) -> None:
    with pytest.raises(StorageError, match=r"00000000000000000004\.json cannot be read"):
        read_quarantined(layout, layout.quarantine_key("PlaySong", 4))

"""Quarantine records on disk: read for a replay, filed away only when asked, never lost."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from courier.errors import StorageError
from courier.repair import mark_replayed, quarantined_files, read_quarantined
from courier.storage import Layout


def _record(layout: Layout, seq: int, body: bytes = b'{"id":"x"}\n', **extra: object) -> Path:
    path = layout.quarantine_dir("PlaySong") / f"{seq:020d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
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
    path.write_text(json.dumps(doc))
    return path


def test_a_record_reads_back_as_the_republish_request_of_its_message(tmp_path: Path) -> None:
    layout = Layout(tmp_path, 3600)
    record = read_quarantined(_record(layout, 7, b"body\n"))
    assert record.republish_request() == {
        "stream_seq": 7,
        "headers": {"Courier-Schema-Version": "1"},
        "body_base64": base64.b64encode(b"body\n").decode(),
    }


def test_replayed_records_move_aside_and_are_not_listed_again(tmp_path: Path) -> None:
    layout = Layout(tmp_path, 3600)
    first, second = _record(layout, 2), _record(layout, 10)
    assert quarantined_files(layout, "PlaySong") == [first, second]
    moved = mark_replayed(read_quarantined(first))
    assert moved == first.parent / "_replayed" / first.name and moved.exists()
    assert not first.exists()
    assert quarantined_files(layout, "PlaySong") == [second]
    assert quarantined_files(layout, "Search") == []


@pytest.mark.parametrize(
    "damage",
    [{"format_version": 2}, {"body_base64": "not base64!"}, {"headers": {"a": 1}}],
)
def test_an_unreadable_record_is_a_storage_error_and_stays_in_place(
    tmp_path: Path, damage: dict[str, object]
) -> None:
    path = _record(Layout(tmp_path, 3600), 3, **damage)
    with pytest.raises(StorageError, match="left in place"):
        read_quarantined(path)
    assert path.exists()

"""The tailer over an in-memory gateway: lines, ids, rejections, positions, rotation."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from courier.sdk import DeliveryStopped, MemoryDeliverer
from courier.tailer import Tailer, TailerSettings


def _line(i: int, with_id: bool = True) -> str:
    doc: dict[str, object] = {"type": "PlaySong", "data": {"track_id": f"l{i}", "ms_played": i}}
    if with_id:
        doc["id"] = f"id-{i}"
    return json.dumps(doc) + "\n"


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def _tailer(tmp_path: Path, deliverer, pattern: str = "*.log", **kw) -> Tailer:
    settings = TailerSettings(
        patterns=(str(tmp_path / "logs" / pattern),),
        state_dir=tmp_path / "state",
        glob_interval_secs=0,
        rotate_wait_secs=0,
        checkpoint_interval_secs=0,
        **kw,
    )
    return Tailer(settings, deliverer=deliverer)


def _drain(t: Tailer) -> None:
    for _ in range(20):
        t.run_once()


def _track_ids(d: MemoryDeliverer) -> list[str]:
    return [json.loads(e)["data"]["track_id"] for e in d.events]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


def test_a_partial_last_line_waits_for_its_newline(tmp_path, logs):
    d = MemoryDeliverer()
    t = _tailer(tmp_path, d)
    whole = _line(1)
    _append(logs / "a.log", _line(0) + whole[:20])
    _drain(t)
    assert _track_ids(d) == ["l0"]
    _append(logs / "a.log", whole[20:])
    _drain(t)
    assert _track_ids(d) == ["l0", "l1"]


def test_a_line_without_id_gets_the_same_id_after_a_replay(tmp_path, logs):
    _append(logs / "a.log", _line(0, with_id=False) + _line(1, with_id=False))
    first = MemoryDeliverer()
    _drain(_tailer(tmp_path, first))
    shutil.rmtree(tmp_path / "state")  # forget the positions: everything is read again
    again = MemoryDeliverer()
    _drain(_tailer(tmp_path, again))
    ids = [json.loads(e)["id"] for e in first.events]
    assert ids == [json.loads(e)["id"] for e in again.events]
    assert len(set(ids)) == 2 and all(i.startswith("tail-") for i in ids)


def test_invalid_and_overlong_lines_go_to_the_rejected_log_and_the_tailer_moves_on(tmp_path, logs):
    long_line = json.dumps({"type": "PlaySong", "data": {"x": "y" * 5000}}) + "\n"
    _append(logs / "a.log", _line(0) + "not json\n" + long_line + "[1,2]\n" + _line(1))
    d = MemoryDeliverer()
    t = _tailer(tmp_path, d, max_line_bytes=1000)
    _drain(t)
    assert _track_ids(d) == ["l0", "l1"]
    entries = t.rejected_log.read()
    assert [e["offset"] for e in entries] == sorted(e["offset"] for e in entries)
    reasons = [e["reason"] for e in entries]
    assert len(entries) == 3 and "not a JSON object" in reasons[0]
    assert "more than max_line_bytes=1000" in reasons[1] and "line" not in entries[1]
    assert all(e["file"].endswith("a.log") for e in entries)


def test_lines_the_gateway_rejects_are_logged_with_file_and_offset(tmp_path, logs):
    _append(logs / "a.log", _line(0) + _line(1))
    d = MemoryDeliverer(reject=lambda e: "bad" if b'"l1"' in e else None)
    t = _tailer(tmp_path, d)
    _drain(t)
    (entry,) = t.rejected_log.read()
    assert entry["reason"] == "bad" and entry["offset"] == len(_line(0))


def test_positions_do_not_move_until_the_gateway_acknowledged(tmp_path, logs):
    class Down:
        def deliver(self, events):
            raise DeliveryStopped("gateway unreachable and shutting down")

    _append(logs / "a.log", _line(0))
    t = _tailer(tmp_path, Down())
    t.run()  # stops at the first delivery attempt
    d = MemoryDeliverer()
    _drain(_tailer(tmp_path, d))
    assert _track_ids(d) == ["l0"]


def test_a_restart_resumes_from_the_stored_position(tmp_path, logs):
    _append(logs / "a.log", "".join(_line(i) for i in range(5)))
    first = MemoryDeliverer()
    t = _tailer(tmp_path, first)
    _drain(t)
    t.close()
    _append(logs / "a.log", "".join(_line(i) for i in range(5, 8)))
    again = MemoryDeliverer()
    _drain(_tailer(tmp_path, again))
    assert _track_ids(again) == ["l5", "l6", "l7"]


def test_a_file_renamed_away_is_read_to_its_end_and_the_new_file_is_followed(tmp_path, logs):
    d = MemoryDeliverer()
    t = _tailer(tmp_path, d, pattern="app.log")
    _append(logs / "app.log", _line(0))
    _drain(t)
    _append(logs / "app.log", _line(1))
    os.rename(logs / "app.log", logs / "app.log.1")
    _append(logs / "app.log.1", _line(2))  # the writer still had it open
    _append(logs / "app.log", _line(3))
    _drain(t)
    assert sorted(_track_ids(d)) == ["l0", "l1", "l2", "l3"]
    assert t.stats().files_open == 1


def test_copytruncate_resumes_in_the_copy_and_reads_the_truncated_file_anew(tmp_path, logs):
    d = MemoryDeliverer()
    t = _tailer(tmp_path, d, pattern="app.log*")
    _append(logs / "app.log", _line(0))
    _drain(t)
    _append(logs / "app.log", _line(1))
    shutil.copyfile(logs / "app.log", logs / "app.log.1")
    os.truncate(logs / "app.log", 0)
    _append(logs / "app.log", _line(2))
    _drain(t)
    assert sorted(set(_track_ids(d))) == ["l0", "l1", "l2"]
    ids = [json.loads(e)["id"] for e in d.events]
    assert len(set(ids)) == 3, "any line read twice carries the same id"

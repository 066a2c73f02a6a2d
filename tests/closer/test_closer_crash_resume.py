"""The close protocol resumes after a crash at any step and produces the same bucket."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest

from courier.closer import BucketCloser, Catalog
from courier.model import BucketKey
from courier.settings import CloserSettings
from courier.storage import Layout, read_manifest, sha256_file
from courier.transport import MemoryKeyValue
from staging_testing import compiled_play_song, stage

WIDTH = 10
START = 1_795_000_000 - 1_795_000_000 % WIDTH
KEY = BucketKey("PlaySong", START)


class Crash(BaseException):
    """Stands for the process dying: nothing after the hook runs."""


def _compiled():
    return compiled_play_song()


def _prepare(root: Path) -> Layout:
    layout = Layout(root, WIDTH)
    stage(layout, KEY, [f"e{i}" for i in range(100)], 1, "w1")
    # A redelivery after a writer crash: the same events again in another file.
    stage(layout, KEY, [f"e{i}" for i in range(50, 120)], 51, "w2")
    return layout


async def _close(layout: Layout, kv: MemoryKeyValue, crash_after: int | None):
    def hook(step: int) -> None:
        if step == crash_after:
            raise Crash(step)

    async def notify(key: BucketKey, body: bytes) -> None:
        notified.append(key)

    notified: list[BucketKey] = []
    closer = BucketCloser(
        layout,
        Catalog(kv, "closer-1", 60.0),
        CloserSettings(max_rows_per_file=40),
        notify,
        after_step=hook,
    )
    result = await closer.close(KEY, _compiled(), watermark=START + WIDTH + 5)
    return result, notified


def _bucket_files(layout: Layout) -> dict[str, str]:
    d = layout.bucket_dir(KEY)
    return {p.name: sha256_file(p) for p in sorted(d.iterdir())} if d.exists() else {}


@pytest.mark.parametrize("step", [1, 2, 3, 4, 5, 6, 7])
async def test_a_closer_killed_after_any_step_and_rerun_produces_the_same_bucket(tmp_path, step):
    reference_layout = _prepare(tmp_path / "reference")
    ref_kv = MemoryKeyValue()
    reference, _ = await _close(reference_layout, ref_kv, None)
    assert reference is not None

    layout = _prepare(tmp_path / "crashed")
    kv = MemoryKeyValue()
    with pytest.raises(Crash):
        await _close(layout, kv, step)
    resumed, notified = await _close(layout, kv, None)
    assert resumed is not None and notified == [KEY]

    ref_m, got_m = reference.manifest, resumed.manifest
    assert read_manifest(layout.manifest_path(KEY)) == got_m
    fixed = ("closed_at", "watermark", "close_delay_secs")
    as_dict = msgspec.structs.asdict
    assert {k: v for k, v in as_dict(got_m).items() if k not in fixed} == {
        k: v for k, v in as_dict(ref_m).items() if k not in fixed
    }
    assert _bucket_files(layout).keys() == _bucket_files(reference_layout).keys()
    parts = {k: v for k, v in _bucket_files(layout).items() if k.startswith("part-")}
    assert parts == {
        k: v for k, v in _bucket_files(reference_layout).items() if k.startswith("part-")
    }
    assert got_m.events == 120 and got_m.input_events == 170 and got_m.duplicates_dropped == 50
    assert [f.rows for f in got_m.files] == [40, 40, 40]
    assert not layout.list_staging_files(KEY)
    entry = await kv.get(KEY.label())
    assert entry is not None and b'"closed"' in entry.value


async def test_a_rerun_after_the_crash_keeps_the_first_decision_time(tmp_path):
    layout = _prepare(tmp_path / "d")
    kv = MemoryKeyValue()
    with pytest.raises(Crash):
        await _close(layout, kv, 4)
    entry = await kv.get(KEY.label())
    assert entry is not None
    claimed_at = msgspec.json.decode(entry.value)["claimed_at"]
    resumed, _ = await _close(layout, kv, None)
    from courier.model import iso_utc

    assert resumed.manifest.closed_at == iso_utc(claimed_at)


async def test_duplicates_of_the_previous_bucket_are_dropped(tmp_path):
    layout = Layout(tmp_path, WIDTH)
    prev = BucketKey("PlaySong", START - WIDTH)
    stage(layout, prev, ["x1", "x2"], 1, "w1")
    kv = MemoryKeyValue()
    closer = BucketCloser(layout, Catalog(kv, "c", 60.0), CloserSettings(), lambda k, b: None)
    await closer.close(prev, _compiled(), START + WIDTH)
    stage(layout, KEY, ["x2", "x3"], 3, "w1")
    result = await closer.close(KEY, _compiled(), START + 2 * WIDTH)
    assert result is not None
    m = result.manifest
    assert (m.events, m.duplicates_dropped_previous_bucket) == (1, 1)
    shutil.rmtree(tmp_path / "_staging", ignore_errors=True)

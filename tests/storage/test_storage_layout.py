from __future__ import annotations

from pathlib import Path

import pytest

from courier.model import INVALID_TYPE, BucketKey, parse_time
from courier.storage.atomic import write_bytes_atomic
from courier.storage.layout import Layout

HOUR_10 = int(parse_time("2026-11-26T10:00:00Z"))


def test_hourly_buckets_use_the_classic_date_and_hour_layout(tmp_path: Path) -> None:
    layout = Layout(tmp_path, 3600)
    key = BucketKey("PlaySong", HOUR_10)
    assert layout.bucket_dir(key) == tmp_path / "PlaySong" / "date=2026-11-26" / "hour=10"
    assert layout.manifest_path(key) == layout.bucket_dir(key) / "_SUCCESS"
    assert layout.staging_dir(key) == (
        tmp_path / "_staging" / "PlaySong" / "date=2026-11-26" / "hour=10"
    )


def test_ten_second_buckets_add_minute_and_second_directories(tmp_path: Path) -> None:
    layout = Layout(tmp_path, 10)
    key = BucketKey("PlaySong", HOUR_10 + 5 * 60 + 30)
    assert layout.bucket_dir(key) == (
        tmp_path / "PlaySong" / "date=2026-11-26" / "hour=10" / "minute=05" / "second=30"
    )


def test_the_invalid_dataset_is_laid_out_like_a_type_but_is_not_listed_as_one(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path, 3600)
    key = BucketKey(INVALID_TYPE, HOUR_10)
    assert layout.bucket_dir(key) == tmp_path / "_invalid" / "date=2026-11-26" / "hour=10"
    write_bytes_atomic(layout.manifest_path(key), b"{}")
    write_bytes_atomic(layout.manifest_path(BucketKey("PlaySong", HOUR_10)), b"{}")
    (tmp_path / "_staging").mkdir(exist_ok=True)
    (tmp_path / ".hidden").mkdir()
    assert layout.event_types() == ["PlaySong"]
    assert layout.closed_bucket_starts(INVALID_TYPE) == [HOUR_10]


def test_file_names_are_deterministic_and_sort_by_sequence(tmp_path: Path) -> None:
    layout = Layout(tmp_path, 3600)
    key = BucketKey("PlaySong", HOUR_10)
    assert layout.part_name(0) == "part-00000.parquet"
    assert layout.part_name(12) == "part-00012.parquet"
    path = layout.staging_file(key, "host-1", 7, 120)
    assert path.name == "host-1-00000000000000000007-00000000000000000120.parquet"
    assert layout.quarantine_key("PlaySong", 7) == "_quarantine/PlaySong/00000000000000000007.json"


def test_staging_listings_skip_temp_files_and_sort_by_name(tmp_path: Path) -> None:
    layout = Layout(tmp_path, 3600)
    key = BucketKey("PlaySong", HOUR_10)
    later = layout.staging_file(key, "w1", 200, 300)
    earlier = layout.staging_file(key, "w1", 1, 199)
    for p in (later, earlier):
        write_bytes_atomic(p, b"x")
    (layout.staging_dir(key) / ".tmp-abc-w1-x.parquet").write_bytes(b"partial")
    assert layout.list_staging_files(key) == [earlier, later]
    assert layout.list_staging_files(key.next(3600)) == []


def test_staging_bucket_starts_lists_only_buckets_with_a_staging_file(tmp_path: Path) -> None:
    layout = Layout(tmp_path, 3600)
    key = BucketKey("PlaySong", HOUR_10)
    write_bytes_atomic(layout.staging_file(key.next(3600), "w1", 5, 6), b"x")
    write_bytes_atomic(layout.staging_file(key, "w1", 1, 2), b"x")
    layout.staging_dir(key.next(7200)).mkdir(parents=True)
    (layout.staging_dir(key.next(7200)) / ".tmp-x-w1-1-1.parquet").write_bytes(b"")
    assert layout.staging_bucket_starts("PlaySong") == [HOUR_10, HOUR_10 + 3600]
    assert layout.staging_bucket_starts("Unknown") == []


def test_closed_bucket_starts_are_sorted(tmp_path: Path) -> None:
    layout = Layout(tmp_path, 10)
    for offset in (20, 0, 3600):
        write_bytes_atomic(layout.manifest_path(BucketKey("PlaySong", HOUR_10 + offset)), b"{}")
    layout.bucket_dir(BucketKey("PlaySong", HOUR_10 + 10)).mkdir(parents=True)
    assert layout.closed_bucket_starts("PlaySong") == [HOUR_10, HOUR_10 + 20, HOUR_10 + 3600]
    assert Layout(tmp_path / "missing", 10).event_types() == []


def test_a_width_that_does_not_divide_a_day_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="divisor"):
        Layout(tmp_path, 7)

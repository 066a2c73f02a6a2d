"""Bucket keys, partition paths and ids."""

from __future__ import annotations

import time
import uuid

import pytest

from courier.model import (
    bucket_start,
    parse_partition_path,
    partition_path,
    uuid7,
    validate_bucket_width,
)


def test_uuid7_ids_are_valid_version_7_uuids_and_sort_by_time():
    first = uuid7()
    time.sleep(0.002)
    later = [uuid7() for _ in range(1000)]
    for u in [first, *later]:
        parsed = uuid.UUID(u)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == u
    assert all(first < u for u in later)
    assert len(set(later)) == len(later)


@pytest.mark.parametrize(
    ("width", "path"),
    [
        (3600, "date=2026-11-26/hour=10"),
        (7200, "date=2026-11-26/hour=10"),
        (900, "date=2026-11-26/hour=10/minute=15"),
        (10, "date=2026-11-26/hour=10/minute=15/second=20"),
    ],
)
def test_partition_paths_extend_the_hourly_layout_for_shorter_widths(width, path):
    start = bucket_start(1795688120.7, width)  # 2026-11-26T10:15:20.7Z
    assert partition_path(start, width) == path
    assert parse_partition_path(f"/data/PlaySong/{path}") == start


def test_a_bucket_width_must_divide_a_day():
    assert validate_bucket_width(60) == 60
    for bad in (0, -1, 7, 7000):
        with pytest.raises(ValueError, match="divisor of 86400"):
            validate_bucket_width(bad)

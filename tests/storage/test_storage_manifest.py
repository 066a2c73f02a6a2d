from __future__ import annotations

from pathlib import Path

import msgspec
import pyarrow as pa
import pytest

from courier.errors import ManifestError
from courier.model import iso_utc, parse_time
from courier.storage.manifest import (
    DcTransfer,
    Manifest,
    ManifestFile,
    SeqRange,
    read_manifest,
    seq_ranges,
    write_manifest,
)

START = int(parse_time("2026-11-26T10:00:00Z"))


def _manifest() -> Manifest:
    return Manifest(
        event_type="PlaySong",
        bucket_start=iso_utc(START),
        bucket_end=iso_utc(START + 3600),
        bucket_start_epoch=START,
        bucket_width_secs=3600,
        events=3,
        input_events=5,
        duplicates_dropped=1,
        duplicates_dropped_previous_bucket=1,
        skewed_in=0,
        stream_seq_ranges=[SeqRange(1, 4)],
        files=[ManifestFile("part-00000.parquet", 1234, 3, "ab" * 32)],
        staging_files=["w1-00000000000000000001-00000000000000000004.parquet"],
        schema_versions=[1, 2],
        watermark=iso_utc(START + 3700),
        closed_at=iso_utc(START + 3710),
        close_delay_secs=110.0,
    )


def test_a_manifest_reads_back_equal_to_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "PlaySong" / "date=2026-11-26" / "hour=10" / "_SUCCESS"
    write_manifest(path, _manifest())
    assert read_manifest(path) == _manifest()
    assert read_manifest(path).format_version == 2


def test_identical_manifests_are_identical_bytes_with_sorted_keys(tmp_path: Path) -> None:
    write_manifest(tmp_path / "a", _manifest())
    write_manifest(tmp_path / "b", _manifest())
    text = (tmp_path / "a").read_text()
    assert (tmp_path / "b").read_text() == text
    assert text.startswith('{\n  "bucket_end": "2026-11-26T11:00:00.000Z",\n')
    assert '"close_delay_secs": 110.0' in text


def test_a_missing_manifest_is_a_manifest_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"_SUCCESS does not exist"):
        read_manifest(tmp_path / "_SUCCESS")


def test_a_corrupt_manifest_is_a_manifest_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "_SUCCESS"
    path.write_text('{"format_version": 1, "event_type": ')
    with pytest.raises(ManifestError, match=r"_SUCCESS is corrupt"):
        read_manifest(path)
    path.write_text('{"format_version": 1, "event_type": "PlaySong"}')
    with pytest.raises(ManifestError, match=r"_SUCCESS is corrupt"):
        read_manifest(path)


def test_a_manifest_of_an_unknown_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "_SUCCESS"
    path.write_text('{"format_version": 3, "something": "new"}')
    with pytest.raises(ManifestError, match=r"_SUCCESS has format_version 3.*reads versions 1, 2"):
        read_manifest(path)


def test_a_format_1_manifest_still_reads_with_no_dcs(tmp_path: Path) -> None:
    older = msgspec.json.decode(msgspec.json.encode(_manifest()))
    older["format_version"] = 1
    del older["dcs"]
    (tmp_path / "_SUCCESS").write_bytes(msgspec.json.encode(older))
    m = read_manifest(tmp_path / "_SUCCESS")
    assert (m.format_version, m.events, m.dcs) == (1, 3, {})


def test_per_dc_counts_and_transfer_delays_read_back(tmp_path: Path) -> None:
    dcs = {
        "dcA": DcTransfer(
            events=2,
            transfer_delay_p50_secs=0.012,
            transfer_delay_p99_secs=0.5,
            transfer_delay_max_secs=0.51,
        ),
        "dcB": DcTransfer(
            events=1,
            transfer_delay_p50_secs=31.0,
            transfer_delay_p99_secs=31.0,
            transfer_delay_max_secs=31.0,
        ),
    }
    write_manifest(tmp_path / "_SUCCESS", msgspec.structs.replace(_manifest(), dcs=dcs))
    assert read_manifest(tmp_path / "_SUCCESS").dcs == dcs


def test_seq_ranges_compress_unsorted_sequences_with_gaps_and_duplicates() -> None:
    assert seq_ranges([9, 3, 1, 2, 2, 10, 7, 3, 12]) == [
        SeqRange(1, 3),
        SeqRange(7, 7),
        SeqRange(9, 10),
        SeqRange(12, 12),
    ]


def test_seq_ranges_accept_arrow_arrays_and_ignore_nulls() -> None:
    chunked = pa.chunked_array([pa.array([5, None, 4], pa.uint64()), pa.array([6], pa.uint64())])
    assert seq_ranges(chunked) == [SeqRange(4, 6)]
    assert seq_ranges(pa.array([], pa.uint64())) == []
    assert seq_ranges([]) == []


def test_seq_ranges_handle_a_million_sequences_as_two_ranges() -> None:
    seqs = pa.concat_arrays(
        [
            pa.array(range(500_001, 1_000_001), pa.uint64()),
            pa.array(range(1, 500_000), pa.uint64()),
        ]
    )
    assert seq_ranges(seqs) == [SeqRange(1, 499_999), SeqRange(500_001, 1_000_000)]


def test_renamed_columns_are_kept_and_absent_ones_read_as_none_renamed(tmp_path: Path) -> None:
    renamed = msgspec.structs.replace(_manifest(), renamed_columns={"user_name": "user"})
    write_manifest(tmp_path / "a", renamed)
    assert read_manifest(tmp_path / "a").renamed_columns == {"user_name": "user"}
    older = msgspec.json.decode((tmp_path / "a").read_bytes())
    del older["renamed_columns"]
    (tmp_path / "b").write_bytes(msgspec.json.encode(older))
    assert read_manifest(tmp_path / "b").renamed_columns == {}

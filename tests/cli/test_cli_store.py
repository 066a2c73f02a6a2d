"""``courier buckets``, ``read`` and ``sql`` read a bucket store chosen by ``--store-url``:
here buckets a closer wrote to S3 (a moto_server process)."""

from __future__ import annotations

import json
from pathlib import Path

from bench._emulators import MotoS3
from click.testing import CliRunner

from courier.cli.main import cli
from courier.model import BucketKey, iso_utc
from courier.storage import Layout
from courier.storage.store.s3 import S3BucketStore
from staging_testing import close_staged, stage

WIDTH = 3600
START = 1_795_000_000 - 1_795_000_000 % WIDTH


async def test_buckets_read_and_sql_see_the_closed_buckets_of_an_s3_store(
    moto_s3: MotoS3, tmp_path: Path
) -> None:
    bucket = moto_s3.new_bucket()
    layout = Layout(S3BucketStore(bucket, "events", **moto_s3.store_config()), WIDTH)
    key = BucketKey("PlaySong", START)
    stage(layout, key, ["a", "b", "c"], 1, "w1")
    stage(layout, key, ["c", "d"], 4, "w2")  # a redelivered id
    await close_staged(layout, key, START + WIDTH + 20, tmp_path / "closer-scratch")

    env = {**moto_s3.env(), "COURIER_TABLES__ENABLED": "false"}
    base = [
        "--data-dir",
        str(tmp_path / "nothing-here"),
        "--store-url",
        f"s3://{bucket}/events",
        "--scratch-dir",
        str(tmp_path / "cli-scratch"),
        "--bucket-width-secs",
        str(WIDTH),
    ]
    runner = CliRunner()
    listed = runner.invoke(cli, [*base, "buckets", "--type", "PlaySong"], env=env)
    assert listed.exit_code == 0, listed.output
    assert iso_utc(START) in listed.output and "closed" in listed.output

    when = ["--from", iso_utc(START), "--to", iso_utc(START + WIDTH)]
    read = runner.invoke(cli, [*base, "read", "PlaySong", *when, "--format", "jsonl"], env=env)
    assert read.exit_code == 0, read.output
    ids = sorted(json.loads(line)["id"] for line in read.output.splitlines() if line.strip())
    assert ids == ["a", "b", "c", "d"]

    sql = runner.invoke(
        cli, [*base, "sql", "SELECT count(DISTINCT id) AS n FROM PlaySong"], env=env
    )
    assert sql.exit_code == 0, sql.output
    assert "4" in sql.output
    assert not (tmp_path / "nothing-here").exists(), "nothing was read from or written to data_dir"

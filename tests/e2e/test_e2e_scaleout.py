"""Courier on several machines (on one): a 3-node NATS cluster, 2 gateways, 2 writers and
2 closers that share nothing but NATS and an object store (moto S3 or fake-gcs-server,
real processes). One writer, one closer and one gateway are killed with ``kill -9``
under ledgered load; every acknowledged id must arrive exactly once, every bucket must
close, and every ``_SUCCESS`` must be written exactly once (bench/scaleout.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.scaleout import Options, run


@pytest.mark.slow
@pytest.mark.parametrize("store", ["s3", "gcs"])
def test_processes_sharing_only_nats_and_a_store_deliver_exactly_once_through_kill_9(
    store: str, tmp_path: Path
) -> None:
    row = run(Options(store=store, load_secs=8.0, rate_events_per_s=1500.0), workdir=tmp_path)
    assert row["acked"] > 0
    assert (row["lost"], row["duplicated"], row["unexpected"]) == (0, 0, 0), row
    assert row["killed"] == ["writer-0", "closer-0", "gateway-0"], row
    assert row["open_buckets"] == 0 and row["closed_buckets"] > 0, row
    assert row["success_writes"] == row["success_objects"], "a _SUCCESS was written twice"
    assert row["success_max_versions"] in (1, None), row  # S3: one version each; GCS: n/a
    assert row["problems"] == [] and row["ok"], row

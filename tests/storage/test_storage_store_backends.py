"""What differs per bucket store: choice by URL, credentials from the environment, failures."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from bench._emulators import FakeGcs, MotoS3

from courier.errors import ConfigError, ObjectExistsError, StaleVersionError, StorageError
from courier.storage.atomic import TEMP_PREFIX
from courier.storage.store import BucketStore, LocalStore, MemoryStore, open_store
from courier.storage.store.local import LOCK_NAME
from courier.transport import free_port

# -- choosing a store by URL ------------------------------------------------


def test_a_plain_path_or_file_url_opens_the_local_store(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path), LocalStore)
    store = open_store(f"file://{tmp_path}")
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path
    assert store.url == tmp_path.as_uri()


def test_s3_and_gs_urls_open_object_stores_without_contacting_them() -> None:
    s3 = open_store("s3://my-bucket/courier/prod")
    gs = open_store("gs://my-bucket/courier/prod/")
    assert (type(s3).__name__, s3.url) == ("S3BucketStore", "s3://my-bucket/courier/prod")
    assert (type(gs).__name__, gs.url) == ("GcsBucketStore", "gs://my-bucket/courier/prod")
    assert open_store("s3://my-bucket").url == "s3://my-bucket"


@pytest.mark.parametrize(
    "url", ["ftp://host/x", "s3:///prefix", "gs://bucket/a/../b", "file://relative/path"]
)
def test_an_unusable_store_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="store URL"):
        open_store(url)


# -- credentials and endpoints from the providers' usual environment ---------


def test_an_s3_url_uses_the_aws_environment(
    moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = moto_s3.new_bucket()
    for name, value in moto_s3.env().items():
        monkeypatch.setenv(name, value)
    store = open_store(f"s3://{bucket}/courier")
    store.create("T/_SUCCESS", b"closed")
    assert store.get("T/_SUCCESS") == b"closed"
    assert repr(store) == f"S3BucketStore('s3://{bucket}/courier')"
    assert moto_s3.env()["AWS_SECRET_ACCESS_KEY"] not in repr(store)


def test_an_s3_url_reads_credentials_from_an_aws_profile_file(
    moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bucket = moto_s3.new_bucket()
    env = moto_s3.env()
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[courier]\n"
        f"aws_access_key_id = {env.pop('AWS_ACCESS_KEY_ID')}\n"
        f"aws_secret_access_key = {env.pop('AWS_SECRET_ACCESS_KEY')}\n"
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "courier")
    store = open_store(f"s3://{bucket}/courier")
    store.put("T/x", b"from a profile")
    assert store.get("T/x") == b"from a profile"


def test_a_gs_url_uses_the_storage_emulator_host(
    fake_gcs: FakeGcs, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = fake_gcs.new_bucket()
    for name, value in fake_gcs.env().items():
        monkeypatch.setenv(name, value)
    store = open_store(f"gs://{bucket}/courier")
    store.create("T/_SUCCESS", b"closed")
    assert store.get("T/_SUCCESS") == b"closed"
    with pytest.raises(ObjectExistsError):
        store.create("T/_SUCCESS", b"again")


def test_two_prefixes_in_one_bucket_are_two_stores(moto_s3: MotoS3) -> None:
    from courier.storage.store.s3 import S3BucketStore

    bucket = moto_s3.new_bucket()
    prod = S3BucketStore(bucket, "prod", **moto_s3.store_config())
    test = S3BucketStore(bucket, "test", **moto_s3.store_config())
    prod.put("T/x", b"prod")
    assert test.list_objects("") == []
    assert [o.key for o in prod.list_objects("")] == ["T/x"]


# -- the store's own record: no second create ever succeeded ------------------


def _race_creators(stores: list[BucketStore], key: str) -> int:
    start = threading.Barrier(len(stores))

    def create(store: BucketStore) -> bool:
        start.wait()
        try:
            store.create(key, b"manifest")
        except ObjectExistsError:
            return False
        return True

    with ThreadPoolExecutor(len(stores)) as pool:
        return sum(pool.map(create, stores))


def test_a_versioned_s3_bucket_records_one_version_of_a_raced_success(moto_s3: MotoS3) -> None:
    from courier.storage.store.s3 import S3BucketStore

    bucket = moto_s3.new_bucket(versioned=True)
    stores: list[BucketStore] = [
        S3BucketStore(bucket, "root", **moto_s3.store_config()) for _ in range(8)
    ]
    assert _race_creators(stores, "T/date=1/hour=01/_SUCCESS") == 1
    stores[0].put("T/date=1/hour=01/part-00000.parquet", b"1")
    stores[0].put("T/date=1/hour=01/part-00000.parquet", b"1")  # a resumed close rewrites it
    assert moto_s3.object_versions(bucket, "root/") == {
        "root/T/date=1/hour=01/_SUCCESS": 1,
        "root/T/date=1/hour=01/part-00000.parquet": 2,
    }


def test_the_gcs_access_log_records_one_successful_create_of_a_raced_success(
    fake_gcs: FakeGcs,
) -> None:
    from courier.storage.store.gcs import GcsBucketStore

    bucket = fake_gcs.new_bucket()
    before = fake_gcs.successful_creates()
    stores: list[BucketStore] = [
        GcsBucketStore(bucket, "root", client=fake_gcs.client()) for _ in range(8)
    ]
    assert _race_creators(stores, "T/date=1/hour=01/_SUCCESS") == 1
    assert fake_gcs.successful_creates() - before == 1


# -- failures become courier errors that say what, where and what next -------


def test_a_missing_s3_bucket_is_a_storage_error_naming_it(moto_s3: MotoS3) -> None:
    from courier.storage.store.s3 import S3BucketStore

    store = S3BucketStore("no-such-bucket", "p", **moto_s3.store_config())
    with pytest.raises(StorageError, match=r"s3://no-such-bucket/p/T/x.*NoSuchBucket") as exc:
        store.put("T/x", b"1")
    assert "retry later" in str(exc.value)
    with pytest.raises(StorageError, match="bucket does not exist"):
        store.get("T/x")


def test_a_missing_gcs_bucket_is_a_storage_error_naming_it(fake_gcs: FakeGcs) -> None:
    from courier.storage.store.gcs import GcsBucketStore

    store = GcsBucketStore("no-such-bucket", "p", client=fake_gcs.client())
    with pytest.raises(StorageError, match=r"gs://no-such-bucket/p/T/x"):
        store.put("T/x", b"1")


def test_an_unreachable_s3_endpoint_fails_within_the_retry_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    store = open_store("s3://bucket", retry_deadline_secs=1.0)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"could not write s3://bucket/T/x: .*retry later"):
        store.put("T/x", b"1")
    assert time.monotonic() - started < 15


def test_an_unreachable_gcs_endpoint_fails_within_the_retry_deadline() -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from courier.storage.store.gcs import GcsBucketStore

    client = storage.Client(
        project="p",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": f"http://127.0.0.1:{free_port()}"},
    )
    store = GcsBucketStore("bucket", retry_deadline_secs=1.0, client=client)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"could not read gs://bucket/T/x"):
        store.get("T/x")
    assert time.monotonic() - started < 15


# -- the local store ----------------------------------------------------------


def test_the_local_store_hides_its_temp_and_lock_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    v1 = store.create("T/_SUCCESS", b"one")
    store.replace("T/_SUCCESS", b"two", version=v1)
    (tmp_path / "T" / f"{TEMP_PREFIX}abandoned-part-00000.parquet").write_bytes(b"half")
    assert (tmp_path / LOCK_NAME).exists()
    assert [o.key for o in store.list_objects("")] == ["T/_SUCCESS"]
    assert store.list_dirs("") == ["T"]


def test_the_local_store_versions_are_content_digests(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    version = store.create("T/_SUCCESS", b"manifest")
    assert version == hashlib.sha256(b"manifest").hexdigest()
    # Another process rewrote the file behind the store's back: the swap must lose.
    (tmp_path / "T" / "_SUCCESS").write_bytes(b"someone else")
    with pytest.raises(StaleVersionError, match="has changed"):
        store.replace("T/_SUCCESS", b"mine", version=version)


def test_a_local_write_into_an_unwritable_root_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    store = LocalStore(tmp_path / "file")  # the root is a file, not a directory
    with pytest.raises(StorageError, match=r"could not write .*file/T/x.*not changed"):
        store.put("T/x", b"1")


def test_the_local_create_leaves_no_temp_file_behind(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.create("T/_SUCCESS", b"1")
    with pytest.raises(ObjectExistsError):
        store.create("T/_SUCCESS", b"2")
    assert sorted(os.listdir(tmp_path / "T")) == ["_SUCCESS"]


def test_the_memory_store_counts_what_happened() -> None:
    store = MemoryStore()
    store.create("T/_SUCCESS", b"1")
    with pytest.raises(ObjectExistsError):
        store.create("T/_SUCCESS", b"2")
    store.put("T/part-00000.parquet", b"p")
    assert store.calls["create"] == 1
    assert store.calls["put"] == 1


def _create_in_process(root: str, key: str, gate: Any, results: Any) -> None:
    gate.wait()  # all processes leave the gate together
    try:
        LocalStore(Path(root)).create(key, f"{os.getpid()}".encode())
    except ObjectExistsError:
        results.put(False)
        return
    results.put(True)


def test_of_eight_racing_creator_processes_on_a_local_store_exactly_one_wins(
    tmp_path: Path,
) -> None:
    ctx = multiprocessing.get_context("fork")
    gate, results = ctx.Barrier(8), ctx.Queue()
    procs = [
        ctx.Process(target=_create_in_process, args=(str(tmp_path), "T/_SUCCESS", gate, results))
        for _ in range(8)
    ]
    for p in procs:
        p.start()
    won = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert won.count(True) == 1
    assert sorted(os.listdir(tmp_path / "T")) == ["_SUCCESS"]


def test_a_writer_killed_mid_put_leaves_no_object_on_a_local_store(tmp_path: Path) -> None:
    fifo = tmp_path / "never-finishes"
    os.mkfifo(fifo)
    code = (
        "import sys; from pathlib import Path; from courier.storage.store import LocalStore; "
        "LocalStore(Path(sys.argv[1])).put_file('T/part-00000.parquet', Path(sys.argv[2]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "root"), str(fifo)])
    try:
        with open(fifo, "wb") as feed:  # blocks until the child opens the pipe
            feed.write(b"PAR1" + b"x" * 100_000)
            feed.flush()
            deadline = time.monotonic() + 30
            while not list((tmp_path / "root" / "T").glob(".tmp-*")):
                assert time.monotonic() < deadline, "the child never started its temp file"
                time.sleep(0.05)
            proc.kill()  # mid-write: the pipe is still open, the temp file half full
            proc.wait()
    except BrokenPipeError:
        pass
    store = LocalStore(tmp_path / "root")
    assert store.head("T/part-00000.parquet") is None
    assert store.list_objects("") == []

"""One contract for every bucket store: local directory, in-memory, S3 on moto, GCS on fake-gcs-server.

The close protocol relies on each of these (see courier.storage.store.base):
create-only for ``_SUCCESS``, compare-and-swap for re-close, atomic puts for
staging and parts, and list-after-put for the closer's staging listing.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bench._emulators import FakeGcs, MotoS3

from courier.errors import (
    ConcurrentUpdateError,
    CourierError,
    ObjectExistsError,
    ObjectNotFoundError,
    StaleVersionError,
    StorageError,
)
from courier.storage.store import BucketStore, LocalStore, MemoryStore

BACKENDS = ["local", "memory", "s3", "gcs"]

#: Makes a new handle on the same store, as another process would (its own client).
StoreFactory = Callable[[], BucketStore]


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    backend = request.param
    if backend == "local":
        return lambda: LocalStore(tmp_path / "root")
    if backend == "memory":
        shared = MemoryStore()
        return lambda: shared
    if backend == "s3":
        from courier.storage.store.s3 import S3BucketStore

        moto: MotoS3 = request.getfixturevalue("moto_s3")
        bucket = moto.new_bucket()
        return lambda: S3BucketStore(bucket, "data/root", **moto.store_config())
    from courier.storage.store.gcs import GcsBucketStore

    gcs: FakeGcs = request.getfixturevalue("fake_gcs")
    bucket = gcs.new_bucket()
    return lambda: GcsBucketStore(bucket, "data/root", client=gcs.client())


@pytest.fixture
def store(make_store: StoreFactory) -> BucketStore:
    return make_store()


MANIFEST_KEY = "PlaySong/date=2026-11-26/hour=10/_SUCCESS"


def test_every_backend_is_a_bucket_store(store: BucketStore) -> None:
    assert isinstance(store, BucketStore)
    assert "://" in store.url


def test_a_put_object_reads_back_and_a_second_put_replaces_it(store: BucketStore) -> None:
    store.put("a/b/one.bin", b"first")
    assert store.get("a/b/one.bin") == b"first"
    store.put("a/b/one.bin", b"second")
    assert store.get("a/b/one.bin") == b"second"
    assert store.head("a/b/one.bin") is not None
    assert store.head("a/b/one.bin").size_bytes == len(b"second")  # type: ignore[union-attr]


def test_create_only_refuses_an_existing_object_and_keeps_it(store: BucketStore) -> None:
    store.create(MANIFEST_KEY, b"closed by A")
    with pytest.raises(ObjectExistsError, match="already exists"):
        store.create(MANIFEST_KEY, b"closed by B")
    assert store.get(MANIFEST_KEY) == b"closed by A"


def test_of_eight_racing_creators_exactly_one_wins(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(8)]
    start = threading.Barrier(len(stores))

    def create(i: int) -> bool:
        start.wait()
        try:
            stores[i].create(MANIFEST_KEY, f"closer-{i}".encode())
        except ObjectExistsError:
            return False
        return True

    with ThreadPoolExecutor(len(stores)) as pool:
        won = list(pool.map(create, range(len(stores))))
    assert won.count(True) == 1
    assert stores[0].get(MANIFEST_KEY) == f"closer-{won.index(True)}".encode()


def test_compare_and_swap_with_a_stale_version_fails_and_changes_nothing(
    store: BucketStore,
) -> None:
    v1 = store.create(MANIFEST_KEY, b"version 1")
    assert store.get_versioned(MANIFEST_KEY).version == v1
    v2 = store.replace(MANIFEST_KEY, b"version 2", version=v1)
    assert v2 != v1
    with pytest.raises(StaleVersionError, match="nothing was written"):
        store.replace(MANIFEST_KEY, b"version 2 again", version=v1)
    current = store.get_versioned(MANIFEST_KEY)
    assert (current.data, current.version) == (b"version 2", v2)
    assert store.replace(MANIFEST_KEY, b"version 3", version=current.version)
    assert store.get(MANIFEST_KEY) == b"version 3"


def test_compare_and_swap_on_a_missing_object_fails(store: BucketStore) -> None:
    v1 = store.create("x/_SUCCESS", b"one")
    store.delete("x/_SUCCESS")
    with pytest.raises(StaleVersionError):
        store.replace("x/_SUCCESS", b"two", version=v1)
    assert store.head("x/_SUCCESS") is None


def test_of_eight_racing_swaps_from_one_version_exactly_one_wins(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(8)]
    version = stores[0].create(MANIFEST_KEY, b"version 1")
    start = threading.Barrier(len(stores))

    def swap(i: int) -> bool:
        start.wait()
        try:
            stores[i].replace(MANIFEST_KEY, f"reclose-{i}".encode(), version=version)
        except StaleVersionError:
            return False
        return True

    with ThreadPoolExecutor(len(stores)) as pool:
        won = list(pool.map(swap, range(len(stores))))
    assert won.count(True) == 1
    assert stores[0].get(MANIFEST_KEY) == f"reclose-{won.index(True)}".encode()


def test_a_reader_never_sees_a_half_written_object(make_store: StoreFactory) -> None:
    writer, reader = make_store(), make_store()
    size = 1024 * 1024
    contents = {bytes([n]) * size for n in range(4)}
    writer.put("staging/f.parquet", bytes([0]) * size)
    done = threading.Event()
    seen: list[bytes] = []

    def read() -> None:
        while not done.is_set() or len(seen) < 3:
            seen.append(reader.get("staging/f.parquet"))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for round_ in range(12):
            writer.put("staging/f.parquet", bytes([round_ % 4]) * size)
    finally:
        done.set()
        thread.join()
    assert seen
    assert all(data in contents for data in seen)


def test_a_failed_upload_leaves_no_object(store: BucketStore, tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        store.put_file("staging/missing.parquet", tmp_path / "does-not-exist.parquet")
    assert store.head("staging/missing.parquet") is None
    assert store.list_objects("staging") == []


def test_a_listing_after_a_put_finds_the_object(store: BucketStore) -> None:
    for n in range(20):
        store.put(f"_staging/PlaySong/hour=10/w1-{n:03d}.parquet", b"x" * n)
        listed = [o.key for o in store.list_objects("_staging/PlaySong")]
        assert f"_staging/PlaySong/hour=10/w1-{n:03d}.parquet" in listed
    assert len(store.list_objects("_staging")) == 20


def test_a_listing_holds_only_what_is_under_the_directory_prefix(store: BucketStore) -> None:
    store.put("Play/date=1/hour=01/part-00000.parquet", b"1")
    store.put("Play/date=1/hour=02/_SUCCESS", b"22")
    store.put("PlaySong/date=1/hour=01/_SUCCESS", b"333")
    store.put("_staging/Play/x.parquet", b"4444")
    assert [(o.key, o.size_bytes) for o in store.list_objects("Play")] == [
        ("Play/date=1/hour=01/part-00000.parquet", 1),
        ("Play/date=1/hour=02/_SUCCESS", 2),
    ]
    assert len(store.list_objects("")) == 4
    assert store.list_objects("Nothing/here") == []
    assert store.list_dirs("") == ["Play", "PlaySong", "_staging"]
    assert store.list_dirs("Play/date=1") == ["hour=01", "hour=02"]


def test_deleting_is_idempotent(store: BucketStore) -> None:
    store.put("_staging/T/f.parquet", b"x")
    store.delete("_staging/T/f.parquet")
    store.delete("_staging/T/f.parquet")
    assert store.head("_staging/T/f.parquet") is None
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        store.get("_staging/T/f.parquet")
    assert [o.key for o in store.list_objects("_staging")] == []


def test_a_parquet_object_reads_through_a_local_file(store: BucketStore, tmp_path: Path) -> None:
    table = pa.table({"id": ["a", "b", "c"], "n": [1, 2, 3]})
    scratch = tmp_path / "scratch"
    source = tmp_path / "src.parquet"
    pq.write_table(table, source, compression="zstd")
    store.put_file("PlaySong/date=2026-11-26/hour=10/part-00000.parquet", source)
    with store.local_file("PlaySong/date=2026-11-26/hour=10/part-00000.parquet", scratch) as path:
        assert pq.read_table(path).equals(table)
    assert not scratch.exists() or list(scratch.iterdir()) == []
    assert source.exists()  # put_file leaves the local file in place
    with (
        pytest.raises(ObjectNotFoundError),
        store.local_file("PlaySong/missing.parquet", scratch),
    ):
        pass


def test_parquet_written_to_memory_round_trips_through_put_and_get(store: BucketStore) -> None:
    table = pa.table({"id": ["x"] * 1000, "seq": list(range(1000))})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    store.put("_staging/T/w-1.parquet", sink.getvalue())
    assert pq.read_table(pa.BufferReader(store.get("_staging/T/w-1.parquet"))).equals(table)


def test_errors_are_courier_errors_that_name_the_object(store: BucketStore) -> None:
    with pytest.raises(ObjectNotFoundError) as missing:
        store.get("T/date=1/hour=01/_SUCCESS")
    assert isinstance(missing.value, StorageError)
    assert "T/date=1/hour=01/_SUCCESS" in str(missing.value)
    store.create("T/_SUCCESS", b"1")
    with pytest.raises(ObjectExistsError) as exists:
        store.create("T/_SUCCESS", b"2")
    # An answer, not a failure: callers must not retry it as a storage error.
    assert isinstance(exists.value, ConcurrentUpdateError)
    assert not isinstance(exists.value, StorageError)
    assert "T/_SUCCESS" in str(exists.value)


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", ".tmp-x", "a/../b", "a/.hidden"])
def test_keys_that_could_escape_or_hide_are_refused(store: BucketStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        store.put(key, b"x")


def test_errors_from_the_store_are_ours(store: BucketStore) -> None:
    # Not the library's: every backend fails with a CourierError subclass.
    for call in (
        lambda: store.get("nothing"),
        lambda: store.create("T/x", b"1") and store.create("T/x", b"1"),
        lambda: store.replace("T/x", b"1", version="not-a-version"),
    ):
        with pytest.raises(CourierError):
            call()

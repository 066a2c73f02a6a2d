"""The close protocol through every bucket store: local, in-memory, S3 (moto_server) and
GCS (fake-gcs-server), the emulators as real processes.

The store enforces the protocol: ``_SUCCESS`` is created at most once, a retried
create finds its own write, someone else's manifest stands and is never overwritten,
and a close on an object store writes the same bytes as on a local directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from bench._emulators import FakeGcs, MotoS3

from courier.closer import BucketCloser, Catalog
from courier.closer.horizon import DedupHorizon
from courier.errors import ObjectExistsError
from courier.model import BucketKey
from courier.settings import CloserSettings
from courier.storage import BucketReader, Layout
from courier.storage.manifest import encode_manifest
from courier.storage.store import BucketStore, LocalStore, MemoryStore
from courier.transport import MemoryKeyValue
from staging_testing import compiled_play_song, stage

WIDTH = 10
START = 1_795_000_000 - 1_795_000_000 % WIDTH
KEY = BucketKey("PlaySong", START)
FIXED = ("closed_at", "watermark", "close_delay_secs")


@pytest.fixture(params=["local", "memory", "s3", "gcs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BucketStore:
    backend = request.param
    if backend == "local":
        return LocalStore(tmp_path / "root")
    if backend == "memory":
        return MemoryStore()
    if backend == "s3":
        from courier.storage.store.s3 import S3BucketStore

        moto: MotoS3 = request.getfixturevalue("moto_s3")
        return S3BucketStore(moto.new_bucket(), "courier", **moto.store_config())
    from courier.storage.store.gcs import GcsBucketStore

    gcs: FakeGcs = request.getfixturevalue("fake_gcs")
    return GcsBucketStore(gcs.new_bucket(), "courier", client=gcs.client())


def _prepare(store: BucketStore) -> Layout:
    layout = Layout(store, WIDTH)
    stage(layout, KEY, [f"e{i}" for i in range(100)], 1, "w1")
    # A redelivery after a writer crash: the same events again in another object.
    stage(layout, KEY, [f"e{i}" for i in range(50, 120)], 51, "w2")
    return layout


def _closer(
    layout: Layout,
    kv: MemoryKeyValue,
    scratch: Path,
    after_step: Callable[[int], None] | None = None,
) -> BucketCloser:
    return BucketCloser(
        layout,
        Catalog(kv, "closer-1", 60.0),
        CloserSettings(max_rows_per_file=40),
        lambda k, b: None,
        scratch_dir=scratch,
        after_step=after_step or (lambda step: None),
    )


def _parts(layout: Layout) -> dict[str, bytes]:
    return {k.rsplit("/", 1)[-1]: layout.store.get(k) for k in layout.part_keys(KEY)}


def _without_times(m: object) -> dict[str, object]:
    return {k: v for k, v in msgspec.structs.asdict(m).items() if k not in FIXED}  # type: ignore[arg-type]


async def test_a_bucket_closed_through_any_store_is_the_same_as_on_a_local_directory(
    store: BucketStore, tmp_path: Path
) -> None:
    reference = _prepare(LocalStore(tmp_path / "reference"))
    ref = await _closer(reference, MemoryKeyValue(), tmp_path / "ref-scratch").close(
        KEY, compiled_play_song(), START + WIDTH + 5
    )
    layout = _prepare(store)
    scratch = tmp_path / "scratch"
    got = await _closer(layout, MemoryKeyValue(), scratch).close(
        KEY, compiled_play_song(), START + WIDTH + 5
    )
    assert ref is not None and got is not None
    assert got.manifest.events == 120 and got.manifest.duplicates_dropped == 50
    assert _without_times(got.manifest) == _without_times(ref.manifest)
    assert _parts(layout) == _parts(reference)  # deterministic names and bytes
    assert layout.read_manifest(KEY) == got.manifest
    ids = BucketReader(store, WIDTH).read("PlaySong", START, START + WIDTH).column("id")
    assert sorted(ids.to_pylist()) == sorted(f"e{i}" for i in range(120))
    assert layout.list_staging(KEY) == []
    assert store.head(DedupHorizon(layout, 3600).index_key(KEY)) is not None
    leftovers = [p for p in scratch.rglob("*") if p.is_file()] if scratch.exists() else []
    assert leftovers == [], "scratch copies must go when the close ends"


@pytest.mark.parametrize("step", [1, 2, 3, 4, 5, 6, 7])
async def test_a_close_on_an_object_store_killed_after_any_step_resumes_to_the_same_bucket(
    tmp_path: Path, step: int
) -> None:
    class Crash(BaseException):
        pass

    def crash(at: int) -> None:
        if at == step:
            raise Crash(at)

    store = MemoryStore()
    layout = _prepare(store)
    kv = MemoryKeyValue()
    with pytest.raises(Crash):
        await _closer(layout, kv, tmp_path / "s1", crash).close(
            KEY, compiled_play_song(), START + 15
        )
    resumed = await _closer(layout, kv, tmp_path / "s2").close(
        KEY, compiled_play_song(), START + 15
    )
    assert resumed is not None and resumed.manifest.events == 120
    assert [f.rows for f in resumed.manifest.files] == [40, 40, 40]
    assert layout.read_manifest(KEY) == resumed.manifest
    assert layout.list_staging(KEY) == []


class _LostAnswerStore(MemoryStore):
    """The first create of ``_SUCCESS`` is stored, but its answer is lost and the
    retried request is refused as "exists": what an S3 client retry can meet."""

    def __init__(self) -> None:
        super().__init__()
        self.creates = 0

    def create(self, key: str, data: bytes) -> str:
        self.creates += 1
        super().create(key, data)
        if key.endswith("_SUCCESS") and self.creates == 1:
            raise ObjectExistsError(f"{key} already exists")
        return "1"


async def test_a_create_that_finds_its_own_earlier_manifest_counts_as_written(
    tmp_path: Path,
) -> None:
    store = _LostAnswerStore()
    layout = _prepare(store)
    result = await _closer(layout, MemoryKeyValue(), tmp_path).close(
        KEY, compiled_play_song(), START + 15
    )
    assert result is not None and result.manifest.events == 120
    assert layout.read_manifest(KEY) == result.manifest
    assert layout.list_staging(KEY) == [], "the close went on to its last step"


async def test_a_manifest_someone_else_created_stands_and_is_never_overwritten(
    store: BucketStore, tmp_path: Path
) -> None:
    other = _prepare(LocalStore(tmp_path / "other"))
    await _closer(other, MemoryKeyValue(), tmp_path / "o").close(
        KEY, compiled_play_song(), START + 15
    )
    theirs = other.store.get(other.manifest_key(KEY)).replace(b'"events": 120', b'"events": 119')
    layout = _prepare(store)

    def someone_else_closes(step: int) -> None:
        # Between this closer's parts (step 4) and its manifest (step 5), another
        # closer's _SUCCESS appears, with other content.
        if step == 4:
            store.create(layout.manifest_key(KEY), theirs)

    result = await _closer(layout, MemoryKeyValue(), tmp_path / "s", someone_else_closes).close(
        KEY, compiled_play_song(), START + 15
    )
    assert result is not None
    assert store.get(layout.manifest_key(KEY)) == theirs, "their manifest was not overwritten"
    assert result.manifest.events == 119, "this closer went on with the manifest that stands"
    assert encode_manifest(result.manifest) == theirs


async def test_ids_a_closed_bucket_holds_are_dropped_on_an_object_store(
    store: BucketStore, tmp_path: Path
) -> None:
    layout = Layout(store, WIDTH)
    prev = BucketKey("PlaySong", START - WIDTH)
    stage(layout, prev, ["x1", "x2"], 1, "w1")
    closer = _closer(layout, MemoryKeyValue(), tmp_path / "scratch")
    await closer.close(prev, compiled_play_song(), START + WIDTH)
    stage(layout, KEY, ["x2", "x3"], 3, "w1")
    result = await closer.close(KEY, compiled_play_song(), START + 2 * WIDTH)
    assert result is not None
    m = result.manifest
    assert (m.events, m.duplicates_dropped_previous_bucket) == (1, 1)

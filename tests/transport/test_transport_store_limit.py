"""Streams against a small NATS store limit (``max_file_store``): types register, a full
store refuses publishes without dropping what it holds.

nats-server reserves a stream's ``max_bytes`` against the store limit when the stream is
created (10047 once the reservations would pass it), so Courier's streams have no cap of
their own by default and share the limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from courier.cli.admin import apply_schemas
from courier.errors import ProvisioningError, StreamFullError
from courier.model import INVALID_TYPE
from courier.settings import Settings, load_settings
from courier.transport import (
    Transport,
    provision_base,
    provision_type,
    stream_name,
    verify_type,
)
from courier.transport.server import EmbeddedNats, default_store_limit_bytes

MIB = 1024 * 1024
STORE_LIMIT_BYTES = 16 * MIB


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A real nats-server whose streams may use 16 MiB together."""
    with EmbeddedNats(tmp_path / "nats", port=0, max_store_bytes=STORE_LIMIT_BYTES) as server:
        yield server


def _settings(tmp_path: Path, server: EmbeddedNats, **nats: object) -> Settings:
    return load_settings(data_dir=tmp_path / "data", nats_url=server.url, nats=nats)


def _write_schemas(directory: Path, n: int) -> list[str]:
    directory.mkdir()
    names = [f"Type{i:03d}" for i in range(n)]
    for name in names:
        schema = {"type": "record", "name": name, "fields": [{"name": "x", "type": "long"}]}
        (directory / f"{name}.avsc").write_text(json.dumps(schema))
    return names


async def test_a_hundred_event_types_register_on_a_small_store(tmp_path, small_store):
    settings = _settings(tmp_path, small_store)
    names = _write_schemas(tmp_path / "schemas", 100)

    results = await apply_schemas(settings, tmp_path / "schemas", force=False)

    assert sorted(r.name for r in results) == names
    transport = await Transport.connect(small_store.url)
    try:
        for name in [INVALID_TYPE, *names]:
            info = await transport.js.stream_info(stream_name(name))
            assert info.config.max_bytes == -1  # nothing reserved: the streams share the store
    finally:
        await transport.close()


async def test_a_stream_cap_the_store_cannot_reserve_is_refused_with_what_to_do(
    tmp_path, small_store
):
    settings = _settings(tmp_path, small_store, stream_max_bytes=10 * MIB)
    transport = await Transport.connect(small_store.url)
    try:
        await provision_base(transport, settings)  # the close stream reserves 10 MiB
        with pytest.raises(ProvisioningError) as refused:
            await provision_type(transport, settings, "Foo")
    finally:
        await transport.close()
    message = str(refused.value)
    assert "stream of Foo cannot be created" in message
    assert "nats.stream_max_bytes" in message and "courier provision" in message


async def test_a_stream_cap_larger_than_the_store_is_refused_at_the_first_stream(
    tmp_path, small_store
):
    # Issue 10: the old default cap (10 GiB) on a machine with 10 GB free (limit 7.5 GB).
    settings = _settings(tmp_path, small_store, stream_max_bytes=2 * STORE_LIMIT_BYTES)
    transport = await Transport.connect(small_store.url)
    try:
        with pytest.raises(
            ProvisioningError, match=r"close-notification stream \S+ cannot be created"
        ):
            await provision_base(transport, settings)
    finally:
        await transport.close()


async def test_a_full_store_refuses_publishes_and_keeps_every_stored_message(tmp_path, small_store):
    settings = _settings(tmp_path, small_store)
    transport = await Transport.connect(small_store.url)
    try:
        await provision_base(transport, settings)
        for name in ("Big", "Other"):
            await provision_type(transport, settings, name)
        body = b"x" * (256 * 1024)
        stored = 0
        with pytest.raises(StreamFullError):
            for i in range(STORE_LIMIT_BYTES // len(body) + 2):
                await transport.publish_events(
                    "Big", body, msg_id=f"m{i}", headers={}, timeout_secs=5.0
                )
                stored += 1
        # Every type is refused while the store is full, and nothing stored was dropped.
        with pytest.raises(StreamFullError, match="nothing stored is dropped"):
            await transport.publish_events(
                "Other", b"small", msg_id="o", headers={}, timeout_secs=5.0
            )
        state = (await transport.js.stream_info(stream_name("Big"))).state
        assert (state.first_seq, state.messages) == (1, stored)
        assert stored * len(body) >= STORE_LIMIT_BYTES * 0.9
    finally:
        await transport.close()


def test_the_default_store_limit_counts_what_the_store_already_holds(tmp_path, monkeypatch):
    free_bytes = 1000 * MIB
    monkeypatch.setattr(
        "courier.transport.server.shutil.disk_usage",
        lambda path: SimpleNamespace(free=free_bytes),
    )
    store = tmp_path / "jetstream"
    assert default_store_limit_bytes(store) == 750 * MIB
    store.mkdir()
    (store / "blk").write_bytes(b"\1" * (8 * MIB))
    free_bytes -= 8 * MIB
    # nats-server's own default (75 % of free) would now be 744 MiB, and shrink again at
    # every restart; counting what the store holds keeps the limit where it was.
    assert default_store_limit_bytes(store) == 750 * MIB


async def test_provisioning_lifts_the_cap_of_streams_made_with_one(tmp_path, small_store):
    transport = await Transport.connect(small_store.url)
    try:
        capped = _settings(tmp_path, small_store, stream_max_bytes=1 * MIB)
        await provision_base(transport, capped)
        await provision_type(transport, capped, "Foo")
        with pytest.raises(ProvisioningError, match="max_bytes: live 1048576, wanted -1"):
            await verify_type(transport, _settings(tmp_path, small_store), "Foo")

        await provision_type(transport, _settings(tmp_path, small_store), "Foo")

        await verify_type(transport, _settings(tmp_path, small_store), "Foo")
    finally:
        await transport.close()

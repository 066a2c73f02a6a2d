"""The embedded server's JetStream domain and leaf node settings (``courier nats`` / ``up``):
a delivery region and a DC started from settings alone link up and source."""

from __future__ import annotations

from pathlib import Path

import pytest

from courier.errors import ConfigError
from courier.model import INVALID_TYPE
from courier.schema import Registry
from courier.settings import load_settings
from courier.transport import (
    SCHEMAS_KV,
    Transport,
    free_port,
    provision_base,
    provision_type,
    stream_name,
)
from courier.transport.server import LeafConfig, embedded_nats, render_config
from courier.transport.sources import link_answers
from courier_testing import eventually, example_definitions
from multidc.dc_testing import TYPE, publish


def _config(leaf: LeafConfig | None) -> str:
    return render_config(
        host="127.0.0.1",
        port=4222,
        store_dir=Path("/s"),
        max_payload_bytes=1,
        max_store_bytes=2,
        leaf=leaf,
    )


def test_without_dc_settings_the_config_has_no_domain_and_no_leaf_nodes() -> None:
    assert "domain" not in _config(None) and "leafnodes" not in _config(LeafConfig())


def test_the_hub_isolates_leaf_interest_and_does_not_advertise() -> None:
    text = _config(LeafConfig("central", "0.0.0.0:7422", None))
    assert "  domain: central\n}" in text
    assert 'listen: "0.0.0.0:7422"' in text
    assert "no_advertise: true" in text and "isolate_leafnode_interest: true" in text


def test_bad_leaf_settings_are_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="leaf_listen must be host:port"):
        load_settings(data_dir=tmp_path, nats={"leaf_listen": "7422"})
    with pytest.raises(ConfigError, match="leaf_remote_url must be a nats-leaf://"):
        load_settings(data_dir=tmp_path, nats={"leaf_remote_url": 'hub:7422"'})
    with pytest.raises(ConfigError, match="not a JetStream domain name"):
        load_settings(data_dir=tmp_path, nats={"domain": "dc A"})


async def test_a_dc_and_a_delivery_region_from_settings_link_and_source(tmp_path: Path) -> None:
    leaf_port = free_port()
    central_settings = load_settings(
        data_dir=tmp_path / "central",
        nats={"port": free_port(), "domain": "central", "leaf_listen": f"127.0.0.1:{leaf_port}"},
        dc={"domains": ["dcA"]},
    )
    dc_settings = load_settings(
        data_dir=tmp_path / "dcA",
        nats={
            "port": free_port(),
            "domain": "dcA",
            "leaf_remote_url": f"nats-leaf://127.0.0.1:{leaf_port}",
        },
    )
    central, dc = embedded_nats(central_settings), embedded_nats(dc_settings)
    central.start()
    try:
        dc.start()
        hub = await Transport.connect(central.url)
        try:
            await eventually(lambda: link_answers(hub, "dcA"), what="dcA's JetStream via the hub")
            conn = await Transport.connect(dc.url)
            try:
                for ty in (INVALID_TYPE, TYPE):
                    await provision_type(conn, dc_settings, ty)
            finally:
                await conn.close()
            await provision_base(hub, central_settings)
            await Registry(await hub.key_value(SCHEMAS_KV)).apply(example_definitions(TYPE))
            await provision_type(hub, central_settings, TYPE)
            await publish(dc.url, 3, "leaf")

            async def sourced() -> bool:
                info = await hub.js.stream_info(stream_name(TYPE))
                return info.state.messages == 3

            await eventually(sourced, what="central sourced dcA's 3 messages")
        finally:
            await hub.close()
    finally:
        dc.stop()
        central.stop()

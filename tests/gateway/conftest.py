"""Fixtures of the gateway tests: an app over MemorySink and an in-memory registry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from courier.examples import SCHEMAS_DIR
from courier.gateway import MemorySink, create_app
from courier.schema import Registry, load_definitions
from courier.settings import Settings, load_settings
from courier.transport.kv import MemoryKeyValue


@pytest.fixture
def gateway_settings(tmp_path: Path) -> Callable[..., Settings]:
    def _make(auth: dict[str, Any] | None = None, **gateway: Any) -> Settings:
        return load_settings(data_dir=tmp_path / "data", gateway=gateway, auth=auth)

    return _make


@pytest.fixture
async def registry() -> Registry:
    reg = Registry(MemoryKeyValue())
    await reg.apply(load_definitions(SCHEMAS_DIR))
    return reg


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


class Gateway:
    """A running app and a client talking to it in-process."""

    def __init__(self, app: Starlette, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    async def post(
        self, body: bytes, content_type: str = "application/json", **headers: str
    ) -> httpx.Response:
        hdrs = {"Content-Type": content_type}
        hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
        return await self.client.post("/v1/events", content=body, headers=hdrs)


@pytest.fixture
async def start_gateway(
    gateway_settings: Callable[..., Settings], sink: MemorySink, registry: Registry
) -> AsyncIterator[Callable[..., Any]]:
    """Start the app (lifespan included) with gateway setting overrides."""
    stack: list[Any] = []

    async def _start(**gateway: Any) -> Gateway:
        app = create_app(gateway_settings(**gateway), sink=sink, registry=registry)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        stack.append(lifespan)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        stack.append(client)
        return Gateway(app, client)

    yield _start
    for resource in reversed(stack):
        await resource.__aexit__(None, None, None)


@pytest.fixture
async def gateway(start_gateway: Callable[..., Any]) -> Gateway:
    gw: Gateway = await start_gateway()
    return gw

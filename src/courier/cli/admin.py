"""Admin commands that talk to NATS once: schema apply/list, provision."""

from __future__ import annotations

import asyncio
from pathlib import Path

from courier.model import INVALID_TYPE
from courier.schema import ApplyResult, Registry, TypeRecord, load_definitions
from courier.settings import Settings
from courier.transport import SCHEMAS_KV, Transport, provision_base, provision_type


async def _connect(settings: Settings) -> Transport:
    return await Transport.connect(
        settings.resolved_nats_url,
        name="courier-admin",
        request_timeout_secs=settings.nats.request_timeout_secs,
    )


async def apply_schemas(settings: Settings, directory: Path, *, force: bool) -> list[ApplyResult]:
    """Validate and store the schemas of ``directory``, then provision their streams."""
    definitions = load_definitions(directory)
    transport = await _connect(settings)
    try:
        await provision_base(transport, settings)
        registry = Registry(await transport.key_value(SCHEMAS_KV))
        results = await registry.apply(definitions, force=force)
        for name in [INVALID_TYPE, *(d.name for d in definitions)]:
            await provision_type(transport, settings, name)
        return results
    finally:
        await transport.close()


async def list_schemas(settings: Settings) -> list[TypeRecord]:
    transport = await _connect(settings)
    try:
        await provision_base(transport, settings)
        return await Registry(await transport.key_value(SCHEMAS_KV)).list()
    finally:
        await transport.close()


async def provision_all(settings: Settings) -> list[str]:
    """Create or update the streams and consumers of every registered type."""
    transport = await _connect(settings)
    try:
        await provision_base(transport, settings)
        names = [r.name for r in await Registry(await transport.key_value(SCHEMAS_KV)).list()]
        for name in [INVALID_TYPE, *names]:
            await provision_type(transport, settings, name)
        return [INVALID_TYPE, *names]
    finally:
        await transport.close()


def sync(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)

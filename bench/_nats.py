"""A bare embedded NATS with Courier's resources provisioned (for component benchmarks)."""

from __future__ import annotations

from pathlib import Path

from bench._stack import schema_dir
from courier.model import INVALID_TYPE
from courier.schema import Registry, load_definitions
from courier.settings import Settings, load_settings
from courier.transport import SCHEMAS_KV, Transport, provision_base, provision_type


def bench_settings(root: Path, nats_url: str, **overrides: object) -> Settings:
    return load_settings(data_dir=root / "data", nats_url=nats_url, **overrides)


async def provision(settings: Settings, root: Path, types: int) -> list[str]:
    """Register the load generator's types and create their streams and consumers."""
    transport = await Transport.connect(settings.resolved_nats_url)
    try:
        await provision_base(transport, settings)
        defs = load_definitions(schema_dir(root, types, 10))
        await Registry(await transport.key_value(SCHEMAS_KV)).apply(defs)
        for name in [INVALID_TYPE, *(d.name for d in defs)]:
            await provision_type(transport, settings, name)
        return [d.name for d in defs]
    finally:
        await transport.close()

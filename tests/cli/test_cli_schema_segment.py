"""``courier schema apply --segment`` registers the shipped types of Segment calls."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from courier.gateway.segment import CALL_TYPES
from courier.schema import Registry
from courier.settings import settings_env
from courier.transport import SCHEMAS_KV, Transport


def _courier(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "courier.cli.main", *args],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_schema_apply_segment_registers_every_segment_type_and_needs_something_to_apply(
    make_settings,
):
    settings = make_settings()
    done = await asyncio.to_thread(_courier, settings, "schema", "apply", "--segment")
    assert done.returncode == 0, done.stderr
    assert "SegmentIdentify: created (version 1)" in done.stdout
    again = await asyncio.to_thread(_courier, settings, "schema", "apply", "--segment")
    assert again.returncode == 0 and "created" not in again.stdout  # idempotent
    transport = await Transport.connect(settings.resolved_nats_url)
    try:
        names = [r.name for r in await Registry(await transport.key_value(SCHEMAS_KV)).list()]
    finally:
        await transport.close()
    assert sorted(names) == sorted(CALL_TYPES.values())
    nothing = await asyncio.to_thread(_courier, settings, "schema", "apply")
    assert nothing.returncode == 2 and "--segment" in nothing.stderr

"""The writer's memory stays bounded: memory pressure flushes before the age trigger."""

from __future__ import annotations

import asyncio

from courier.writer import Writer


async def test_buffered_bytes_stay_under_the_bound_and_pressure_forces_flushes(
    make_settings, pipeline
):
    for m in range(40):
        ids = [f"m{m}-{i}" for i in range(100)]
        payloads = [{"track_id": "x" * 200, "ms_played": i} for i in range(100)]
        await pipeline.publish("PlaySong", payloads, ids)
    bound = 400_000
    settings = make_settings(
        writer={
            **pipeline.settings.writer.model_dump(),
            "max_buffer_bytes": bound,
            "fetch_max_bytes": 100_000,
            "flush_interval_secs": 600.0,
        },
    )
    writer = Writer(settings, pipeline.transport, pipeline.registry)
    task = asyncio.create_task(writer.run(pipeline.stop_event))
    peak = 0
    for _ in range(100):
        peak = max(peak, writer._buffered_bytes())
        if (await pipeline.transport.progress("PlaySong")).ack_floor_seq >= 30:
            break
        await asyncio.sleep(0.05)
    pipeline.stop_event.set()
    await task
    assert writer.metrics.flushes.labels("PlaySong")._value.get() >= 2
    # One fetch may land on top of a full buffer before the pressure flush runs.
    assert peak <= bound + 150_000, peak

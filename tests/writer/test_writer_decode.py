"""The writer decodes many messages per pyarrow call (CPU per row, issue 13) and
still stages every row of every message it acks exactly once."""

from __future__ import annotations

import pyarrow.parquet as pq

import courier.writer.service as service


async def test_a_buffer_decodes_its_messages_in_one_call_and_stages_every_row_once(
    pipeline, monkeypatch
):
    calls: list[int] = []
    real = service.decode_batch

    def counting(compiled, deliveries):  # type: ignore[no-untyped-def]
        calls.append(len(deliveries))
        return real(compiled, deliveries)

    monkeypatch.setattr(service, "decode_batch", counting)
    ids = [[f"m{m}-{i}" for i in range(50)] for m in range(20)]
    for batch in ids:
        await pipeline.publish("PlaySong", [{"track_id": i, "ms_played": 1} for i in batch], batch)
    pipeline.start_writer()
    await pipeline.wait_until(
        lambda: (
            sum(
                pq.read_metadata(f).num_rows
                for f in (pipeline.settings.data_dir / "_staging").rglob("*.parquet")
            )
            >= 1000
        ),
        30,
    )
    staged = [
        i
        for f in (pipeline.settings.data_dir / "_staging").rglob("*.parquet")
        for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()
    ]
    assert sorted(staged) == sorted(i for batch in ids for i in batch)
    assert sum(calls) == 20 and max(calls) > 1, calls

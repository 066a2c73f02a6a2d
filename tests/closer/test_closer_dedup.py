"""Pure pieces of the close: fixed-size chunking and the conform step."""

from __future__ import annotations

import pyarrow as pa

from courier.closer.dedup import conform, exact_chunks


def test_chunks_have_exactly_the_asked_rows_whatever_the_input_batching():
    for sizes in ([120], [7, 50, 3, 60], [1] * 120):
        batches, start = [], 0
        for n in sizes:
            batches.append(pa.record_batch({"a": list(range(start, start + n))}))
            start += n
        chunks = list(exact_chunks(iter(batches), 40))
        assert [c.num_rows for c in chunks] == [40, 40, 40]
        assert [v for c in chunks for v in c.column("a").to_pylist()] == list(range(120))


def test_the_last_chunk_may_be_short_and_empty_input_gives_nothing():
    assert [c.num_rows for c in exact_chunks(iter([pa.record_batch({"a": [1, 2, 3]})]), 2)] == [
        2,
        1,
    ]
    assert list(exact_chunks(iter([]), 2)) == []


def test_conform_orders_columns_casts_and_fills_missing_ones_with_nulls():
    schema = pa.schema([("id", pa.string()), ("n", pa.int64()), ("added", pa.bool_())])
    t = pa.table({"n": pa.array([1, 2], pa.int32()), "id": ["a", "b"]})
    out = conform(t, schema)
    assert out.schema == schema
    assert out.column("added").to_pylist() == [None, None]

"""The ledger and the verifier: what the fault suite relies on to call an event lost."""

from __future__ import annotations

import json

import pyarrow as pa
from bench.loadgen import BatchFactory, IdSource, Ledger, id_key, keys_of, read_ledger


def test_ids_from_the_load_generator_are_unique_uuids_whose_keys_round_trip(tmp_path):
    ids, keys = IdSource().take(1000)
    assert len(set(ids)) == 1000
    assert keys == b"".join(id_key(i) for i in ids)
    assert keys_of(pa.array(ids)).tobytes() == keys


def test_non_uuid_ids_get_the_same_key_in_the_ledger_and_in_the_buckets():
    ids = ["tail:inode-7:offset-120", "0193A7C2-0000-7000-8000-000000000001", "x"]
    assert keys_of(pa.array(ids)).tobytes() == b"".join(id_key(i) for i in ids)


def test_a_ledger_keeps_every_writers_acked_ids_and_ignores_a_torn_last_record(tmp_path):
    ids, keys = IdSource().take(10)
    with Ledger(tmp_path, "a") as a, Ledger(tmp_path, "b") as b:
        a.acked_keys(keys[:80])
        b.acked(ids[5:])
        b.unknown_keys(keys[:16])
    with open(tmp_path / "acked-a.ids", "ab") as f:
        f.write(b"\x01\x02\x03")
    contents = read_ledger(tmp_path)
    assert len(contents.acked) == 10 and contents.acked_repeats == 0
    assert len(contents.unknown) == 1


def test_pre_encoded_batches_carry_fresh_ids_whose_ledger_keys_match_the_body():
    factory = BatchFactory(types=3, batch_events=50, seed=7)
    seen: set[str] = set()
    for _ in range(40):
        batch = factory.next()
        doc = json.loads(batch.body)
        ids = [e["id"] for e in doc["events"]]
        assert batch.count == len(ids) == 50
        assert {e["type"] for e in doc["events"]} == {batch.event_type}
        assert all(e["time"] == doc["sent_at"] for e in doc["events"])
        assert batch.keys == b"".join(id_key(i) for i in ids)
        assert batch.ids == ids
        seen.update(ids)
    assert len(seen) == 40 * 50

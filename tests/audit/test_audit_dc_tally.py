"""Exact completeness per DC: the tally of DC sequences the delivery region holds."""

from __future__ import annotations

from courier.audit.dc import SourceTally, file_messages
from courier.transport import StoredMessage
from courier.transport.sources import SOURCE_HEADER, source_key

TYPE = "PlaySong"


def tally(seqs: list[int], expect_from: int | None = 1) -> SourceTally:
    t = SourceTally(expect_from=expect_from)
    for i, s in enumerate(seqs):
        t.add(s, float(i))
    return t


def test_a_contiguous_run_of_sequences_is_exact():
    t = tally([1, 2, 3, 4])
    assert (t.stored, t.highest_seq, t.missing, t.repeated) == (4, 4, 0, 0)


def test_a_skipped_sequence_is_missing_and_a_second_copy_is_repeated():
    t = tally([1, 2, 4, 5, 5, 3, 3])
    # 3 came late (fills its gap), then a second 3 and a second 5 are repeats.
    assert (t.missing, t.repeated, t.repeated_sample) == (0, 2, [5, 3])
    t = tally([1, 2, 6, 7])
    assert (t.missing, t.gaps) == (3, [[3, 5]])


def test_the_first_sequences_are_missing_when_the_stream_never_dropped_any():
    assert tally([3, 4]).gaps == [[1, 2]]
    # Once the delivery region's stream expired messages, the tally starts where it reads.
    assert tally([3, 4], expect_from=None).missing == 0


def test_a_late_sequence_splits_its_gap():
    t = tally([1, 10, 5])
    assert t.gaps == [[2, 4], [6, 9]] and t.repeated == 0 and t.highest_seq == 10


def test_messages_are_filed_under_their_dc_by_the_source_header():
    tallies = {"dcA": SourceTally(expect_from=1), "dcB": SourceTally(expect_from=1)}
    by_key = {source_key(TYPE, d): d for d in tallies}
    sent = [("dcA", 1), ("dcB", 1), ("dcA", 2), ("dcA", 2), ("dcB", 2), ("dcA", 4), (None, 0)]
    messages = [
        StoredMessage(
            i + 1,
            float(i),
            {SOURCE_HEADER: f"{source_key(TYPE, dc)} {seq} > > courier.events.{TYPE}"}
            if dc
            else {},
            b"",
        )
        for i, (dc, seq) in enumerate(sent)
    ]
    assert file_messages(tallies, by_key, messages) == 1  # the one without a source
    a, b = tallies["dcA"], tallies["dcB"]
    assert (a.stored, a.highest_seq, a.gaps, a.repeated) == (4, 4, [[3, 3]], 1)
    assert (b.stored, b.missing, b.repeated) == (2, 0, 0)
    assert a.newest_at == 5.0

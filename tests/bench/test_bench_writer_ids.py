"""bench.writer's fill reuses 64 message templates with a fresh id prefix per round."""

from __future__ import annotations

import pytest
from bench.writer import fresh_prefix


@pytest.mark.parametrize("group", ["8005", "80eb", "bfff", "a000"])
def test_no_round_repeats_another_rounds_ids_or_the_templates(group: str) -> None:
    # The old prefix wrote the round over the random bits: with random bits 0x005, round 5
    # repeated round 0's ids, and the bench reported 6,400 lost and 6,400 duplicated.
    prefix = f"0193a7c2-1234-7abc-{group}-"
    rounds = [fresh_prefix(prefix, r) for r in range(1, 1 << 14)]
    assert len(set(rounds)) == len(rounds)
    assert prefix not in rounds
    assert all(p[:19] == prefix[:19] and p[19] in "89ab" and len(p) == 24 for p in rounds)


def test_more_rounds_than_the_bits_hold_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"out of 1\.\.16383"):
        fresh_prefix("0193a7c2-1234-7abc-8005-", 1 << 14)

"""Segment's real clients (pip and npm) against `courier up`, the gateway killed twice.

The quick version of ``python -m bench.segment_clients`` (which sends 20,000 calls per
client): every call a client was told was delivered is in a closed bucket of its type
exactly once, the invalid ones in ``_invalid``, and no client dropped a batch.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from bench.segment_clients import ensure_node_client, prove, running_stack, throughput

from courier.model import INVALID_TYPE

EVENTS = 2_000


@pytest.mark.slow
def test_segment_clients_deliver_every_call_exactly_once_across_two_gateway_kills(
    tmp_path: Path,
) -> None:
    # No skip without npm: the proof needs the real client (ensure_node_client says how).
    node_dir = ensure_node_client()
    with running_stack(tmp_path, width_secs=2) as stack:
        proof = prove(stack, node_dir, EVENTS, rate=400, kill_every_events=500)
        # The bench's throughput line keeps working (no figure asserted).
        rates = throughput(stack, 2_000, rounds=2)
    assert rates["events_per_s_v1_events"] > 0 and rates["events_per_s_v1_batch"] > 0
    assert proof.problems() == []
    assert proof.kills == 2
    assert len(proof.delivered["python"]) == len(proof.delivered["node"]) == EVENTS
    # Calls 6, 56, 106, ... carry a string where SongPlayed wants a long: 2 % of each client's.
    assert len(proof.stored[INVALID_TYPE]) == 2 * EVENTS // 50
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert not leftovers, "the stack or a client was left running"

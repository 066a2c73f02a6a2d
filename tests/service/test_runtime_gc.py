"""A serving process freezes what it built at start-up out of the collector and collects
its young generation less often (``settle_gc``; the gateway's CPU, issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys

from courier.service.runtime import GC_YOUNG_THRESHOLD


def test_settle_gc_freezes_the_start_up_heap_and_raises_the_young_threshold() -> None:
    # In a child process: freezing the test process's heap would change later tests.
    code = (
        "import gc, json\n"
        "from courier.service.runtime import settle_gc\n"
        "before = (gc.get_threshold(), gc.get_freeze_count())\n"
        "settle_gc()\n"
        "print(json.dumps([before, [gc.get_threshold(), gc.get_freeze_count()]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    (threshold_before, frozen_before), (threshold, frozen) = json.loads(out.stdout)
    assert threshold_before[0] == 700 and frozen_before == 0
    assert threshold[0] == GC_YOUNG_THRESHOLD
    assert frozen > 10_000  # modules, settings, schema code: all out of later collections

"""Output of every benchmark: a readable table, then ONE JSON object as the last line."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def emit(title: str, summary: Mapping[str, object]) -> None:
    """Print ``summary`` as a table under ``title``, then as the final JSON line."""
    width = max((len(k) for k in summary), default=0)
    print(f"== {title}")
    for k, v in summary.items():
        print(f"  {k:<{width}}  {_fmt(v)}")
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
    sys.stdout.flush()
    print(json.dumps(clean, separators=(",", ":")), flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))
    return float(s[k])

"""One scenario from start to verdict.

1. start NATS (one node, or three for the cluster scenario), register the load
   generator's types, start gateway, writer and closer (data root on a fresh
   tmpfs for the storage scenario);
2. run the load generator (open loop, ledger of every acked id) in a thread
   and inject the scenario's faults meanwhile;
3. once the load is over and every component is healthy, wait until every
   bucket up to the last ack is closed;
4. stop every process, verify the closed buckets against the ledger (lost,
   duplicated, unexpected), unmount and remove the temp dirs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from bench.faults.harness import Harness
from bench.faults.scenarios import SCENARIOS, Faults, Options
from bench.loadgen import LoadConfig, LoadResult, run_load, verify

TMPFS_BYTES = 512 * 1024 * 1024
CLOSE_TIMEOUT_SECS = 120.0


def _client_view(result: LoadResult) -> dict[str, int]:
    errors = result.errors
    no_retry_after = sum(v for k, v in errors.items() if "without Retry-After" in k)
    http = {k: v for k, v in errors.items() if k.isdigit()}
    return {
        "http_503": http.get("503", 0),
        "http_429": http.get("429", 0),
        "http_other": sum(v for k, v in http.items() if k not in ("503", "429")),
        "conn_errors": sum(
            v for k, v in errors.items() if not k.isdigit() and "Retry-After" not in k
        ),
        "missing_retry_after": no_retry_after,
        "retries": result.retries,
        "unknown_events": result.unknown_events,
        "rejected_events": result.rejected_events,
    }


def _mount_tmpfs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )


def _unmount(path: Path) -> None:
    for _ in range(50):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(path)], check=False)


def run_scenario(
    name: str, opts: Options, *, workdir: Path | None = None, keep: bool = False
) -> dict[str, object]:
    """Run one scenario; the result row (see ``bench.faults`` for the fields).

    ``keep`` leaves the temp dir (logs, ledger, NATS store) behind for a post-mortem.
    """
    scenario = SCENARIOS[name]
    root = Path(tempfile.mkdtemp(prefix=f"courier-faults-{name}-", dir=workdir))
    mount = root / "mnt" if scenario.tmpfs else None
    mounted = False
    faults = Faults()
    row: dict[str, object] = {"scenario": name}
    try:
        if mount is not None:
            try:
                _mount_tmpfs(mount)
            except (OSError, subprocess.CalledProcessError) as exc:
                detail = getattr(exc, "stderr", "") or str(exc)
                return {**row, "ok": None, "skipped": f"cannot mount a tmpfs: {detail.strip()}"}
            mounted = True
        h = Harness(
            root,
            data_dir=(mount / "data") if mount else None,
            mount=mount,
            nodes=scenario.nodes,
        )
        try:
            h.start()
            cfg = LoadConfig(
                url=h.url,
                duration_secs=scenario.load_secs(opts)
                if scenario.load_secs
                else opts.duration_secs,
                rate_events_per_s=opts.rate_events_per_s * scenario.rate_share,
                types=h.types,
                concurrency=16,
                duplicate_rate=0.01,
                ledger_dir=h.ledger_dir,
                retry_budget_secs=120.0,
            )
            box: list[LoadResult] = []
            load = threading.Thread(
                target=lambda: box.append(run_load(cfg)), name="load", daemon=True
            )
            t0 = time.time()
            load.start()
            faults = scenario.run(h, replace(opts))
            load.join()
            result = box[0] if box else LoadResult()
            last_ack = time.time()
            if h.probe(CLOSE_TIMEOUT_SECS) is None:
                faults.problems.append("the gateway did not accept events after the faults")
            all_closed = h.wait_all_closed(time.time(), CLOSE_TIMEOUT_SECS)
            drain = time.time() - last_ack
            skewed, dups_removed, dups_other_buckets = h.bucket_totals()
            seq_gaps = h.stream_seq_gaps()
        finally:
            h.close()
        report = verify(h.ledger_dir, h.data_dir, bucket_width_secs=h.width, event_types=h.names)
    finally:
        if mounted and mount is not None:
            _unmount(mount)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    client = _client_view(result)
    if faults.expect_503 and not client["http_503"]:
        faults.problems.append("the client never saw a 503 during the outage")
    if client["missing_retry_after"]:
        faults.problems.append("some 429/503 answers had no Retry-After")
    if faults.expect_no_skew and skewed:
        faults.problems.append(f"{skewed} events arrived for an already-closed bucket")
    if not all_closed:
        faults.problems.append("not every bucket closed in time")
    if client["rejected_events"]:
        # The load is valid: a rejection means the gateway judged it with a wrong registry.
        faults.problems.append(f"{client['rejected_events']} valid events were rejected")
    ok = report.ok and result.acked_events > 0 and not faults.problems
    return {
        **row,
        "ok": ok,
        **report.ledger_row(),
        "faults": faults.injected,
        "recovery_max_secs": max(faults.recovery_secs) if faults.recovery_secs else None,
        "recovery_secs": faults.recovery_secs,
        **client,
        "skewed": skewed,
        "duplicates_removed": dups_removed,
        "duplicates_removed_other_buckets": dups_other_buckets,
        "open_buckets": report.open_buckets,
        "load_secs": round(last_ack - t0, 1),
        "drain_secs": round(drain, 1),
        "events_per_s": round(result.events_per_s, 1),
        "notes": {**faults.notes, "stream_seq_gaps": seq_gaps},
        "problems": faults.problems,
    }

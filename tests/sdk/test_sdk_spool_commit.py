"""Acknowledging a batch never makes ``send`` wait for the ledger's fsyncs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from courier.sdk import spool as spool_module
from courier.sdk.spool import Spool


def test_appends_go_on_while_the_ack_ledger_is_being_written(tmp_path, monkeypatch):
    ledger_started, release_ledger = threading.Event(), threading.Event()
    write_ledger = spool_module.write_bytes_atomic

    def slow_ledger_write(path: Path, data: bytes) -> None:
        ledger_started.set()
        assert release_ledger.wait(10), "the test never released the ledger write"
        write_ledger(path, data)

    monkeypatch.setattr(spool_module, "write_bytes_atomic", slow_ledger_write)
    spool = Spool(tmp_path, fsync="never")
    try:
        first = spool.append(b'{"n": 1}')
        committer = threading.Thread(target=spool.commit, args=(first, 0))
        committer.start()
        assert ledger_started.wait(10), "commit never started writing the ledger"

        appended: list[int] = []
        appender = threading.Thread(target=lambda: appended.append(spool.append(b'{"n": 2}')))
        appender.start()
        appender.join(5)
        stalled = appender.is_alive()
        release_ledger.set()
        committer.join(10)
        appender.join(10)
        assert not stalled, "append waited for the ack ledger's fsync"
        assert appended == [first + 1]
        assert spool.acked_through == first
    finally:
        release_ledger.set()
        spool.close()
    assert Spool(tmp_path, fsync="never").acked_through == first


@pytest.mark.parametrize("order", [(2, 1), (1, 2)])
def test_concurrent_commits_never_move_the_ledger_back(tmp_path, order):
    spool = Spool(tmp_path, fsync="never")
    ids = [spool.append(b"{}") for _ in range(2)]
    threads = [threading.Thread(target=spool.commit, args=(ids[i - 1], 0)) for i in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert spool.acked_through == ids[-1]
    spool.close()
    reopened = Spool(tmp_path, fsync="never")
    assert reopened.acked_through == ids[-1]
    reopened.close()

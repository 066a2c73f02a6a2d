"""What an application pays to import the SDK: no pyarrow, duckdb or numpy (STYLE)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_HEAVY = ("pyarrow", "duckdb", "numpy")


@pytest.mark.parametrize("statement", ["import courier.sdk", "from courier import Producer"])
def test_importing_the_sdk_does_not_load_pyarrow_duckdb_or_numpy(statement: str) -> None:
    # A fresh interpreter: this test process has long since imported all of them.
    probe = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    heavy = sorted(m for m in _HEAVY if m in loaded)
    assert not heavy, (
        f"`{statement}` loaded {heavy}; keep those imports inside the modules using them"
    )


def test_storage_names_still_import_from_the_package() -> None:
    from courier.storage import BucketReader, Layout, write_parquet_atomic

    assert BucketReader.__module__ == "courier.storage.reader"
    assert Layout.__module__ == "courier.storage.layout"
    assert write_parquet_atomic.__module__ == "courier.storage.atomic"

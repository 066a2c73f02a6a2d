"""The load generator, its ledger of acknowledged ids, and the verifier.

Python API (also used by the fault suite)::

    from bench.loadgen import LoadConfig, run_load, Ledger, read_ledger, verify
    result = run_load(LoadConfig(url="http://127.0.0.1:8080", duration_secs=10,
                                 ledger_dir=Path("ledger")))
    report = verify(Path("ledger"), Path("data"))
    assert report.ok, report.table()

CLI: ``python -m bench.loadgen run --help`` and ``python -m bench.loadgen verify --help``.
"""

from bench.loadgen.driver import LoadConfig, LoadResult, run_load, run_load_async
from bench.loadgen.events import BatchFactory, IdSource, type_names, write_clone_schemas
from bench.loadgen.ledger import Ledger, LedgerContents, id_key, read_ledger
from bench.loadgen.verify import VerifyReport, keys_of, verify

__all__ = [
    "BatchFactory",
    "IdSource",
    "Ledger",
    "LedgerContents",
    "LoadConfig",
    "LoadResult",
    "VerifyReport",
    "id_key",
    "keys_of",
    "read_ledger",
    "run_load",
    "run_load_async",
    "type_names",
    "verify",
    "write_clone_schemas",
]

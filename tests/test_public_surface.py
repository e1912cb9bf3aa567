"""Each package's public surface is pinned: modules without a leading underscore, and
the names the package exports.  Making something public is a deliberate edit here;
everything else is internal (``_name.py``) and free to change."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PUBLIC_MODULES = {
    "bigtable_lite": {
        "auth", "credentials", "errors", "guard", "reflection", "remote", "server", "status",
        "v1", "validation", "wire",
    },
    "percolator": {
        "cli", "clock", "commands", "errors", "failpoints", "layout", "node", "oracle",
        "oracle_client", "oracle_service", "records", "v1",
        # metrics: their definitions, types and endpoint, for the workers' own
        "metric_types", "metrics", "metrics_endpoint",
        # the notification verbs' values and the log's bucket function, for the observers
        "notifications",
    },
    # the package root is the observers' API; citations is the example app, commands the CLI's
    "observers": {"citations", "commands", "errors"},
}

PERCOLATOR_EXPORTS = {
    "COMMITTED", "LOCKED", "ROLLED_BACK", "Client", "CommitConflict", "CommitUndetermined",
    "LockWaitTimeout", "OracleError", "PercolatorError", "Transaction", "TransactionError",
    "TxnStatus",
    # garbage collection: the error of a collected snapshot, what a pass did, the state
    "SnapshotTooOld", "GcPass", "GcStatus",
}


@pytest.mark.parametrize("package", sorted(PUBLIC_MODULES))
def test_public_modules_are_the_pinned_ones(package: str) -> None:
    path = importlib.import_module(package).__path__
    public = {m.name for m in pkgutil.iter_modules(path)
              if not m.name.startswith("_")}
    assert public == PUBLIC_MODULES[package]


def test_percolator_exports_exactly_its_api() -> None:
    import percolator

    assert set(percolator.__all__) == PERCOLATOR_EXPORTS
    for name in PERCOLATOR_EXPORTS:
        assert hasattr(percolator, name)

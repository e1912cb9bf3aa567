"""percolator: snapshot-isolation transactions and incremental processing over bigtable_lite.

>>> with Client.embedded("/tmp/data") as client:
...     with client.transaction() as txn:
...         txn.set("row", "col", "value")
"""

from ._backend import COMMITTED, LOCKED, ROLLED_BACK, TxnStatus
from ._client import Client
from ._gc_table import GcPass, GcStatus
from ._transaction import Transaction
from .errors import (
    CommitConflict,
    CommitUndetermined,
    LockWaitTimeout,
    OracleError,
    PercolatorError,
    SnapshotTooOld,
    TransactionError,
)

__all__ = [
    "COMMITTED", "LOCKED", "ROLLED_BACK", "Client", "CommitConflict", "CommitUndetermined",
    "GcPass", "GcStatus", "LockWaitTimeout", "OracleError", "PercolatorError",
    "SnapshotTooOld", "Transaction", "TransactionError", "TxnStatus",
]

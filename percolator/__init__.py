"""percolator: snapshot-isolation transactions and incremental processing over bigtable_lite.

>>> with Client.embedded("/tmp/data") as client:
...     with client.transaction() as txn:
...         txn.set("row", "col", "value")
"""

from ._backend import COMMITTED, LOCKED, ROLLED_BACK, TxnStatus
from ._client import Client
from ._transaction import Transaction
from .errors import (
    CommitConflict,
    CommitUndetermined,
    LockWaitTimeout,
    OracleError,
    PercolatorError,
    TransactionError,
)

__all__ = [
    "COMMITTED", "LOCKED", "ROLLED_BACK", "Client", "CommitConflict", "CommitUndetermined",
    "LockWaitTimeout", "OracleError", "PercolatorError", "Transaction", "TransactionError",
    "TxnStatus",
]

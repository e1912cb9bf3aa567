"""percolator: snapshot-isolation transactions and incremental processing over bigtable_lite.

>>> with Client.embedded("/tmp/data") as client:
...     with client.transaction() as txn:
...         txn.set("row", "col", "value")
"""

from .client import Client
from .errors import (
    CommitConflict,
    CommitUndetermined,
    LockWaitTimeout,
    OracleError,
    PercolatorError,
    TransactionError,
)
from .transaction import Transaction

__all__ = [
    "Client", "CommitConflict", "CommitUndetermined", "LockWaitTimeout", "OracleError",
    "PercolatorError", "Transaction", "TransactionError",
]

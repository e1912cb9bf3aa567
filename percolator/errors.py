"""Errors of the transaction layer.

::

    PercolatorError
    ├── TransactionError            misuse of a transaction, or it could not commit
    │   ├── CommitConflict          write-write conflict: retry in a new transaction
    │   ├── CommitUndetermined      the primary's commit reply was lost: outcome unknown
    │   ├── LockWaitTimeout         a lock stayed unresolved past the read's deadline
    │   ├── SnapshotTooOld          start_ts is below the GC safe point: restart the transaction
    │   ├── TransactionNotFound     (Transactions service) no open transaction has this id
    │   ├── TransactionBusy         (Transactions service) another call on it ran too long
    │   ├── TooManyTransactions     (Transactions service) the node holds its most open
    │   ├── TooManyClients          the caller's principal holds GC leases for its most clients
    │   └── WrongTransactionState   (Transactions service) the call does not fit its state
    └── OracleError                 the timestamp oracle failed
        ├── OracleExhausted         no timestamps left below 2**64 (percolator.oracle)
        └── OracleConflict          two oracles on one store (percolator.oracle)

Storage failures arrive as ``bigtable_lite.errors.StorageError`` (e.g. ``Unavailable``).
Caller mistakes (bad rows, columns, values) raise ``ValueError``/``TypeError`` before any I/O.
"""

from __future__ import annotations


class PercolatorError(Exception):
    """Base of every error raised by the transaction layer."""


class TransactionError(PercolatorError):
    """A transaction was misused (e.g. used after commit) or could not commit."""


class CommitConflict(TransactionError):
    """Another transaction wrote (or holds a live lock on) a cell this one writes.

    Nothing of this transaction is visible; re-run it in a fresh transaction
    (``Client.run`` does so).

    ``row``, ``column``: the cell in the way (where known); ``reason``: one of
    ``percolator._backend.Conflict``'s (``write_conflict``, ``locked``, ``rolled_back``),
    with the conflicting write's ``commit_ts`` or the live lock's ``lock_start_ts``.
    """

    def __init__(self, message: str, *, row: bytes = b"", column: bytes = b"",
                 reason: str = "", commit_ts: int = 0, lock_start_ts: int = 0) -> None:
        super().__init__(message)
        self.row = row
        self.column = column
        self.reason = reason
        self.commit_ts = commit_ts
        self.lock_start_ts = lock_start_ts


class CommitUndetermined(TransactionError):
    """The commit of the primary was sent but its outcome could not be learned.

    The transaction may or may not have committed; it is never reported as either.
    """


class LockWaitTimeout(TransactionError):
    """A read met a lock whose owner stayed alive and undecided past the wait limit.

    ``row``, ``column``: the cell; ``lock_start_ts``: its owner's start_ts.
    """

    def __init__(self, message: str, *, row: bytes = b"", column: bytes = b"",
                 lock_start_ts: int = 0) -> None:
        super().__init__(message)
        self.row = row
        self.column = column
        self.lock_start_ts = lock_start_ts


class TransactionNotFound(TransactionError):
    """No open transaction of the Transactions service has this id (never begun, expired,
    rolled back, or forgotten by a node restart)."""


class TransactionBusy(TransactionError):
    """Another call on the same transaction held it longer than a call waits for it."""


class TooManyTransactions(TransactionError):
    """The node holds as many open transactions of the Transactions service as it may."""


class TooManyClients(TransactionError):
    """The caller's principal (its token) holds GC leases for as many clients as it may
    (``percolator._leases.MAX_CLIENTS_PER_PRINCIPAL``): a new client of it gets no
    timestamp until the lease of one of its others passes (a client that ended: one
    lease after its last call).  Retry later."""


class WrongTransactionState(TransactionError):
    """The call does not fit the transaction's state (e.g. a read after its commit)."""


class OracleError(PercolatorError):
    """The timestamp oracle could not hand out timestamps."""


class SnapshotTooOld(TransactionError):
    """The transaction's ``start_ts`` is below the store's GC safe point.

    Versions its snapshot needs may have been collected, so the store refuses to read,
    scan, prewrite or commit at it rather than answer from a partial history.  Nothing
    of this transaction is visible; restart it with a new snapshot (``Client.run``
    does so, as on ``CommitConflict``).
    """

    @classmethod
    def below(cls, start_ts: int, safe_point: int) -> SnapshotTooOld:
        return cls(f"start_ts {start_ts} is below the GC safe point {safe_point}: versions"
                   " it would read may have been collected; restart the transaction with a"
                   " new snapshot")

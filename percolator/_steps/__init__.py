"""The transaction protocol's steps, one module each, run where the data is.

Percolator section 2.2 with TiKV's refinements (lock slot, one-phase commit, lock
resolution by the node); each step is a function over a :class:`StepContext` (the
store, the oracle, the clock that judges lock expiry, the status cache, the observed
columns).  :class:`percolator._local.LocalBackend` calls them in-process: embedded, and
at a node for its clients' commands.  The order a transaction takes them in is chained
in ``percolator._driver``:

    read           snapshot reads at start_ts, settling decided or expired locks met
    prewrite       lock every written cell (no write after start_ts, slot empty)
    commit         commit_ts, the commit point (the primary), secondaries, notifications
    one_phase      prewrite + commit in one atomic write, when everything fits
    rollback       undo a transaction before its commit point
    check_txn_status   a transaction's fate through its primary; expire, seal
    resolve_lock   roll forward or back the locks of decided transactions
    heartbeat      keep a long commit's primary lock alive
    notify         which writes leave notifications, and registering observed columns
"""

from .context import StepContext

__all__ = ["StepContext"]

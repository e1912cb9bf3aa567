"""What every transaction of one client shares: store, oracle, resolver, settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bigtable_lite import Limits, TabletStore

from .clock import Clock
from .commit import CommitService
from .fresh_read import FreshReads
from .heartbeat import LockKeeper
from .oracle import TimestampSource
from .resolve import LockResolver
from .secondaries import SecondaryCommitter


@dataclass(slots=True)
class TxnContext:
    store: TabletStore
    table: bytes
    oracle: TimestampSource
    resolver: LockResolver
    keeper: LockKeeper
    clock: Clock
    limits: Limits
    lock_ttl: float
    lock_wait_timeout: float
    # Runs the commit step (commit_ts, primary, secondaries): in-process or at the node.
    commits: CommitService
    # Takes a timestamp and reads at it (a lazy transaction's first read) at the node; None:
    # in this process, a timestamp from ``oracle`` and then the reads.
    fresh_reads: FreshReads | None
    # The background committer of secondaries, when the commit step hands them off
    # (a remote store without the node's commit command).
    secondaries: SecondaryCommitter | None
    # Whether a column has an observer: writes to it leave a notification.
    is_observed: Callable[[bytes], bool]

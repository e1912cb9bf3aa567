"""What every transaction of one client shares: store, oracle, resolver, settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bigtable_lite import Limits, TabletStore

from .clock import Clock
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
    # Commits secondaries in the background when set (remote clients), inline otherwise.
    secondaries: SecondaryCommitter | None
    # Whether a column has an observer: writes to it leave a notification.
    is_observed: Callable[[bytes], bool]

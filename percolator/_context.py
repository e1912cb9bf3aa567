"""What every transaction of one client shares: its backend, table, clock and settings."""

from __future__ import annotations

from dataclasses import dataclass

from bigtable_lite import Limits

from ._backend import Backend
from ._keeper import LockKeeper
from .clock import Clock

__all__ = ["TxnContext"]


@dataclass(slots=True)
class TxnContext:
    backend: Backend
    table: bytes
    clock: Clock  # paces the waits for live locks (lock expiry is the backend's clock)
    limits: Limits
    keeper: LockKeeper  # heartbeats of two-phase commits' primaries
    one_phase: bool  # commit in one step whenever the transaction fits one
    lock_wait_timeout: float  # seconds a read waits for a live lock before it gives up

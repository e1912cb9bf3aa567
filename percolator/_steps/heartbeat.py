"""Heartbeat: keep the primary lock of a long commit alive (move its expiry).

Locks expire ``ttl`` after they were written, on the clock of the step that wrote them,
so a crashed client blocks nobody for longer than that.  A live commit that takes
longer (many secondaries, a slow store) has its owner call this step, which rewrites
the primary's lock with a later expiry -- by this step's clock, never the caller's,
so a client with a skewed clock can neither shorten nor stretch its locks' lives.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from bigtable_lite import Put, RowMutation, VersionAt

from .. import records
from .._backend import Key
from ..layout import LOCK_SLOT_TS, columns_of
from .check_txn_status import check_primary
from .commit import read_locks

if TYPE_CHECKING:
    from .context import StepContext

__all__ = ["heartbeat"]


def heartbeat(ctx: StepContext, table: bytes, start_ts: int, primary: Key, ttl_ms: int) -> bool:
    """Move the primary lock's expiry to ``ttl_ms`` from now; False if start_ts does not
    hold it (decided: committed, or rolled back by another client)."""
    lock = read_locks(ctx, table, [primary], start_ts).get(primary)
    if lock is None:
        return False
    row, column = primary
    check_primary(lock, row, column)
    slot = columns_of(column).lock
    expires = ctx.clock.now_ms() + ttl_ms
    if expires <= lock.expires_at_ms:
        return True
    old = records.encode_lock(lock)
    new = records.encode_lock(replace(lock, expires_at_ms=expires))
    # Conditional on the very record read: a concurrent refresh or a settle wins.
    m = RowMutation(table, row, (Put(slot, LOCK_SLOT_TS, new),),
                    (VersionAt(slot, LOCK_SLOT_TS, old),))
    return bool(ctx.store.mutate_rows([m])[0].applied) or \
        primary in read_locks(ctx, table, [primary], start_ts)

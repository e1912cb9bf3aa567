"""Check a transaction's status through its primary lock (TiKV's check_txn_status).

The primary cell alone decides a transaction's fate (Percolator 2.2): a write record
carrying its start_ts means committed; a rollback marker at start_ts means rolled
back; its lock in the cell's lock slot means undecided -- and, once the lock's TTL has passed, the
checker rolls it back itself, so a crashed client cannot block others for longer
than its lock TTL.  A primary with none of the three was never locked (or its
records were collected): it is sealed with a rollback marker so a delayed prewrite
of it can never succeed -- unless a write record newer than those the checker saw
appeared meanwhile (see ``mutations.seal_primary``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bigtable_lite import MAX_TS, RowRead, TabletStore, TimeRange

from . import layout, mutations, records
from .records import Lock

COMMITTED = "committed"
ROLLED_BACK = "rolled_back"
LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class TxnStatus:
    state: str  # COMMITTED, ROLLED_BACK or LOCKED
    commit_ts: int = 0
    lock: Lock | None = None

    @property
    def final(self) -> bool:
        return self.state != LOCKED


ROLLED_BACK_STATUS = TxnStatus(ROLLED_BACK)


def read_primary(store: TabletStore, table: bytes, row: bytes, column: bytes,
                 start_ts: int) -> TxnStatus | None:
    """Status as stored now, without side effects; None if the primary has no trace."""
    return _read_primary(store, table, row, column, start_ts)[0]


def _read_primary(store: TabletStore, table: bytes, row: bytes, column: bytes,
                  start_ts: int) -> tuple[TxnStatus | None, int]:
    """read_primary(), and the newest write record's commit_ts at or above start_ts
    (start_ts - 1 if none): what a seal must find unchanged."""
    slot, cells = store.read_rows([  # one snapshot
        RowRead(table, row, (layout.lock_column(column),), (),
                TimeRange(layout.LOCK_SLOT_TS, layout.LOCK_SLOT_TS), 1),
        RowRead(table, row, (layout.write_column(column), layout.rollback_column(column)), (),
                TimeRange(start_ts, MAX_TS), 0)])
    lock = None
    if slot:
        found = records.decode_lock(slot[0].value)
        if found.start_ts == start_ts:  # else another transaction's
            lock = found
    rolled_back = False
    newest_write_ts = start_ts - 1
    for cell in cells:
        if cell.column[:1] == layout.WRITE:
            if records.decode_write(cell.value).start_ts == start_ts:
                return TxnStatus(COMMITTED, cell.ts), cell.ts
            newest_write_ts = max(newest_write_ts, cell.ts)
        else:
            rolled_back = rolled_back or cell.ts == start_ts
    if rolled_back:  # after the writes: a commit record wins over a stray marker
        return ROLLED_BACK_STATUS, newest_write_ts
    return (TxnStatus(LOCKED, lock=lock) if lock is not None else None), newest_write_ts


def check_txn_status(store: TabletStore, table: bytes, row: bytes, column: bytes,
                     start_ts: int, now_ms: int, *, roll_back_expired: bool = True) -> TxnStatus:
    """The transaction's status; rolls back an expired primary lock, seals a missing one."""
    for _ in range(16):  # each retry follows a concurrent change of the primary
        status, newest_write_ts = _read_primary(store, table, row, column, start_ts)
        if status is not None:
            if status.final or not roll_back_expired:
                return status
            assert status.lock is not None
            if now_ms < status.lock.expires_at_ms:
                return status
            m = mutations.rollback_primary(table, row, column, start_ts)
        else:
            m = mutations.seal_primary(table, row, column, start_ts, newest_write_ts)
        if store.mutate_rows([m])[0].applied:
            return ROLLED_BACK_STATUS
    raise RuntimeError(f"status of transaction {start_ts} kept changing under the checker")

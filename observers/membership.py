"""Membership: which workers are alive, and which notifications each one takes.

Work finding is hash partitioning among live workers (as Apache Fluo does), not
Percolator's random scanning with jumps.  Why:

* Two workers never pile onto the same cell in the steady state, so there are no
  wasted observer runs and conflicts; random scanners collide more as the backlog
  shrinks, exactly when latency matters, and need a lock service to notice it.
* The split is even by construction (a hash of the row), and testable: with two
  workers each takes about half.
* Correctness never depends on it: the ack makes any overlap harmless (one of two
  racing observer commits conflicts, or the later one skips).

Each worker heartbeats a lease (``<table>.workers``, layout in observers.layout) every
``heartbeat`` seconds, valid for ``ttl`` seconds, listing the columns it observes.
For a column, the live workers observing it, sorted by id, split its rows:
worker i takes row r iff crc32(r) mod n == i.  A worker that stops cleanly deletes
its lease and the others take its share at their next heartbeat; a crashed one's
share waits at most ``ttl`` for its lease to expire.  While views differ (a worker
joining or leaving), two workers may briefly both take a cell, never neither
except for a dead worker's share until its lease expires.
"""

from __future__ import annotations

import os
import socket
import threading
import zlib
from collections.abc import Iterable

from bigtable_lite import DeleteVersion, Put, RowMutation, ScanRequest, TabletStore
from percolator.clock import Clock

from . import layout
from .layout import Lease
from .stats import WorkerStats

DEFAULT_LEASE_TTL = 5.0
DEFAULT_HEARTBEAT = 1.0
FORGET_AFTER = 3600.0  # seconds a gone worker's row stays visible to `percolator status`


def shard(row: bytes, n: int) -> int:
    """Which of n workers takes ``row``: stable across processes and runs."""
    return zlib.crc32(row) % n


def read_leases(store: TabletStore, table: bytes) -> list[Lease]:
    """Every lease in the workers table, expired ones included."""
    out: list[Lease] = []
    for row in store.scan(ScanRequest(layout.workers_table(table),
                                      columns=(layout.LEASE_COLUMN,), max_versions=1)):
        for cell in row.cells:
            try:
                out.append(layout.decode_lease(row.row.decode("utf-8", "replace"), cell.value))
            except (ValueError, KeyError):
                continue  # a malformed lease claims nothing
    return out


def forget_gone_workers(store: TabletStore, table: bytes, now_ms: int,
                        after: float = FORGET_AFTER) -> int:
    """Delete rows of workers neither alive nor reporting for ``after`` seconds; return how many."""
    wtable = layout.workers_table(table)
    cutoff = now_ms - int(after * 1000)
    gone: list[RowMutation] = []
    for row in store.scan(ScanRequest(wtable, max_versions=1)):
        last = 0
        for cell in row.cells:
            try:
                if cell.column == layout.LEASE_COLUMN:
                    last = max(last, layout.decode_lease("", cell.value).expires_ms)
                elif cell.column == layout.STATS_COLUMN:
                    last = max(last, WorkerStats.from_json(cell.value).updated_ms)
            except (ValueError, KeyError, TypeError):
                continue
        if last < cutoff:
            gone.append(RowMutation(wtable, row.row, tuple(
                DeleteVersion(cell.column, cell.ts) for cell in row.cells)))
    if gone:
        store.mutate_rows(gone)
    return len(gone)


class Membership:
    """One worker's lease and its view of the others (thread-safe)."""

    def __init__(self, store: TabletStore, table: bytes, worker_id: str,
                 columns: Iterable[bytes], clock: Clock, *, ttl: float = DEFAULT_LEASE_TTL,
                 threads: int = 0) -> None:
        if not ttl > 0:
            raise ValueError("lease ttl must be positive")
        self.store = store
        self.table = table
        self.worker_id = worker_id
        self.columns = frozenset(columns)
        self.clock = clock
        self.ttl = ttl
        self.threads = threads
        self._view: dict[bytes, tuple[str, ...]] = {c: (worker_id,) for c in self.columns}
        self._lock = threading.Lock()

    def heartbeat(self) -> None:
        """Renew this worker's lease, then re-read everyone's (one write, one scan)."""
        lease = Lease(self.worker_id, self.clock.now_ms() + int(self.ttl * 1000), self.columns,
                      socket.gethostname(), os.getpid(), self.threads)
        self.store.mutate_rows([RowMutation(
            layout.workers_table(self.table), self.worker_id.encode(),
            (Put(layout.LEASE_COLUMN, 0, layout.encode_lease(lease)),))])
        self.refresh()

    def refresh(self) -> None:
        now = self.clock.now_ms()
        live = [lease for lease in read_leases(self.store, self.table)
                if lease.expires_ms > now]
        view = {}
        for column in self.columns:
            ids = {lease.worker for lease in live if column in lease.columns}
            ids.add(self.worker_id)
            view[column] = tuple(sorted(ids))
        with self._lock:
            self._view = view

    def leave(self) -> None:
        """Delete the lease: the others take this worker's share at their next heartbeat."""
        self.store.mutate_rows([RowMutation(layout.workers_table(self.table),
                                            self.worker_id.encode(),
                                            (DeleteVersion(layout.LEASE_COLUMN, 0),))])

    def owns(self, row: bytes, column: bytes) -> bool:
        members = self._view.get(column)
        if members is None or len(members) == 1:
            return True
        return members[shard(row, len(members))] == self.worker_id

    def members(self, column: bytes) -> tuple[str, ...]:
        return self._view.get(column, (self.worker_id,))

"""Backend: the one seam under the transaction code, and the values that cross it.

A :class:`~percolator.Transaction` buffers writes and decides nothing about storage;
every protocol step runs behind a :class:`Backend`:

* :class:`~percolator._local.LocalBackend` runs the steps (``percolator._steps``) in
  this process, over a ``LocalStore`` and an ``Oracle``: ``Client.embedded(path)``, and
  the node itself, which executes its clients' commands with one;
* :class:`~percolator._node_client.NodeClient` sends each call as a command of a batch
  to a node (``percolator.v1.Node``), whose service hands it to that node's
  ``LocalBackend``.

So the transaction code never asks which one it has, and a step has one
implementation, run in-process or at the node alike.  Lock expiry is judged by the
backend's clock (the node's, for a remote client): a lock carries its TTL from the
client, and the backend that writes it turns that into an expiry on its own clock.

Expected protocol outcomes (a write conflict, a live lock, a rolled-back primary) are
typed fields of the results, never exceptions; an exception means the call failed
(``Unavailable`` after a request was sent: its outcome is unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from bigtable_lite import Limits, TabletStore

from ._gc_table import GcPass
from ._notify.api import NotificationsBackend
from ._snapshots import ActiveSnapshots
from .records import Lock

__all__ = [
    "Backend", "CellWrite", "CommitOutcome", "CommitRequest", "Conflict", "Key",
    "LockedCell", "OnePhaseRequest", "Part", "PrewriteRequest", "ReadResult", "ScanChunk",
    "ScanRequest", "TxnStatus", "COMMITTED", "LOCKED", "ROLLED_BACK",
]

Key = tuple[bytes, bytes]  # (row, column) of a user cell


COMMITTED = "committed"
ROLLED_BACK = "rolled_back"
LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class TxnStatus:
    """A transaction's fate as its primary cell records it (Percolator 2.2)."""

    state: str  # COMMITTED, ROLLED_BACK or LOCKED
    commit_ts: int = 0
    lock: Lock | None = None  # LOCKED: the primary's lock

    @property
    def final(self) -> bool:
        return self.state != LOCKED


ROLLED_BACK_STATUS = TxnStatus(ROLLED_BACK)


class CellWrite(NamedTuple):
    """One buffered write: put (``value``) or delete (``value`` None).  ``op`` is
    ``records.PUT`` or ``records.DELETE``.  A NamedTuple: built per write on the hot path."""

    column: bytes
    op: bytes
    value: bytes | None


Part = tuple[bytes, Sequence[CellWrite]]
"""A row and some of its writes: what one row mutation of a prewrite locks."""


@dataclass(frozen=True, slots=True)
class LockedCell:
    """A cell held by a live transaction's lock (its owner is alive: wait, then read again)."""

    row: bytes
    column: bytes
    start_ts: int  # the owner's
    primary_row: bytes
    primary_column: bytes


class ReadResult(NamedTuple):
    """Values of the cells read at ``start_ts`` (None: absent or deleted); the cells still
    locked by live transactions are in ``locked``, not in ``values``."""

    start_ts: int
    values: dict[Key, bytes | None]
    locked: list[LockedCell]


class ScanRequest(NamedTuple):
    table: bytes
    start_ts: int
    start_row: bytes | None
    end_row: bytes | None
    columns: tuple[bytes, ...] | None  # None: every column
    include_system: bool
    limit: int  # rows per chunk


class ScanChunk(NamedTuple):
    """Live cells of up to ``limit`` rows, ascending; ``resume`` is where the next chunk
    starts (None: the range is done).  ``locked`` cells are not in ``cells``: read them;
    nor are ``unread`` ones, past the chunk's byte budget (its last row larger than a
    reply, or cells whose locks the scan settled and had no room left to read): read
    them too."""

    cells: list[tuple[bytes, bytes, bytes]]
    locked: list[LockedCell]
    resume: bytes | None
    unread: Sequence[Key] = ()


@dataclass(frozen=True, slots=True)
class Conflict:
    """Why a prewrite or a one-phase commit wrote nothing.

    ``reason``: ``WRITE_CONFLICT`` (a write committed at ``commit_ts`` after our start),
    ``LOCKED`` (a live transaction started at ``lock_start_ts`` holds the cell) or
    ``ROLLED_BACK`` (another client rolled this transaction back: its lock TTL passed).
    """

    WRITE_CONFLICT = "write_conflict"
    LOCKED = "locked"
    ROLLED_BACK = "rolled_back"

    reason: str
    row: bytes
    column: bytes
    commit_ts: int = 0
    lock_start_ts: int = 0


class PrewriteRequest(NamedTuple):
    """Lock ``parts`` for transaction ``start_ts`` whose primary cell is ``primary``.

    The locks expire ``ttl_ms`` after the backend wrote them, by its clock (heartbeats
    move that).  If ``parts`` holds the primary, it must be ``parts[0]``'s first cell.
    """

    table: bytes
    start_ts: int
    primary: Key
    ttl_ms: int
    parts: Sequence[Part]


class CommitRequest(NamedTuple):
    """Commit transaction ``start_ts``: its primary (the commit point), then ``keys``
    (other cells it locked, in this step when they fit; the rest are settled by
    :meth:`Backend.resolve`).  ``weak``: cells to notify without a write."""

    table: bytes
    start_ts: int
    primary: Key
    keys: Sequence[Key]
    weak: Sequence[Key] = ()


class CommitOutcome(NamedTuple):
    """``committed`` False: the primary's lock was gone (another client rolled it back)."""

    committed: bool
    commit_ts: int = 0


class OnePhaseRequest(NamedTuple):
    """Prewrite and commit in one step: every cell checked, then committed at one
    commit_ts in one atomic write, or nothing written."""

    table: bytes
    start_ts: int
    parts: Sequence[Part]
    weak: Sequence[Key] = ()


class Backend(Protocol):
    """The protocol steps, wherever they run.  Thread-safe.

    A step given a transaction's ``primary`` (commit, rollback, heartbeat,
    check_txn_status) raises ``InvalidArgument`` if the lock of that transaction it finds
    there is not its primary's: acting on a secondary as if it were the primary would
    tear the transaction.

    Garbage collection: read, scan, prewrite, commit, one-phase commit, rollback and
    check_txn_status at a start_ts below the backend's GC safe point raise
    ``SnapshotTooOld`` before touching anything.  ``snapshots`` is where this process's
    transactions register their start_ts so the safe point spares them.
    """

    limits: Limits
    snapshots: ActiveSnapshots

    @property
    def notifications(self) -> NotificationsBackend:
        """The observers' verbs: registration, the feed of notifications, parking."""
        ...

    @property
    def store(self) -> TabletStore:
        """The raw tablet store behind the backend (the observers layer's side tables)."""
        ...

    def timestamps(self, count: int = 1) -> int:
        """The first of ``count`` fresh contiguous timestamps (linearizable)."""
        ...

    def read(self, table: bytes, start_ts: int | None, keys: Sequence[Key]) -> ReadResult:
        """Snapshot values at ``start_ts``; None: at a fresh timestamp taken by this step.

        Locks of decided or expired transactions met on the way are settled first.
        """
        ...

    def scan(self, request: ScanRequest) -> ScanChunk:
        ...

    def prewrite(self, request: PrewriteRequest) -> Conflict | None:
        """Lock every cell of the request, or none of them (a conflict: None locked by
        this call; a live lock in the way is reported, not waited for)."""
        ...

    def commit(self, request: CommitRequest) -> CommitOutcome:
        """commit_ts, then the commit point, then the given secondaries, with the
        notifications of observed columns, from the prewritten locks (never values
        from the request).  ``Unavailable``: the outcome is unknown."""
        ...

    def commit_one_phase(self, request: OnePhaseRequest) -> CommitOutcome | Conflict:
        ...

    def resolve(self, table: bytes, start_ts: int, keys: Sequence[Key]) -> int:
        """Settle the cells locked by transaction ``start_ts`` through its primary's
        status (roll forward or back); returns how many are still locked (owner alive)."""
        ...

    def rollback(self, table: bytes, start_ts: int, primary: Key, keys: Sequence[Key]) -> None:
        """Undo a transaction that did not reach its commit point: its primary (a rollback
        marker, so it can never commit) and ``keys``, each iff still its lock."""
        ...

    def heartbeat(self, table: bytes, start_ts: int, primary: Key, ttl_ms: int) -> bool:
        """Move the primary lock's expiry to ``ttl_ms`` from now; False if it is not held."""
        ...

    def check_txn_status(self, table: bytes, primary: Key, start_ts: int) -> TxnStatus:
        """The transaction's fate (rolling it back if its lock expired, sealing a primary
        never locked)."""
        ...

    def register_observed(self, table: bytes, columns: Sequence[bytes]) -> int:
        """Make ``columns`` observed: every commit after the returned timestamp leaves
        notifications for them."""
        ...

    def observed_columns(self, table: bytes) -> frozenset[bytes]:
        ...

    def collect_garbage(self) -> GcPass:
        """One garbage-collection pass of the backend's store, now."""
        ...

    def now_ms(self) -> int:
        """The backend's clock (the node's, for a remote client), which judges lock expiry:
        what a lock's ``expires_at_ms`` is compared with."""
        ...

    def close(self) -> None:
        ...


def keys_of(parts: Sequence[Part]) -> list[Key]:
    return [(row, cell.column) for row, cells in parts for cell in cells]

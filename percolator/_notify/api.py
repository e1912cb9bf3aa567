"""The notification verbs, and the values that cross them, in-process or over gRPC.

Workers and operators use only these verbs (never raw writes to the log or the other
system tables), so every change to that state is validated where it is kept:
:class:`~percolator._notify.local.Notifications` runs them in-process (embedded, and
at a node); :class:`~percolator._notify.client.RemoteNotifications` sends them to a
node's ``percolator.v1.Notifications`` service.  Both implement
:class:`NotificationsBackend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "ColumnInfo", "Cursors", "DoneRef", "LogRow", "MemberInfo", "NotificationsBackend",
    "ParkedCell", "PullReply", "PullRequest", "Registered",
]

Buckets = dict[bytes, frozenset[int]]  # column -> buckets


@dataclass(frozen=True, slots=True)
class Cursors:
    """Where a worker's reading of each bucket it holds stands: every log row of the
    bucket at or below ``overrides.get((column, bucket), base)`` was delivered."""

    base: int = 0
    overrides: dict[tuple[bytes, int], int] = field(default_factory=dict)

    def of(self, column: bytes, bucket: int) -> int:
        return self.overrides.get((column, bucket), self.base)


@dataclass(frozen=True, slots=True)
class DoneRef:
    """Entries handled (delete them): data rows of one log row."""

    log_row: bytes
    rows: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class LogRow:
    """One log row as stored: its key and its (data row, entry record) cells."""

    key: bytes
    cells: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class PullRequest:
    """A worker's turn: renews its lease, hands back what it handled and what it released,
    and asks for up to ``room`` entries of the buckets it owns, waiting up to ``wait_ms``
    for some.  ``held``: the buckets it believes it owns (its claim after a node restart;
    a bucket owned but not held is read from its start).  ``stats``: its counters as
    JSON, when they changed."""

    worker: str
    columns: tuple[bytes, ...]
    lease_ms: int
    held: Buckets = field(default_factory=dict)
    released: Buckets = field(default_factory=dict)
    done: tuple[DoneRef, ...] = ()
    cursors: Cursors = field(default_factory=Cursors)
    room: int = 0
    wait_ms: int = 0
    member_index: int = -1  # the index it had (its claim after a node restart)
    stats: bytes = b""


@dataclass(frozen=True, slots=True)
class PullReply:
    """The worker's buckets now (``owned``; ``revoking``: release these), its member index,
    the entries read and the cursors after them; ``more``: entries were left for lack of
    room."""

    owned: Buckets
    revoking: Buckets
    member_index: int
    rows: tuple[LogRow, ...]
    cursors: Cursors
    more: bool = False


@dataclass(frozen=True, slots=True)
class Registered:
    """The answer to a registration: the column is observed by commits after ``at``."""

    at: int
    new: bool


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """An observed column (or one with entries left), for status and idle checks."""

    column: bytes
    registered_at: int  # 0: not observed (entries left after unregistering)
    partition_prefix: bytes
    backfill_pending: bool
    backfill_done: int
    backfill_estimated: int
    pending: int  # entries in the log (counted up to a cap)
    workers: tuple[str, ...]  # live workers observing it
    damaged: str = ""  # why its registration record did not decode ("" : it did)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A worker as the node knows it: live (lease) and last reported counters."""

    worker: str
    alive: bool
    member_index: int
    columns: tuple[bytes, ...]
    owned: int  # buckets
    stats: bytes  # JSON as last reported (b"" if none)


@dataclass(frozen=True, slots=True)
class ParkedCell:
    """Entries of one cell set aside after its observer kept failing, with the note."""

    row: bytes
    column: bytes
    entries: tuple[tuple[int, bytes], ...]  # (change_ts, entry record)
    note: bytes  # JSON


class NotificationsBackend(Protocol):
    """The verbs (thread-safe).  ``table`` is the Percolator table."""

    def register(self, table: bytes, column: bytes, partition_prefix: bytes = b"",
                 backfill: bool = True) -> Registered:
        ...

    def unregister(self, table: bytes, column: bytes) -> tuple[int, int]:
        """(the timestamp after which commits no longer notify it, entries still pending)."""
        ...

    def columns(self, table: bytes) -> list[ColumnInfo]:
        ...

    def pull(self, table: bytes, request: PullRequest) -> PullReply:
        ...

    def leave(self, table: bytes, worker: str, done: Sequence[DoneRef], stats: bytes) -> None:
        """A worker stops: its last handled entries, its final counters; its buckets go."""
        ...

    def done(self, table: bytes, refs: Sequence[DoneRef]) -> None:
        """Delete exactly these handled entries."""
        ...

    def pending(self, table: bytes, columns: Sequence[bytes], cap: int = 1) -> int:
        """Entries of ``columns`` in the log, from a fresh look, counted up to ``cap``
        (0 exactly when there are none); a backfill still running counts as one."""
        ...

    def park(self, table: bytes, worker: str, refs: Sequence[DoneRef], note: bytes) -> int:
        """Move those entries to the parking table with ``note``; how many moved."""
        ...

    def parked(self, table: bytes, limit: int = 0) -> list[ParkedCell]:
        ...

    def replay(self, table: bytes, cells: Sequence[tuple[bytes, bytes]] | None = None) -> int:
        """Put parked entries back in the log (all, or those cells); cells moved."""
        ...

    def members(self, table: bytes) -> list[MemberInfo]:
        ...

    def compact(self, table: bytes) -> None:
        """Drop deleted entries of the log from disk."""
        ...

    def wait_ready(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until the node can be reached; whether it
        can.  After a failed call, a caller waits here instead of sleeping a back-off, so
        it calls again as soon as a restarted node takes calls."""
        ...

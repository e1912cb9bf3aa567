"""One-phase commit: a whole transaction committed by one step, its caller's one hop.

The step chains ``prewrite`` and ``commit`` where the data is, so a remote client
pays one round trip for its commit instead of two; a transaction that only notifies
(no writes) needs no check at all.

:class:`CommitLatches` is the reader's side of a commit that writes without locks (the
one-write form, TiKV's 1PC, where commit_ts is taken under the rows' locks and the
write records land in one WriteBatch): a reader at T waits for the latched rows it
reads, after taking T and before reading.  A commit latches its rows before it takes
commit_ts and releases them after its write, so a reader at T > commit_ts -- which
took T after commit_ts was taken -- reads after the write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bigtable_lite import StorageError, Unavailable

from .._backend import (
    CommitOutcome,
    CommitRequest,
    Conflict,
    OnePhaseRequest,
    PrewriteRequest,
    keys_of,
)
from .batches import mutate_in_calls
from .commit import commit
from .notify import notifications
from .prewrite import prewrite
from .rollback import rollback

if TYPE_CHECKING:
    from .context import StepContext

log = logging.getLogger(__name__)

__all__ = ["CommitLatches", "LOCK_TTL_MS", "commit_one_phase"]

LOCK_TTL_MS = 3_000
"""The TTL of the locks a one-phase commit holds between its prewrite and its commit
(both in this step: only a crash between them leaves them to expire)."""


class CommitLatches:
    """Rows of one-phase commits between taking commit_ts and their write (thread-safe)."""

    def __init__(self) -> None:
        self._held: dict[tuple[bytes, bytes], int] = {}
        self._cond = threading.Condition()

    def hold(self, table: bytes, rows: Iterable[bytes]) -> list[tuple[bytes, bytes]]:
        keys = [(table, row) for row in set(rows)]
        with self._cond:
            for key in keys:
                self._held[key] = self._held.get(key, 0) + 1
        return keys

    def release(self, keys: list[tuple[bytes, bytes]]) -> None:
        with self._cond:
            for key in keys:
                n = self._held[key] - 1
                if n:
                    self._held[key] = n
                else:
                    del self._held[key]
            self._cond.notify_all()

    def wait_rows(self, table: bytes, rows: Iterable[bytes], timeout: float = 60.0) -> None:
        """Return once none of ``rows`` is latched (at once, and lock-free, when none is);
        Unavailable after ``timeout`` (never read past a commit in progress)."""
        if not self._held:
            return
        rows = list(rows)
        with self._cond:
            if not self._cond.wait_for(
                    lambda: not any((table, r) in self._held for r in rows), timeout):
                raise Unavailable("timed out waiting for a commit in progress on the rows read")

    def wait_range(self, table: bytes, start: bytes | None, end: bytes | None,
                   timeout: float = 60.0) -> None:
        """Return once no row of ``table`` in [start, end) is latched."""
        if not self._held:
            return

        def clear() -> bool:
            return not any(t == table and (start is None or r >= start)
                           and (end is None or r < end) for t, r in self._held)

        with self._cond:
            if not self._cond.wait_for(clear, timeout):
                raise Unavailable("timed out waiting for a commit in progress in the range read")


def commit_one_phase(ctx: StepContext, request: OnePhaseRequest) -> CommitOutcome | Conflict:
    """Commit a transaction in one step (the caller's one hop), or report its conflict.

    A transaction that only notifies (no writes) needs no check: its notifications are
    written at a fresh commit_ts.  Otherwise its first cell is the primary: prewrite,
    then the commit step, chained here.
    """
    table, start_ts, parts, weak = request
    if not parts:
        commit_ts = ctx.oracle.get_timestamp()
        notes = notifications(table, frozenset(), (), commit_ts, weak)  # after commit_ts
        if notes:
            mutate_in_calls(ctx.store, ctx.limits, notes)
        return CommitOutcome(True, commit_ts)
    primary = (parts[0][0], parts[0][1][0].column)
    conflict = prewrite(ctx, PrewriteRequest(table, start_ts, primary, LOCK_TTL_MS, parts))
    if conflict is not None:
        return conflict
    keys = keys_of(parts)
    try:
        return commit(ctx, [CommitRequest(table, start_ts, primary, keys, weak)])[0]
    except Exception:
        # The commit step failed (e.g. the oracle refused commit_ts): undo the locks now
        # instead of leaving them to block readers for LOCK_TTL_MS.  A no-op if the commit
        # point was passed: rollback leaves a committed primary alone.
        try:
            rollback(ctx, table, start_ts, primary, keys)
        except StorageError as exc:
            log.warning("rollback of transaction %d after a failed commit incomplete (%s);"
                        " its locks expire after %d ms", start_ts, exc, LOCK_TTL_MS)
        raise

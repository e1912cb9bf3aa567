"""Processing: the per-cell protocol that makes observer effects exactly-once.

For a cell (row, column) with entries E1..Ek of the notification log (each says the cell
changed at ``change_ts`` Ci, committed: the node writes an entry only in the write that
commits the change), in two steps, each callable on its own so tests can stop between
them:

1. :func:`run_observer` -- begin the observer transaction O.  Its start_ts S exceeds
   every Ci, because it is taken after the entries were read, which was after their
   changes committed, so O sees every change it is asked about.
   ack = O.get_system(row, b"ack:"+column).  If max(Ci) > ack: run the observer in O,
   set ack = S, commit O.  Otherwise an earlier observer transaction already saw these
   changes (a re-delivery after a crash, a backfill entry of a change a live entry
   covered, entries coalesced into an earlier run): skip.
2. :func:`finish` -- hand exactly these entries back as done (the node deletes exactly
   them, never a range, so an entry written meanwhile survives).

Why exactly-once: two observer commits for one change Ci both read an ack below Ci
and both wrote the ack cell, so under snapshot isolation their lifetimes cannot
overlap (write-write conflict); the later one then starts after the earlier one's
commit and reads ack = S_earlier > Ci, so it skips.  Why at-least-once: an entry is
done only after an O with S > Ci committed (ours now, or the one whose S is the ack).
A crash between O's commit and step 2 leaves the entries, whose re-delivery is a skip.

Several cells may share one observer transaction (:func:`process_cells`, for
observers with ``max_batch > 1``; cells of several columns when their observers share
a batch group): every cell the acks do not cover is run and acknowledged in the same
O.  The argument above holds per cell, since each run of a cell writes that cell's ack.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from percolator import Client
from percolator.failpoints import hit

from . import _layout as layout
from ._notifications import PendingCell, done_refs
from ._registry import Observer

__all__ = ["CellResult", "MalformedNotification", "Outcome", "finish", "process_cell",
           "process_cells", "run_observer", "run_observer_batch"]


class Outcome(enum.Enum):
    PROCESSED = "processed"  # the observer ran and its transaction committed
    SKIPPED = "skipped"      # already covered by an earlier observer commit (ack)


class MalformedNotification(ValueError):
    """An entry's record does not decode; it is parked at once, never dropped or run."""


@dataclass(frozen=True, slots=True)
class CellResult:
    outcome: Outcome
    start_ts: int = 0          # of the observer transaction, if one began
    commit_ts: int = 0         # of the observer transaction, if it committed
    wrote: int = 0             # cells the observer transaction wrote (ack included)
    observer_seconds: float = 0.0  # observer run + commit


def _check(cell: PendingCell) -> None:
    if cell.malformed:
        raise MalformedNotification(f"an entry of ({cell.row!r}, {cell.column!r}) does not"
                                    " decode")


def run_observer(client: Client, obs: Observer, cell: PendingCell) -> CellResult:
    """Step 1: run the observer in a transaction that also acknowledges the changes, or skip.

    Exceptions of the observer and CommitConflict propagate (nothing is written then).
    """
    _check(cell)
    began = time.perf_counter()
    txn = client.begin()
    try:
        ack_col = layout.ack_column(cell.column)
        ack = layout.decode_ack(txn.get_system(cell.row, ack_col))
        if cell.max_change_ts <= ack:
            txn.rollback()
            return CellResult(Outcome.SKIPPED, txn.start_ts)
        obs.process(txn, cell.row, cell.column)
        txn.set_system(cell.row, ack_col, layout.encode_ack(txn.start_ts))
        wrote = txn.writes
        commit_ts = txn.commit()
    except BaseException:
        txn.rollback()
        raise
    return CellResult(Outcome.PROCESSED, txn.start_ts, commit_ts, wrote,
                      time.perf_counter() - began)


def finish(client: Client, cell: PendingCell) -> None:
    """Step 2: exactly these entries are done (a crash before this only causes a skip)."""
    client.notifications.done(client.table, done_refs(cell.entries))


Observers = Observer | Sequence[Observer]
"""The observer of the cells' column, or those of a batch group's columns (their
``process_batch`` runs in this order)."""


def _by_column(obs: Observers) -> dict[bytes, Observer]:
    group = [obs] if isinstance(obs, Observer) else list(obs)
    out: dict[bytes, Observer] = {}
    for o in group:
        assert isinstance(o.column, bytes)
        out[o.column] = o
    return out


def run_observer_batch(client: Client, obs: Observers, cells: Sequence[PendingCell]
                       ) -> list[CellResult]:
    """Step 1 for several cells (distinct cells, of ``obs``'s columns) in one observer
    transaction.

    Each cell is decided as in :func:`run_observer`: its ack is read in the transaction,
    and the cells whose changes it does not cover go to their observer's
    ``process_batch`` (one call per column, in the order of ``obs``) and get ack = S,
    all committed together.  Exactly-once holds per cell by the same argument: two
    commits covering one change both wrote that cell's ack.  Exceptions propagate with
    nothing written (the worker then runs the cells one by one).
    """
    for cell in cells:
        _check(cell)
    observers = _by_column(obs)
    assert all(c.column in observers for c in cells)
    results: dict[int, CellResult] = {}
    began = time.perf_counter()
    txn = client.begin()
    run: list[int] = []
    commit_ts = wrote = 0
    try:
        acks = txn.get_many_system([(cell.row, layout.ack_column(cell.column))
                                    for cell in cells])
        for i, cell in enumerate(cells):
            ack = acks[(cell.row, layout.ack_column(cell.column))]
            if cell.max_change_ts <= layout.decode_ack(ack):
                results[i] = CellResult(Outcome.SKIPPED, txn.start_ts)
            else:
                run.append(i)
        if run:
            for column, o in observers.items():
                rows = [cells[i].row for i in run if cells[i].column == column]
                if rows:
                    o.process_batch(txn, rows, column)
            new_ack = layout.encode_ack(txn.start_ts)
            for i in run:
                txn.set_system(cells[i].row, layout.ack_column(cells[i].column), new_ack)
            wrote = txn.writes
            commit_ts = txn.commit()
        else:
            txn.rollback()
    except BaseException:
        txn.rollback()
        raise
    seconds = time.perf_counter() - began
    for i in run:
        results[i] = CellResult(Outcome.PROCESSED, txn.start_ts, commit_ts, wrote, seconds)
    return [results[i] for i in range(len(cells))]


Finish = Callable[[Client, PendingCell], None]


def process_cell(client: Client, obs: Observer, cell: PendingCell, *,
                 finish: Finish = finish) -> CellResult:
    """Both steps; failpoint ``worker.after_observer`` sits between commit and done.

    A worker passes its own ``finish``, which hands the entries to its feed.
    """
    result = run_observer(client, obs, cell)
    if result.outcome is Outcome.PROCESSED:
        hit("worker.after_observer")
    finish(client, cell)
    return result


def process_cells(client: Client, obs: Observers, cells: Sequence[PendingCell], *,
                  finish: Finish = finish) -> list[CellResult]:
    """Both steps for several cells of ``obs``'s columns, step 1 in one transaction.

    The failpoint ``worker.after_observer`` sits between the commit and the dones, as
    in :func:`process_cell`.
    """
    results = run_observer_batch(client, obs, cells)
    if any(r.outcome is Outcome.PROCESSED for r in results):
        hit("worker.after_observer")
    for cell in cells:
        finish(client, cell)
    return results

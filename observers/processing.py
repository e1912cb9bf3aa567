"""Processing: the per-cell protocol that makes observer effects exactly-once.

For a cell (row, column) with pending notification versions N1..Nk (ts = writer's
start_ts), in three steps, each callable on its own so tests can stop between them:

1. :func:`decide` -- learn each writer's fate through its primary (an empty primary
   means an unconditional weak notification, committed at Ni): COMMITTED at Ci,
   ROLLED_BACK, or LOCKED (writer alive: that version is left for later).
2. :func:`run_observer` -- if some Ni committed, begin the observer transaction O.
   Its start_ts S exceeds every Ci, because it is taken after they were learned, so
   O sees every change it is asked about.  ack = O.get_system(row, b"ack:"+column).
   If max(Ci) > ack: run the observer in O, set ack = S, commit O.  Otherwise an
   earlier observer transaction already saw these changes (a re-delivery after a
   crash, or a notification coalesced into an earlier run): skip.
3. :func:`finish` -- delete exactly the decided versions (committed and rolled back),
   by DeleteVersion, never by range, so a notification written meanwhile survives.

Why exactly-once: two observer commits for one change Ci both read an ack below Ci
and both wrote the ack cell, so under snapshot isolation their lifetimes cannot
overlap (write-write conflict); the later one then starts after the earlier one's
commit and reads ack = S_earlier > Ci, so it skips.  Why at-least-once: a version
is deleted only after an O with S > Ci committed (ours now, or the one whose S is
the ack), and it was written before the writer's commit point.  A crash between
O's commit and step 3 leaves the versions, whose re-delivery is a skip.

Several cells of one column may share one observer transaction
(:func:`process_cells`, for observers with ``max_batch > 1``): each is decided on its
own, and every cell the acks do not cover is run and acknowledged in the same O.  The
argument above holds per cell, since each run of a cell writes that cell's ack.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from percolator import Client, records
from percolator.failpoints import hit
from percolator.layout import notify_table

from . import layout
from .notifications import PendingCell, delete_versions
from .registry import Observer


class Outcome(enum.Enum):
    PROCESSED = "processed"  # the observer ran and its transaction committed
    SKIPPED = "skipped"      # already covered by an earlier observer commit (ack)
    DROPPED = "dropped"      # every decided writer rolled back: nothing to observe
    WAITING = "waiting"      # every writer still undecided (alive): try again later


class MalformedNotification(ValueError):
    """A notification record does not decode; it is parked at once, never dropped."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Fate of each pending version of a cell."""

    committed: tuple[tuple[int, int], ...]  # (notification ts, writer's commit_ts)
    rolled_back: tuple[int, ...]
    locked: tuple[int, ...]

    @property
    def max_commit_ts(self) -> int:
        return max((c for _, c in self.committed), default=0)

    @property
    def decided(self) -> tuple[int, ...]:
        """Versions to delete once the observer committed or was skipped."""
        return tuple(ts for ts, _ in self.committed) + self.rolled_back


@dataclass(frozen=True, slots=True)
class CellResult:
    outcome: Outcome
    decision: Decision
    start_ts: int = 0          # of the observer transaction, if one began
    commit_ts: int = 0         # of the observer transaction, if it committed
    wrote: int = 0             # cells the observer transaction wrote (ack included)
    observer_seconds: float = 0.0  # observer run + commit


def decide(client: Client, cell: PendingCell) -> Decision:
    """Step 1: each version's change.  A notification is written with the write record it
    announces (percolator's commit step), at its commit_ts: every version is committed."""
    committed: list[tuple[int, int]] = []
    for ts, raw in cell.versions:
        try:
            records.decode_notification(raw)
        except ValueError as exc:
            raise MalformedNotification(
                f"notification of ({cell.row!r}, {cell.column!r}) at {ts}: {exc}") from exc
        committed.append((ts, ts))
    return Decision(tuple(committed), (), ())


def run_observer(client: Client, obs: Observer, cell: PendingCell, decision: Decision
                 ) -> CellResult:
    """Step 2: run the observer in a transaction that also acknowledges the changes, or skip.

    Exceptions of the observer and CommitConflict propagate (nothing is written then).
    """
    if not decision.committed:
        outcome = Outcome.DROPPED if decision.rolled_back else Outcome.WAITING
        return CellResult(outcome, decision)
    began = time.perf_counter()
    txn = client.begin()
    try:
        ack_col = layout.ack_column(cell.column)
        ack = layout.decode_ack(txn.get_system(cell.row, ack_col))
        if decision.max_commit_ts <= ack:
            txn.rollback()
            return CellResult(Outcome.SKIPPED, decision, txn.start_ts)
        obs.process(txn, cell.row, cell.column)
        txn.set_system(cell.row, ack_col, layout.encode_ack(txn.start_ts))
        wrote = txn.writes
        commit_ts = txn.commit()
    except BaseException:
        txn.rollback()
        raise
    return CellResult(Outcome.PROCESSED, decision, txn.start_ts, commit_ts, wrote,
                      time.perf_counter() - began)


def finish(client: Client, cell: PendingCell, decision: Decision) -> None:
    """Step 3: delete exactly the decided versions (a crash before this only causes a skip)."""
    delete_versions(client.store, notify_table(client.table),
                    [(cell.row, cell.column, decision.decided)])


def run_observer_batch(client: Client, obs: Observer, cells: Sequence[PendingCell],
                       decisions: Sequence[Decision]) -> list[CellResult]:
    """Step 2 for several cells of one column (distinct rows) in one observer transaction.

    Each cell is decided as in :func:`run_observer`: its ack is read in the transaction,
    and the cells whose changes it does not cover go to ``obs.process_batch`` and get
    ack = S, all committed together.  Exactly-once holds per cell by the same argument:
    two commits covering one change both wrote that cell's ack.  Exceptions propagate
    with nothing written (the worker then runs the cells one by one).
    """
    results: dict[int, CellResult] = {
        i: CellResult(Outcome.DROPPED if d.rolled_back else Outcome.WAITING, d)
        for i, d in enumerate(decisions) if not d.committed}
    todo = [i for i in range(len(cells)) if i not in results]
    if todo:
        column = obs.column
        assert isinstance(column, bytes) and all(c.column == column for c in cells)
        began = time.perf_counter()
        txn = client.begin()
        try:
            ack_col = layout.ack_column(column)
            acks = txn.get_many_system([(cells[i].row, ack_col) for i in todo])
            run = []
            for i in todo:
                ack = layout.decode_ack(acks[(cells[i].row, ack_col)])
                if decisions[i].max_commit_ts <= ack:
                    results[i] = CellResult(Outcome.SKIPPED, decisions[i], txn.start_ts)
                else:
                    run.append(i)
            if run:
                obs.process_batch(txn, [cells[i].row for i in run], column)
                new_ack = layout.encode_ack(txn.start_ts)
                for i in run:
                    txn.set_system(cells[i].row, ack_col, new_ack)
                wrote = txn.writes
                commit_ts = txn.commit()
            else:
                txn.rollback()
        except BaseException:
            txn.rollback()
            raise
        seconds = time.perf_counter() - began
        for i in run:
            results[i] = CellResult(Outcome.PROCESSED, decisions[i], txn.start_ts, commit_ts,
                                    wrote, seconds)
    return [results[i] for i in range(len(cells))]


Finish = Callable[[Client, PendingCell, Decision], None]


def process_cell(client: Client, obs: Observer, cell: PendingCell, *,
                 finish: Finish = finish) -> CellResult:
    """The three steps; failpoint ``worker.after_observer`` sits between commit and delete.

    A worker passes its own ``finish`` that deletes in the background (observers.deleter).
    """
    decision = decide(client, cell)
    result = run_observer(client, obs, cell, decision)
    if result.outcome is Outcome.PROCESSED:
        hit("worker.after_observer")
    if decision.decided:
        finish(client, cell, decision)
    return result


def process_cells(client: Client, obs: Observer, cells: Sequence[PendingCell], *,
                  finish: Finish = finish) -> list[CellResult]:
    """The three steps for several cells of ``obs``'s column, step 2 in one transaction.

    The failpoint ``worker.after_observer`` sits between the commit and the deletes, as
    in :func:`process_cell`.
    """
    decisions = [decide(client, cell) for cell in cells]
    results = run_observer_batch(client, obs, cells, decisions)
    if any(r.outcome is Outcome.PROCESSED for r in results):
        hit("worker.after_observer")
    for cell, decision in zip(cells, decisions):
        if decision.decided:
            finish(client, cell, decision)
    return results

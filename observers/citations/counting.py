"""Counting observers: forward and backward citation counts from the diff of a paper's refs.

The observer of ``paper:refs`` runs (in one transaction, acknowledged with it by the
observers layer) whenever a paper's refs changed, however many times they changed
since its last run.  It compares the distinct ids of the current refs with the ids
it processed last time, kept in the paper's system cell ``PROCESSED_REFS``::

    added   = current - processed        removed = processed - current

and, in the same transaction:

* ``paper:ref_count`` of the paper := len(current) (deleted at 0: missing reads as 0);
* the backward count ``paper:cited_by`` of every added target +1, removed target -1;
* ``PROCESSED_REFS`` := current.

Because the processed set is read and written by the very transaction that applies
the deltas, an edit, a deletion of the refs cell (current = {}), a re-addition, or
any number of edits coalesced into one run are all applied exactly once: the
observers layer commits the run with its ack or not at all.

During a bulk load the worker hands the observer up to ``DEFAULT_MAX_BATCH`` pending
papers per transaction (``process_batch``): the deltas of all of them are summed per
target first, so a paper cited by many papers of the batch is updated once.  Each
paper's diff and ack are exactly those of a run of its own.

Backward deltas go through a :class:`~observers.citations.combine.CombiningCounter`
(the default: hot papers' deltas go to slots folded by one transaction per paper, so
writers do not conflict on them) or, with ``combine=False``, straight to
``paper:cited_by`` by read-modify-write (the naive version, kept to measure against;
see docs/citations.md for the numbers).

System cell, in the paper's row (``Transaction.set_system``; hidden from user scans)::

    column  0x00 "citations:processed_refs"
    value   the processed ids, sorted, distinct, encoded like paper:refs (compact JSON)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from observers import Observer, Placement

from .combine import (
    COUNTERS_GROUP,
    DEFAULT_BURST,
    DEFAULT_HOT,
    CombiningCounter,
    FoldObserver,
    check_target,
    rows_of,
)
from .contention import DEFAULT_SLOTS
from .schema import CITED_BY, REF_COUNT, REFS, decode_refs, encode_count, encode_refs

if TYPE_CHECKING:
    from percolator import Transaction

DEFAULT_MAX_BATCH = 8192
"""Papers per refs-observer transaction at most, when that many are pending (a bulk load):
the more papers, the more citations of one target are summed into one counter update
(100,000 papers: 14.8 targets per paper one at a time, 9.9 per paper in batches of
1,024, 4.8 in batches of 8,192); docs/citations.md has the measurements."""

PROCESSED_REFS = b"citations:processed_refs"
"""System column (without the 0x00 the transaction adds); persisted, do not rename."""

CommitHook = Callable[[bytes, bytes, int], None]


class RefsObserver(Observer):
    """Observer of ``paper:refs``: ref_count and cited_by deltas from the exact refs diff.

    Several papers at once when a backlog builds up (``max_batch``): their deltas are
    summed per target, so a paper cited by many of them is read and written once.
    """

    column = REFS
    max_batch = DEFAULT_MAX_BATCH
    batch_group = COUNTERS_GROUP

    def __init__(self, counter: CombiningCounter | None = None, *,
                 on_commit: CommitHook | None = None, name: str = "citations.refs",
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        super().__init__(name=name, max_batch=max_batch)
        self.counter = counter if counter is not None else CombiningCounter(CITED_BY)
        self.on_commit = on_commit

    def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
        self.process_batch(txn, [row], column)

    def process_batch(self, txn: Transaction, rows: Sequence[bytes], column: bytes) -> None:
        """The diffs of several papers, their backward deltas summed per target.

        One read of all refs, one of all processed sets, one of all counters; a target
        cited by several papers of the batch is read and written once.
        """
        for row in rows:
            check_target(row)
        refs = txn.get_many([(row, REFS) for row in rows])
        done = txn.get_many_system([(row, PROCESSED_REFS) for row in rows])
        deltas: dict[str, int] = {}
        for row in rows:
            current = set(decode_refs(refs[(row, REFS)]))
            processed = set(decode_refs(done[(row, PROCESSED_REFS)]))
            if current == processed:
                continue  # e.g. only order or duplicates changed, or a re-delivery
            for target in current - processed:
                deltas[target] = deltas.get(target, 0) + 1
            for target in processed - current:
                deltas[target] = deltas.get(target, 0) - 1
            if len(current) != len(processed):
                if current:
                    txn.set(row, REF_COUNT, encode_count(len(current)))
                else:
                    txn.delete(row, REF_COUNT)  # a missing count reads as 0
            txn.set_system(row, PROCESSED_REFS, encode_refs(sorted(current)))
        targets = sorted(t for t, d in deltas.items() if d)
        if targets:  # claimed under the first row; its committed() releases them
            self.counter.add_many(
                txn, [(key, deltas[t]) for t, key in zip(targets, rows_of(targets))], rows[0])

    def attach(self, placement: Placement) -> None:
        self.counter.placement = placement

    def committed(self, row: bytes, column: bytes, commit_ts: int) -> None:
        self.counter.done(row)
        if self.on_commit is not None:
            self.on_commit(row, column, commit_ts)


class CountingFoldObserver(FoldObserver):
    """The fold observer, with the same commit hook as :class:`RefsObserver`."""

    def __init__(self, counter: CombiningCounter | None = None, *,
                 on_commit: CommitHook | None = None) -> None:
        super().__init__(counter)
        self.on_commit = on_commit

    def committed(self, row: bytes, column: bytes, commit_ts: int) -> None:
        super().committed(row, column, commit_ts)
        if self.on_commit is not None:
            self.on_commit(row, column, commit_ts)


def make_observers(*, combine: bool = True, hot: int | None = DEFAULT_HOT,
                   burst: float = DEFAULT_BURST, slots: int = DEFAULT_SLOTS,
                   batch: int = DEFAULT_MAX_BATCH,
                   on_commit: CommitHook | None = None) -> list[Observer]:
    """The citation observers: refs (diff) and fold (combining counters).

    ``combine=False`` is the naive version: every cited_by is read-modified-written by
    the refs observer.  ``hot`` and ``burst`` choose the combined targets (see
    :class:`~observers.citations.combine.CombiningCounter`).  The fold observer is
    included either way, so switching modes on a live table still folds what was
    combined before.  ``batch``: most papers per refs-observer transaction (1: one
    each).  ``on_commit(row, column, commit_ts)`` is called after each observer commit
    (progress displays, latency).
    """
    counter = (CombiningCounter(CITED_BY, slots=slots, hot=hot, burst=burst) if combine
               else CombiningCounter(CITED_BY, slots=slots, hot=None, burst=0.0, track=False))
    return [RefsObserver(counter, on_commit=on_commit, max_batch=batch),
            CountingFoldObserver(counter, on_commit=on_commit)]


OBSERVERS: list[Observer] = make_observers()
"""What ``percolator worker --observers observers.citations:OBSERVERS`` loads (combining)."""

NAIVE_OBSERVERS: list[Observer] = make_observers(combine=False)
"""Direct read-modify-write of cited_by: for comparison only (conflicts on hot papers)."""

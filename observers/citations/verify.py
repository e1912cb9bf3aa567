"""Verification: the stored counts of one snapshot against a batch recount of the same snapshot.

:func:`snapshot_papers` reads every paper's refs at one ``start_ts``, skipping the
combining row range; :func:`verify` feeds it to the MapReduce recount
(observers.citations.recount) and compares, at that same snapshot, the stored
``paper:ref_count`` and ``paper:cited_by`` of every row (missing = 0).  Run it once
the workers are idle: while observers are behind, the diff shows what they have not
done yet (and :attr:`Verification.unfolded` counts targets waiting for a fold).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .combine import QUEUE_END, QUEUE_PREFIX, unfolded
from .recount import Counts, Timing, diff_counts, recount
from .schema import CITED_BY, REF_COUNT, REFS, decode_count, decode_refs, paper_id

if TYPE_CHECKING:
    from percolator import Client, Transaction

# Paper rows: everything outside [QUEUE_PREFIX, QUEUE_END).  None = unbounded; the
# combining range starts at 0x00 "cq/", so rows below it would start with 0x00 too, and
# are not papers either (ids must not start with 0x00), but are scanned all the same
# so that a stray row is reported rather than hidden.
_PAPER_RANGES: tuple[tuple[bytes | None, bytes | None], ...] = (
    (None, QUEUE_PREFIX), (QUEUE_END, None))


def _scan_papers(txn: Transaction, columns: list[bytes]) -> Iterator[tuple[bytes, bytes, bytes]]:
    for start, end in _PAPER_RANGES:
        yield from txn.scan(start, end, columns)


def snapshot_papers(source: Client | Transaction) -> Iterator[tuple[str, list[str]]]:
    """(paper id, refs) of every paper with a ``paper:refs`` cell, lazily, from one snapshot.

    ``source`` is a transaction (its snapshot) or a client (a read-only transaction
    begun now, open while the iterator is consumed).
    """
    from percolator import Transaction

    if isinstance(source, Transaction):
        for row, _, value in _scan_papers(source, [REFS]):
            yield paper_id(row), decode_refs(value)
        return
    txn = source.begin()
    try:
        yield from snapshot_papers(txn)
    finally:
        txn.rollback()


def stored_counts(txn: Transaction) -> Counts:
    """The counts the observers wrote, as of ``txn``'s snapshot (zero cells left out)."""
    forward: dict[str, int] = {}
    backward: dict[str, int] = {}
    for row, column, value in _scan_papers(txn, [REF_COUNT, CITED_BY]):
        n = decode_count(value)
        if n:
            (forward if column == REF_COUNT else backward)[paper_id(row)] = n
    return Counts(forward, backward)


@dataclass(frozen=True, slots=True)
class Verification:
    """Outcome of :func:`verify`."""

    start_ts: int
    papers: int
    """Papers with a refs cell."""
    ids: int
    """Ids with a non-zero count in the recount (citing or cited)."""
    diff: tuple[str, ...]
    """One line per disagreeing count: ``forward['p1']: stored=3 recount=4``."""
    unfolded: int
    """Combined targets whose slots are not folded yet."""
    snapshot_s: float
    """Reading the refs of the snapshot and the recount's map and reduce."""
    recount: Timing
    counts: Counts
    """The recount's counts (what the stored ones must equal)."""

    @property
    def ok(self) -> bool:
        return not self.diff

    def report(self, limit: int = 20) -> str:
        """A readable summary: ``verified ...`` or the first ``limit`` differences."""
        if self.ok:
            return (f"verified: {self.papers} papers, {self.ids} ids, counts equal the batch"
                    f" recount at ts {self.start_ts}")
        head = (f"MISMATCH: {len(self.diff)} counts differ from the batch recount at ts"
                f" {self.start_ts} ({self.unfolded} targets with unfolded deltas)")
        lines = [head]
        lines += ["  " + d for d in self.diff[:limit]]
        if len(self.diff) > limit:
            lines.append(f"  ... and {len(self.diff) - limit} more")
        return "\n".join(lines)


def batch_recount(client: Client, *, workers: int | None = None) -> tuple[int, Counts, float,
                                                                           Timing]:
    """The batch baseline: snapshot the refs and recount.  (start_ts, counts, seconds, timing)."""
    txn = client.begin()
    try:
        began = time.perf_counter()
        result = recount(snapshot_papers(txn), workers=workers)
        return txn.start_ts, result.counts, time.perf_counter() - began, result.timing
    finally:
        txn.rollback()


def verify(client: Client, *, workers: int | None = None) -> Verification:
    """Compare stored counts with a recount, both at one snapshot; see :class:`Verification`."""
    txn = client.begin()
    try:
        began = time.perf_counter()
        result = recount(snapshot_papers(txn), workers=workers)
        seconds = time.perf_counter() - began
        stored = stored_counts(txn)
        expected = result.counts
        diff = diff_counts(stored, expected, ("stored", "recount"))
        ids = expected.forward.keys() | expected.backward.keys()
        return Verification(txn.start_ts, result.timing.papers, len(ids), tuple(diff),
                            len(unfolded(txn)), seconds, result.timing, expected)
    finally:
        txn.rollback()

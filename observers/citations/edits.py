"""Edits against a live table, and waiting until the counts reflect them.

* :func:`commit_edit` writes one :data:`~observers.citations.graph.Edit` in a
  transaction (its ``paper:refs`` set, or deleted).
* :class:`ExpectedCounts` holds the counts the table must converge to: it starts
  from a verified recount and applies each edit as the definition says, returning the
  cells the edit affects and their new values.
* :class:`CommitSignal` is an observer commit hook (``make_observers(on_commit=...)``)
  that wakes waiters; :func:`wait_reflected` re-reads the affected cells after each
  observer commit, with bounded waits, until they hold the expected values.  "Time
  until reflected" is measured from the edit's commit to that moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .graph import DeleteRefs, Edit, apply_edit
from .recount import Counts
from .schema import CITED_BY, REF_COUNT, REFS, decode_count, encode_refs, row_key

if TYPE_CHECKING:
    from percolator import Client, Transaction

Cell = tuple[bytes, bytes]


def write_edit(txn: Transaction, edit: Edit) -> None:
    row = row_key(edit.paper)
    if isinstance(edit, DeleteRefs):
        txn.delete(row, REFS)
    else:
        txn.set(row, REFS, encode_refs(edit.refs))


def commit_edit(client: Client, edit: Edit) -> int:
    """Write ``edit`` in its own transaction (retried on conflict); return its commit_ts."""
    def fn(txn: Transaction) -> Transaction:
        write_edit(txn, edit)
        return txn

    txn = client.run(fn)
    assert txn.commit_ts is not None
    return txn.commit_ts


class ExpectedCounts:
    """The counts a table converges to: a recount's, plus every edit applied since."""

    def __init__(self, papers: Mapping[str, Sequence[str]], counts: Counts) -> None:
        self.papers = {p: list(refs) for p, refs in papers.items()}
        self.forward = dict(counts.forward)
        self.backward = dict(counts.backward)

    def apply(self, edit: Edit) -> dict[Cell, int]:
        """Apply ``edit`` (ValueError if its precondition fails); return the affected cells.

        Affected: the paper's ``ref_count`` and the ``cited_by`` of every id it now cites
        or no longer cites, each with the value it must reach.
        """
        old = set(self.papers.get(edit.paper, ()))
        apply_edit(self.papers, edit)
        new = set(self.papers.get(edit.paper, ()))
        cells: dict[Cell, int] = {}
        self.forward[edit.paper] = len(new)
        cells[(row_key(edit.paper), REF_COUNT)] = len(new)
        for target in old ^ new:
            n = self.backward.get(target, 0) + (1 if target in new else -1)
            self.backward[target] = n
            cells[(row_key(target), CITED_BY)] = n
        return cells

    def counts(self) -> Counts:
        return Counts({k: v for k, v in self.forward.items() if v},
                      {k: v for k, v in self.backward.items() if v})


class CommitSignal:
    """An observer commit hook that counts commits and wakes :func:`wait_reflected`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.commits = 0
        self.by_column: dict[bytes, int] = {}

    def __call__(self, row: bytes, column: bytes, commit_ts: int) -> None:
        with self._cond:
            self.commits += 1
            self.by_column[column] = self.by_column.get(column, 0) + 1
            self._cond.notify_all()

    def wait_after(self, seen: int, timeout: float) -> int:
        """Wait (at most ``timeout`` s) for a commit after the ``seen``-th; return the count."""
        with self._cond:
            if self.commits == seen:
                self._cond.wait(timeout)
            return self.commits


class NotReflected(TimeoutError):
    """The counts did not reach their expected values in time; ``mismatches`` says which."""

    def __init__(self, timeout: float, mismatches: dict[Cell, tuple[int, int]]) -> None:
        shown = ", ".join(f"{row.decode(errors='replace')}:{col.decode()} is {got}, expected"
                          f" {want}" for (row, col), (got, want) in list(mismatches.items())[:5])
        super().__init__(f"counts not reflected after {timeout}s: {shown}")
        self.mismatches = mismatches


def mismatches(client: Client, cells: Mapping[Cell, int]) -> dict[Cell, tuple[int, int]]:
    """The cells whose stored count (missing = 0) differs from the expected: {cell: (got, want)}."""
    txn = client.begin()
    try:
        found = txn.get_many(list(cells))
    finally:
        txn.rollback()
    out = {}
    for cell, want in cells.items():
        got = decode_count(found[cell])
        if got != want:
            out[cell] = (got, want)
    return out


@dataclass(frozen=True, slots=True)
class Reflected:
    seconds: float
    checks: int


def wait_reflected(client: Client, cells: Mapping[Cell, int], since: float, *,
                   signal: CommitSignal | None = None, timeout: float = 30.0,
                   poll: float = 0.05) -> Reflected:
    """Wait until every cell holds its expected count; seconds are counted from ``since``.

    Re-checks after every observer commit reported to ``signal`` and at least every
    ``poll`` seconds (without a signal, or if the hook is not wired).  Raises
    :class:`NotReflected` after ``timeout`` seconds.
    """
    deadline = time.perf_counter() + timeout
    checks = 0
    while True:
        seen = signal.commits if signal is not None else 0
        wrong = mismatches(client, cells)
        checks += 1
        now = time.perf_counter()
        if not wrong:
            return Reflected(now - since, checks)
        if now >= deadline:
            raise NotReflected(timeout, wrong)
        wait = min(poll, deadline - now)
        if signal is not None:
            signal.wait_after(seen, wait)
        else:
            threading.Event().wait(wait)

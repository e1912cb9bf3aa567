"""ChangedRows: which rows of the transactional tables were written, so that a GC pass
reads those and not whole tables.

Garbage below a safe point S appears only in a row that holds a version S has passed:
once a pass has processed a row at a safe point above every timestamp the row holds,
no later pass finds anything in it to remove or settle until it is written again.  So
every write notes its rows with the oracle's mark at that moment (:meth:`Oracle.peek`:
every timestamp handed out before is below it, those in the write included); a pass
takes the noted rows, processes them, and notes again those whose mark is above its
safe point (a version between the two becomes garbage later).

What was written before this process started is not known, so each table known at open
is read whole (``full_until``) until a pass at a safe point at or above the mark at open
has finished; its rows are noted meanwhile, and read from then on.  When the noted rows
would pass :data:`MAX_ROWS` (memory), the table with the most forgets them and is read
whole until a pass passes the highest mark they had.  A pass that fails gives back what
it took.

:class:`NotingStore` is the protocol steps' store (``StepContext.store``): it notes the
rows of every write to a tracked table after the write, so a pass that read the row
before the write sees it again next time.  A pass's own removals go to the store under
it (``inner``): deleting versions adds none, so a row they touch needs no second read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from bigtable_lite import (
    MutationResult,
    Row,
    RowMutation,
    ScanRequest,
    StoreOps,
    TabletInfo,
)

from ._steps.context import StepStore

__all__ = ["MAX_ROWS", "ChangedRows", "NotingStore", "Taken"]

MAX_ROWS = 500_000
"""Noted rows kept in all (~150 bytes each); a table past it is read whole instead."""


@dataclass(slots=True)
class Taken:
    """What a pass takes of one table: its noted rows (row -> mark); whether it must read
    the table whole (``full_until``: until a pass at a safe point at or above it; 0:
    not); and how many items were written to it (an estimate of versions added)."""

    rows: dict[bytes, int] = field(default_factory=dict)
    full_until: int = 0
    written: int = 0


class ChangedRows:
    """The rows written per tracked table since the passes took them; thread-safe."""

    def __init__(self, tables: Iterable[bytes], mark: int, *, max_rows: int = MAX_ROWS
                 ) -> None:
        self._lock = threading.Lock()
        self._max_rows = max_rows
        self._count = 0
        self._rows: dict[bytes, dict[bytes, int]] = {}
        self._full: dict[bytes, int] = {t: mark for t in tables}
        self._written: dict[bytes, int] = {}
        self.tracked: frozenset[bytes] = frozenset(self._full)

    def track(self, table: bytes) -> None:
        """``table`` holds transactional cells from now on (it held none before: nothing of
        it is unknown)."""
        with self._lock:
            self.tracked = self.tracked | {table}

    def note(self, mutations: Sequence[RowMutation], mark: Callable[[], int]) -> None:
        """The rows of ``mutations`` in tracked tables were written (every timestamp in
        them is below ``mark()``, read under the lock: notes arrive in the order of their
        marks)."""
        tracked = self.tracked
        written = [m for m in mutations if m.table in tracked and m.mutations]
        if written:
            with self._lock:
                now = mark()
                counts = self._written
                for m in written:
                    table = m.table
                    self._note(table, m.row, now)
                    counts[table] = counts.get(table, 0) + len(m.mutations)

    def _note(self, table: bytes, row: bytes, mark: int) -> None:
        rows = self._rows.get(table)
        if rows is not None:
            known = rows.get(row)
            if known is not None:  # the common case: a row written again
                if known < mark:
                    rows[row] = mark
                return
        if self._count >= self._max_rows and self._rows:
            self._read_whole(max(self._rows, key=lambda t: len(self._rows[t])))
            rows = self._rows.get(table)
        if rows is None:
            rows = self._rows[table] = {}
        self._count += 1
        rows[row] = mark

    def _read_whole(self, table: bytes) -> None:
        """Forget the noted rows of ``table`` (the one with most: memory), which is read
        whole instead until a pass passes every mark they had."""
        rows = self._rows.pop(table)
        self._count -= len(rows)
        self._full[table] = max(self._full.get(table, 0), max(rows.values()))

    def take(self) -> dict[bytes, Taken]:
        """Everything noted, per table; noting starts afresh."""
        with self._lock:
            taken = {t: Taken(rows) for t, rows in self._rows.items()}
            for t, until in self._full.items():
                taken.setdefault(t, Taken()).full_until = until
            for t, n in self._written.items():
                taken.setdefault(t, Taken()).written = n
            self._rows, self._full, self._written, self._count = {}, {}, {}, 0
            return taken

    def keep(self, taken: dict[bytes, Taken], safe_point: int) -> None:
        """After a pass at ``safe_point`` over ``taken``: note again what it leaves for
        later (rows marked above the safe point; a table read whole until a later pass)."""
        self._give_back(taken, lambda mark: mark > safe_point)

    def give_back(self, taken: dict[bytes, Taken]) -> None:
        """After a pass that failed: all of ``taken`` is noted again, its writes counted."""
        self._give_back(taken, lambda mark: True, written=True)

    def _give_back(self, taken: dict[bytes, Taken], left: Callable[[int], bool], *,
                   written: bool = False) -> None:
        with self._lock:
            for table, t in taken.items():
                if written and t.written:
                    self._written[table] = self._written.get(table, 0) + t.written
                if t.full_until and left(t.full_until):
                    self._full[table] = max(self._full.get(table, 0), t.full_until)
                for row, mark in t.rows.items():
                    if left(mark):
                        self._note(table, row, mark)

    @property
    def noted(self) -> int:
        """Rows noted now, in all tables."""
        return self._count


class NotingStore(StoreOps):
    """``store`` whose writes note their rows in ``changed`` (marked by ``mark()``)."""

    def __init__(self, store: StepStore, changed: ChangedRows, mark: Callable[[], int]
                 ) -> None:
        self.limits = store.limits  # type: ignore[attr-defined]
        self.inner = store
        self._changed = changed
        self._mark = mark
        self.read_rows = store.read_rows  # type: ignore[method-assign]  # the hot path

    @property
    def path(self) -> str:
        return self.inner.path  # type: ignore[attr-defined, no-any-return]

    def scan(self, request: ScanRequest) -> Iterator[Row]:
        return self.inner.scan(request)

    def _noted(self, mutations: Sequence[RowMutation]) -> None:
        self._changed.note(mutations, self._mark)

    def mutate_rows(self, mutations: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        try:
            return self.inner.mutate_rows(mutations, sync=sync)
        finally:
            self._noted(mutations)

    def mutate_row(self, m: RowMutation, *, sync: bool = False) -> MutationResult:
        try:
            return self.inner.mutate_row(m, sync=sync)  # type: ignore[attr-defined, no-any-return]
        finally:
            self._noted((m,))

    def mutate_guarded(self, mutations: Sequence[RowMutation], *, sync: bool = False
                       ) -> list[MutationResult]:
        try:
            return self.inner.mutate_guarded(mutations, sync=sync)
        finally:
            self._noted(mutations)

    def mutate_atomic(self, mutations: Sequence[RowMutation],
                      finish: Callable[[], Sequence[RowMutation]] | None = None, *,
                      sync: bool = False) -> list[MutationResult]:
        more: list[Sequence[RowMutation]] = []
        if finish is not None:
            def finished() -> Sequence[RowMutation]:
                rows = finish()
                more.append(rows)
                return rows
        try:
            return self.inner.mutate_atomic(mutations, None if finish is None else finished,
                                             sync=sync)
        finally:
            self._noted(mutations)
            for rows in more:
                self._noted(rows)

    def list_tablets(self, table: bytes | None = None) -> list[TabletInfo]:
        return self.inner.list_tablets(table)

    def split_tablet(self, table: bytes, row: bytes) -> list[TabletInfo]:
        return self.inner.split_tablet(table, row)

    def close(self) -> None:
        """Nothing: the store it wraps is closed by its owner."""

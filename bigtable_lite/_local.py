"""LocalStore: the tablet store in-process, on one LevelDB data directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Self

from ._engine import Engine, SyncMode
from ._model import (
    DEFAULT_LIMITS,
    Cell,
    Limits,
    MutationResult,
    Row,
    RowMutation,
    RowRead,
    ScanRequest,
    TabletInfo,
)
from ._store import StoreOps
from ._tablets import TabletMap
from .validation import check_batch, check_key, check_reads, check_row_mutation, check_scan


class LocalStore(StoreOps):
    """Validates every request against ``limits``, then serves it from the engine.

    Only one LocalStore (in any process) may own a data directory at a time; a second
    raises :class:`~bigtable_lite.errors.StoreLocked`.
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: SyncMode = "none",
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.engine = Engine(path, sync=sync)
        try:
            self.tablets = TabletMap(self.engine)
        except BaseException:
            self.engine.close()
            raise

    @property
    def path(self) -> str:
        return str(self.engine.path)

    def read_rows(self, reads: Sequence[RowRead], *, max_bytes: int | None = None
                  ) -> list[list[Cell]]:
        """``max_bytes``: refuse (:class:`~bigtable_lite.errors.ReplyTooLarge`) as soon as
        the rows gathered exceed it, instead of gathering them all (a server's budget for
        one reply)."""
        check_reads(reads, self.limits)
        return self.engine.read_rows(reads, max_bytes=max_bytes)

    def read_rows_chunks(self, reads: Sequence[RowRead], chunk_bytes: int,
                         max_row_bytes: int | None = None
                         ) -> Generator[list[list[Cell]], None, None]:
        """read_rows, one snapshot, the results in pieces of about ``chunk_bytes`` gathered
        one at a time (for a stream of a large result); ``max_row_bytes``: as
        :meth:`scan`'s."""
        check_reads(reads, self.limits)
        return self.engine.read_rows_chunks(reads, chunk_bytes, max_row_bytes)

    def scan(self, request: ScanRequest, max_row_bytes: int | None = None) -> Iterator[Row]:
        """``max_row_bytes``: ReplyTooLarge for a row with more bytes (counted as budgets
        count them) in what is read, raised while the row is gathered (a reply carries a
        row whole: the gRPC service bounds rows by what a message can carry)."""
        check_scan(request, self.limits)
        return self.engine.scan(request, max_row_bytes)

    def mutate_rows(self, mutations: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        if len(mutations) == 1:  # the common case, without the batch machinery
            return [self.mutate_row(mutations[0], sync=sync)]
        self._admit(mutations)
        return self.engine.mutate(mutations, sync=sync)

    def mutate_guarded(self, mutations: Sequence[RowMutation], *, sync: bool = False
                       ) -> list[MutationResult]:
        """mutate_rows, but the rows after the first apply only if the first applied (else
        they get ``NOT_ATTEMPTED``), in one write.  In-process only (no gRPC method): the
        transaction layer commits a primary and its secondaries so."""
        self._admit(mutations)
        return self.engine.mutate_guarded(mutations, sync=sync)

    def mutate_atomic(self, mutations: Sequence[RowMutation],
                      finish: Callable[[], Sequence[RowMutation]] | None = None, *,
                      sync: bool = False) -> list[MutationResult]:
        """All rows or none, with ``finish()`` called under the rows' locks once their
        conditions hold (see ``Mutator.mutate_atomic``).  In-process only (no gRPC
        method): the transaction layer's one-phase commit writes so.  What ``finish()``
        returns is checked like any batch before anything is written."""
        self._admit(mutations)
        if finish is None:
            return self.engine.mutate_atomic(mutations, sync=sync)

        def admitted() -> Sequence[RowMutation]:
            more = finish()
            self._admit(more)
            return more

        return self.engine.mutate_atomic(mutations, admitted, sync=sync)

    def _admit(self, mutations: Sequence[RowMutation]) -> None:
        """Check a batch; record the tables it writes (a row that can write nothing does
        not create its table)."""
        check_batch(mutations, self.limits)
        note = self.tablets.note_table
        for m in mutations:
            if m.mutations:
                note(m.table)

    def mutate_row(self, m: RowMutation, *, sync: bool = False) -> MutationResult:
        check_row_mutation(m, self.limits)
        if m.mutations:  # a row that can write nothing does not create its table
            self.tablets.note_table(m.table)
        return self.engine.mutate_row(m, sync=sync)

    def list_tablets(self, table: bytes | None = None) -> list[TabletInfo]:
        if table is not None:
            check_key(table, "table", self.limits.max_table_bytes)
        return self.tablets.list(table)

    def split_tablet(self, table: bytes, row: bytes) -> list[TabletInfo]:
        check_key(table, "table", self.limits.max_table_bytes)
        check_key(row, "row", self.limits.max_row_bytes)
        return self.tablets.split(table, row)

    def compact_table(self, table: bytes) -> None:
        """Drop deleted entries of a table from disk (after heavy churn, e.g. notifications)."""
        check_key(table, "table", self.limits.max_table_bytes)
        self.engine.compact_table(table)

    def unchecked(self) -> UncheckedStore:
        """This store's data without request validation (see :class:`UncheckedStore`)."""
        return UncheckedStore(self)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UncheckedStore(StoreOps):
    """A LocalStore's data served without validating requests: for a caller whose requests
    are well-formed by construction.

    Why: validation belongs where input enters.  The transaction layer checks every row,
    column and value a user gives it (against the same :class:`Limits`) and builds its
    store requests from them; checking those requests again cost ~15% of an embedded
    single-row transaction.  Everything else -- users, the gRPC service, tools -- uses
    the checked :class:`LocalStore`.  Requests are still applied exactly as LocalStore
    applies them (the engine is the same); only the checks are skipped.  Closing the
    view closes nothing: the LocalStore it came from owns the data directory.
    """

    def __init__(self, store: LocalStore) -> None:
        self.limits = store.limits
        self._checked = store
        engine = store.engine
        self._engine = engine
        self._note = store.tablets.note_table
        self._noted: set[bytes] = set()  # tables known to exist (the protocol's few)
        self.read_rows = engine.read_rows  # type: ignore[method-assign]  # the hot path

    @property
    def path(self) -> str:
        return self._checked.path

    def scan(self, request: ScanRequest) -> Iterator[Row]:
        return self._engine.scan(request)

    def _note_tables(self, mutations: Sequence[RowMutation]) -> None:
        """Record the tables written (a row that can write nothing does not create one)."""
        noted = self._noted
        for m in mutations:
            if m.table not in noted and m.mutations:
                self._note(m.table)
                noted.add(m.table)

    def mutate_rows(self, mutations: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        self._note_tables(mutations)
        return self._engine.mutate(mutations, sync=sync)

    def mutate_row(self, m: RowMutation, *, sync: bool = False) -> MutationResult:
        self._note_tables((m,))
        return self._engine.mutate_row(m, sync=sync)

    def mutate_guarded(self, mutations: Sequence[RowMutation], *, sync: bool = False
                       ) -> list[MutationResult]:
        self._note_tables(mutations)
        return self._engine.mutate_guarded(mutations, sync=sync)

    def mutate_atomic(self, mutations: Sequence[RowMutation],
                      finish: Callable[[], Sequence[RowMutation]] | None = None, *,
                      sync: bool = False) -> list[MutationResult]:
        self._note_tables(mutations)
        if finish is None:
            return self._engine.mutate_atomic(mutations, sync=sync)

        def noted() -> Sequence[RowMutation]:
            more = finish()
            self._note_tables(more)
            return more

        return self._engine.mutate_atomic(mutations, noted, sync=sync)

    def list_tablets(self, table: bytes | None = None) -> list[TabletInfo]:
        return self._checked.list_tablets(table)

    def split_tablet(self, table: bytes, row: bytes) -> list[TabletInfo]:
        return self._checked.split_tablet(table, row)

    def compact_table(self, table: bytes) -> None:
        self._checked.compact_table(table)

    def close(self) -> None:
        """Nothing: the LocalStore this view came from owns (and closes) the data."""

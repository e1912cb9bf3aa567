"""The tablet store interface, shared by the in-process and the gRPC implementation.

``TabletStore`` is the seam every layer above uses: ``LocalStore`` (in-process, on
LevelDB) and ``RemoteStore`` (a gRPC client) both implement it, so transaction code
runs unchanged against either.  ``StoreOps`` adds convenience methods, written once
on top of the batch primitives, that also accept ``str`` for rows and columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from ._encoding import MAX_TS
from ._model import (
    ALL_TIME,
    Cell,
    Condition,
    Mutation,
    MutationResult,
    Put,
    Row,
    RowMutation,
    RowRead,
    ScanRequest,
    TabletInfo,
    TimeRange,
)
from .validation import as_bytes


@runtime_checkable
class TabletStore(Protocol):
    """Operations with identical semantics in-process and over gRPC."""

    def read_rows(self, reads: Sequence[RowRead]) -> list[list[Cell]]:
        """Read each row; all reads of one call see one consistent snapshot of a server."""
        ...

    def scan(self, request: ScanRequest) -> Iterator[Row]:
        """Stream the non-empty rows of a row range, ascending, from one snapshot."""
        ...

    def mutate_rows(self, mutations: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        """Check-and-mutate each row atomically; one result per row, in order.

        ``sync=True`` fsyncs before acknowledging, whatever the store's sync mode.
        """
        ...

    def list_tablets(self, table: bytes | None = None) -> list[TabletInfo]:
        ...

    def split_tablet(self, table: bytes, row: bytes) -> list[TabletInfo]:
        ...

    def close(self) -> None:
        ...


class StoreOps:
    """Convenience methods over the TabletStore primitives (str accepted, one row at a time)."""

    def read_rows(self, reads: Sequence[RowRead]) -> list[list[Cell]]:
        raise NotImplementedError

    def scan(self, request: ScanRequest) -> Iterator[Row]:
        raise NotImplementedError

    def mutate_rows(self, mutations: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        raise NotImplementedError

    def read_row(self, table: bytes | str, row: bytes | str, *,
                 columns: Iterable[bytes | str] = (), column_prefixes: Iterable[bytes | str] = (),
                 time_range: TimeRange = ALL_TIME, max_versions: int = 0) -> list[Cell]:
        _not_one_name(columns, "columns")
        _not_one_name(column_prefixes, "column_prefixes")
        read = RowRead(as_bytes(table, "table"), as_bytes(row, "row"),
                       tuple([as_bytes(c, "column") for c in columns]),
                       tuple([as_bytes(p, "column prefix") for p in column_prefixes]),
                       time_range, max_versions)
        return self.read_rows([read])[0]

    def get(self, table: bytes | str, row: bytes | str, column: bytes | str,
            ts: int = MAX_TS) -> Cell | None:
        """The newest version of one cell at or below ``ts``, or None."""
        read = RowRead(table if type(table) is bytes else as_bytes(table, "table"),
                       row if type(row) is bytes else as_bytes(row, "row"),
                       (column if type(column) is bytes else as_bytes(column, "column"),),
                       (), TimeRange(0, ts), 1)
        cells = self.read_rows([read])[0]
        return cells[0] if cells else None

    def mutate_row(self, m: RowMutation, *, sync: bool = False) -> MutationResult:
        """One row mutation: ``mutate_rows([m])[0]`` (an implementation may do it cheaper)."""
        return self.mutate_rows([m], sync=sync)[0]

    def check_and_mutate(self, table: bytes | str, row: bytes | str,
                         conditions: Sequence[Condition], mutations: Sequence[Mutation]
                         ) -> MutationResult:
        m = RowMutation(table if type(table) is bytes else as_bytes(table, "table"),
                        row if type(row) is bytes else as_bytes(row, "row"),
                        tuple(mutations), tuple(conditions))
        return self.mutate_row(m)

    def put(self, table: bytes | str, row: bytes | str, column: bytes | str, ts: int,
            value: bytes | str) -> None:
        self.check_and_mutate(table, row, (), [Put(as_bytes(column, "column"), ts,
                                                   as_bytes(value, "value"))])

    def scan_rows(self, table: bytes | str, start_row: bytes | str | None = None,
                  end_row: bytes | str | None = None, *, columns: Iterable[bytes | str] = (),
                  column_prefixes: Iterable[bytes | str] = (), time_range: TimeRange = ALL_TIME,
                  max_versions: int = 0, limit: int = 0,
                  keys_only_prefixes: Iterable[bytes | str] = ()) -> Iterator[Row]:
        _not_one_name(columns, "columns")
        _not_one_name(column_prefixes, "column_prefixes")
        _not_one_name(keys_only_prefixes, "keys_only_prefixes")
        return self.scan(ScanRequest(
            as_bytes(table, "table"),
            None if start_row is None else as_bytes(start_row, "start_row"),
            None if end_row is None else as_bytes(end_row, "end_row"),
            tuple(as_bytes(c, "column") for c in columns),
            tuple(as_bytes(p, "column prefix") for p in column_prefixes),
            time_range, max_versions, limit,
            tuple(as_bytes(p, "column prefix") for p in keys_only_prefixes)))


def _not_one_name(names: object, what: str) -> None:
    """TypeError for one name where a list of names is asked for: a str or bytes is
    iterable too, and "name" would read the columns n, a, m and e."""
    if isinstance(names, (str, bytes)):
        raise TypeError(f"{what} must be a list of names, not one {type(names).__name__}")

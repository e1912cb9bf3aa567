"""Value types of the tablet store's data model: cells, reads, conditions, mutations, results.

A table is a sorted map (row, column, ts) -> value.  Rows and columns are bytes
(the convenience methods of :class:`bigtable_lite._store.StoreOps` also accept str),
timestamps are unsigned 64-bit ints chosen by the caller, versions newest first.
All time ranges are inclusive on both ends.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from ._encoding import MAX_TS

_T = TypeVar("_T")


def fast_init(cls: type[_T]) -> type[_T]:
    """Give a frozen slots dataclass an __init__ that sets slots through their descriptors.

    Why: these values are built once per cell and per mutation on every hot path, and
    the generated frozen __init__ (``object.__setattr__`` per field) measured ~1.7x
    slower.  Semantics are unchanged: same signature and defaults, still frozen.  Public
    for the value types of the layers above (e.g. ``percolator.records``).
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    env: dict[str, Any] = {}
    params = []
    for f in fields:
        env[f"_set_{f.name}"] = getattr(cls, f.name).__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"    _set_{f.name}(self, {f.name})\n" for f in fields)
    exec(f"def __init__(self, {', '.join(params)}):\n{body}", env)  # noqa: S102
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 - assigning a method directly upsets mypy
    return cls


@fast_init
@dataclass(frozen=True, slots=True)
class Cell:
    """One version of one cell."""

    column: bytes
    ts: int
    value: bytes


@fast_init
@dataclass(frozen=True, slots=True)
class Row:
    """A row with the cells a read or scan selected, by column ascending then ts descending."""

    row: bytes
    cells: tuple[Cell, ...]


@fast_init
@dataclass(frozen=True, slots=True)
class TimeRange:
    """Inclusive range of timestamps [min_ts, max_ts]."""

    min_ts: int = 0
    max_ts: int = MAX_TS


ALL_TIME = TimeRange()


@fast_init
@dataclass(frozen=True, slots=True)
class RowRead:
    """Read one row: which columns, which versions.

    ``columns`` selects exact columns, ``column_prefixes`` columns starting with any
    prefix; both empty means every column.  ``max_versions`` caps versions per column
    (0 = all in ``time_range``); ``max_versions=1`` with ``TimeRange(0, ts)`` reads the
    newest version at or below ``ts``.
    """

    table: bytes
    row: bytes
    columns: tuple[bytes, ...] = ()
    column_prefixes: tuple[bytes, ...] = ()
    time_range: TimeRange = ALL_TIME
    max_versions: int = 0


@fast_init
@dataclass(frozen=True, slots=True)
class ScanRequest:
    """Scan rows in [start_row, end_row) of a table; None means unbounded; limit counts rows
    (0 = all).

    ``keys_only_prefixes``: the cells of columns under these prefixes come back with empty
    values, for a caller that needs to know which versions exist, not what they hold (GC
    over long values): their values are neither copied nor sent.
    """

    table: bytes
    start_row: bytes | None = None
    end_row: bytes | None = None
    columns: tuple[bytes, ...] = ()
    column_prefixes: tuple[bytes, ...] = ()
    time_range: TimeRange = ALL_TIME
    max_versions: int = 0
    limit: int = 0
    keys_only_prefixes: tuple[bytes, ...] = ()


# --- conditions of a check-and-mutate -------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True)
class NoVersionIn:
    """Holds when ``column`` has no version with ts in [min_ts, max_ts]."""

    column: bytes
    min_ts: int = 0
    max_ts: int = MAX_TS


@fast_init
@dataclass(frozen=True, slots=True)
class VersionAt:
    """Holds when ``column`` has a version exactly at ``ts`` (with ``value``, if given)."""

    column: bytes
    ts: int
    value: bytes | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class ValuePrefixAt:
    """Holds when ``column`` has a version exactly at ``ts`` whose value starts with
    ``value_prefix``.

    A point lookup.  Why: a record kept in one slot (one fixed ts) and rewritten by
    several owners carries its owner at its start; an owner acts on it only while it
    is still its own (e.g. the transaction layer's lock slot).
    """

    column: bytes
    ts: int
    value_prefix: bytes


@fast_init
@dataclass(frozen=True, slots=True)
class NoValuePrefixAt:
    """Holds unless ``column`` has a version exactly at ``ts`` whose value starts with
    ``value_prefix``: the negation of :class:`ValuePrefixAt` (no version at ts, or one
    with another value).  A point lookup."""

    column: bytes
    ts: int
    value_prefix: bytes


Condition = NoVersionIn | VersionAt | ValuePrefixAt | NoValuePrefixAt


# --- mutations ------------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True)
class Put:
    column: bytes
    ts: int
    value: bytes


@fast_init
@dataclass(frozen=True, slots=True)
class DeleteVersion:
    column: bytes
    ts: int


@fast_init
@dataclass(frozen=True, slots=True)
class DeleteRange:
    """Delete every version of ``column`` with ts in [min_ts, max_ts]."""

    column: bytes
    min_ts: int = 0
    max_ts: int = MAX_TS


Mutation = Put | DeleteVersion | DeleteRange


@fast_init
@dataclass(frozen=True, slots=True)
class RowMutation:
    """An atomic check-and-mutate of one row: all mutations apply iff every condition holds."""

    table: bytes
    row: bytes
    mutations: tuple[Mutation, ...] = ()
    conditions: tuple[Condition, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True)
class MutationResult:
    """Outcome of one RowMutation.

    When not applied, ``failed_condition`` is the index of the first condition that did
    not hold and ``found`` the version that broke it (None for a missing VersionAt or
    ValuePrefixAt); -1 for a row not attempted (:data:`NOT_ATTEMPTED`).
    """

    applied: bool
    failed_condition: int = -1
    found: Cell | None = None


APPLIED = MutationResult(True)
NOT_ATTEMPTED = MutationResult(False)
"""A row left alone because another row of its call did not apply: the first row
(``mutate_guarded``), or any row (``mutate_atomic``)."""


@fast_init
@dataclass(frozen=True, slots=True)
class TabletInfo:
    """A tablet: rows [start_row, end_row) of a table; end_row None means unbounded."""

    table: bytes
    start_row: bytes
    end_row: bytes | None
    approximate_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits; oversize input is refused before anything is written.

    Defaults follow Bigtable's spirit, sized for one machine: keys small, values up to
    a few MiB, a batch bounded so one call cannot monopolise the server.
    """

    max_table_bytes: int = 256
    max_row_bytes: int = 4 * 1024
    max_column_bytes: int = 4 * 1024
    max_value_bytes: int = 4 * 1024 * 1024
    max_batch_rows: int = 10_000
    max_items_per_row: int = 1_000
    max_message_bytes: int = 64 * 1024 * 1024


DEFAULT_LIMITS = Limits()

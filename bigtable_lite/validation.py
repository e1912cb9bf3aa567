"""Validation of requests against types and :class:`Limits`, before any I/O.

Shared by the in-process store and the gRPC service so both refuse the same input
with the same error.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._encoding import MAX_TS
from ._model import (
    DeleteRange,
    DeleteVersion,
    Limits,
    NoValuePrefixAt,
    NoVersionIn,
    Put,
    RowMutation,
    RowRead,
    ScanRequest,
    TimeRange,
    ValuePrefixAt,
    VersionAt,
)
from .errors import InvalidArgument, LimitExceeded

MAX_VERSIONS = (1 << 32) - 1
"""Largest max_versions (a uint32 on the wire)."""


def as_bytes(value: bytes | str, what: str) -> bytes:
    """Exactly ``bytes``: bytes (a subclass converted), or str encoded as UTF-8.

    Anything else is a TypeError.  Subclasses are converted, not passed through,
    because every check below (and the store) requires ``type(x) is bytes``.
    """
    if type(value) is bytes:
        return value
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def check_key(value: object, what: str, limit: int) -> None:
    if type(value) is not bytes:
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    if len(value) > limit:
        raise LimitExceeded(f"{what} is {len(value)} bytes; the limit is {limit}")


def check_ts(ts: object, what: str = "timestamp") -> None:
    if type(ts) is not int:
        raise TypeError(f"{what} must be an int, not {type(ts).__name__}")
    if ts < 0 or ts > MAX_TS:
        raise InvalidArgument(f"{what} {ts} is outside the unsigned 64-bit range")


def check_range(min_ts: int, max_ts: int) -> None:
    check_ts(min_ts, "min_ts")
    check_ts(max_ts, "max_ts")
    if min_ts > max_ts:
        raise InvalidArgument(f"time range is inverted: min_ts {min_ts} > max_ts {max_ts}")


def check_value(value: object, limits: Limits) -> None:
    if type(value) is not bytes:
        raise TypeError(f"value must be bytes, not {type(value).__name__}")
    if len(value) > limits.max_value_bytes:
        raise LimitExceeded(
            f"value is {len(value)} bytes; the limit is {limits.max_value_bytes}"
        )


def check_row_mutation(m: RowMutation, limits: Limits) -> None:
    """Check one row mutation.

    Each item is first tested with one inline expression and only when that fails
    re-checked field by field for the precise error: this runs once per row on every
    write, and function calls are most of its cost.
    """
    if type(m) is not RowMutation:
        raise TypeError(f"expected RowMutation, not {type(m).__name__}")
    table, row = m.table, m.row
    if not (type(table) is bytes and 0 < len(table) <= limits.max_table_bytes):
        check_key(table, "table", limits.max_table_bytes)
    if not (type(row) is bytes and 0 < len(row) <= limits.max_row_bytes):
        check_key(row, "row", limits.max_row_bytes)
    if len(m.conditions) + len(m.mutations) > limits.max_items_per_row:
        raise LimitExceeded(
            f"row mutation has {len(m.conditions) + len(m.mutations)} conditions and"
            f" mutations; the limit is {limits.max_items_per_row}"
        )
    col_limit = limits.max_column_bytes
    value_limit = limits.max_value_bytes
    for mut in m.mutations:
        if type(mut) is Put:
            column, ts, value = mut.column, mut.ts, mut.value
            if (type(column) is bytes and 0 < len(column) <= col_limit
                    and type(ts) is int and 0 <= ts <= MAX_TS
                    and type(value) is bytes and len(value) <= value_limit):
                continue
            check_key(column, "column", col_limit)
            check_ts(ts)
            check_value(value, limits)
        elif type(mut) is DeleteVersion:
            check_key(mut.column, "column", col_limit)
            check_ts(mut.ts)
        elif type(mut) is DeleteRange:
            check_key(mut.column, "column", col_limit)
            check_range(mut.min_ts, mut.max_ts)
        else:
            raise TypeError(f"unknown mutation type {type(mut).__name__}")
    for c in m.conditions:
        if type(c) is NoVersionIn:
            column, min_ts, max_ts = c.column, c.min_ts, c.max_ts
            if (type(column) is bytes and 0 < len(column) <= col_limit
                    and type(min_ts) is int and type(max_ts) is int
                    and 0 <= min_ts <= max_ts <= MAX_TS):
                continue
            check_key(column, "column", col_limit)
            check_range(min_ts, max_ts)
        elif type(c) is ValuePrefixAt or type(c) is NoValuePrefixAt:
            column, ts, prefix = c.column, c.ts, c.value_prefix
            if (type(column) is bytes and 0 < len(column) <= col_limit
                    and type(ts) is int and 0 <= ts <= MAX_TS
                    and type(prefix) is bytes and len(prefix) <= value_limit):
                continue
            check_key(column, "column", col_limit)
            check_ts(ts)
            if type(prefix) is not bytes:
                raise TypeError(f"value_prefix must be bytes, not {type(prefix).__name__}")
            raise LimitExceeded(f"value_prefix is {len(prefix)} bytes; the limit is {value_limit}")
        elif type(c) is VersionAt:
            check_key(c.column, "column", col_limit)
            check_ts(c.ts)
            if c.value is not None:
                check_value(c.value, limits)
        else:
            raise TypeError(f"unknown condition type {type(c).__name__}")


def check_batch(mutations: Sequence[RowMutation], limits: Limits) -> None:
    if len(mutations) > limits.max_batch_rows:
        raise LimitExceeded(
            f"batch has {len(mutations)} rows; the limit is {limits.max_batch_rows}"
        )
    for m in mutations:
        check_row_mutation(m, limits)


def _check_prefixes(prefixes: Sequence[bytes], col_limit: int) -> None:
    for p in prefixes:
        if type(p) is not bytes:
            raise TypeError(f"column prefix must be bytes, not {type(p).__name__}")
        if len(p) > col_limit:
            raise LimitExceeded(f"column prefix is {len(p)} bytes; the limit is {col_limit}")


def _check_filter(
    columns: Sequence[bytes], prefixes: Sequence[bytes], time_range: TimeRange, max_versions: int,
    limits: Limits,
) -> None:
    col_limit = limits.max_column_bytes
    for c in columns:
        if not (type(c) is bytes and 0 < len(c) <= col_limit):
            check_key(c, "column", col_limit)
    _check_prefixes(prefixes, col_limit)
    if columns and prefixes:
        raise InvalidArgument("give exact columns or column prefixes, not both")
    if type(time_range) is not TimeRange:
        raise TypeError("time_range must be a TimeRange")
    min_ts, max_ts = time_range.min_ts, time_range.max_ts
    if not (type(min_ts) is int and type(max_ts) is int and 0 <= min_ts <= max_ts <= MAX_TS):
        check_range(min_ts, max_ts)
    if type(max_versions) is not int:
        raise TypeError(f"max_versions must be an int, not {type(max_versions).__name__}")
    if not 0 <= max_versions <= MAX_VERSIONS:
        raise InvalidArgument(f"max_versions must be in [0, {MAX_VERSIONS}] (0 = all)")


def check_read(r: RowRead, limits: Limits) -> None:
    """Check one row read; like check_row_mutation, the common case costs one expression."""
    if type(r) is not RowRead:
        raise TypeError(f"expected RowRead, not {type(r).__name__}")
    table, row = r.table, r.row
    if not (type(table) is bytes and 0 < len(table) <= limits.max_table_bytes):
        check_key(table, "table", limits.max_table_bytes)
    if not (type(row) is bytes and 0 < len(row) <= limits.max_row_bytes):
        check_key(row, "row", limits.max_row_bytes)
    columns, tr, max_versions = r.columns, r.time_range, r.max_versions
    if (not r.column_prefixes and type(tr) is TimeRange and type(max_versions) is int
            and 0 <= max_versions <= MAX_VERSIONS):  # the common read: exact columns
        col_limit = limits.max_column_bytes
        for c in columns:
            if not (type(c) is bytes and 0 < len(c) <= col_limit):
                break
        else:
            min_ts, max_ts = tr.min_ts, tr.max_ts
            if type(min_ts) is int and type(max_ts) is int and 0 <= min_ts <= max_ts <= MAX_TS:
                return
    _check_filter(columns, r.column_prefixes, tr, max_versions, limits)


def check_reads(reads: Sequence[RowRead], limits: Limits) -> None:
    if len(reads) > limits.max_batch_rows:
        raise LimitExceeded(f"batch has {len(reads)} reads; the limit is {limits.max_batch_rows}")
    for r in reads:
        check_read(r, limits)


def check_scan(s: ScanRequest, limits: Limits) -> None:
    if type(s) is not ScanRequest:
        raise TypeError(f"expected ScanRequest, not {type(s).__name__}")
    check_key(s.table, "table", limits.max_table_bytes)
    if s.start_row is not None:
        check_key(s.start_row, "start_row", limits.max_row_bytes)
    if s.end_row is not None:
        check_key(s.end_row, "end_row", limits.max_row_bytes)
    if s.start_row is not None and s.end_row is not None and s.start_row > s.end_row:
        raise InvalidArgument("scan range is inverted: start_row > end_row")
    _check_filter(s.columns, s.column_prefixes, s.time_range, s.max_versions, limits)
    _check_prefixes(s.keys_only_prefixes, limits.max_column_bytes)
    if type(s.limit) is not int:
        raise TypeError(f"limit must be an int, not {type(s.limit).__name__}")
    if not 0 <= s.limit <= MAX_TS:
        raise InvalidArgument("limit must be a non-negative 64-bit int (0 = unlimited)")

"""Reads at a fresh timestamp: a transaction's first read takes its start_ts with it.

Snapshot isolation needs a start_ts taken after the transaction began, and every read
at start_ts; nothing needs the timestamp and the first read to be two steps.  Where
the oracle and the store are in one place (a node), one command takes a timestamp T
and reads at T: a remote transaction's first read costs one hop instead of two.  The
reads run after T was taken, so Percolator's argument for start_ts holds unchanged: a
writer whose commit_ts is below T had all its locks in place before T was handed out,
so the reads meet its locks or its write records.

A fresh read's reads leave their time range unset (``ALL_TIME``), and each runs at
``TimeRange(0, T)``; or they fix it at one timestamp, which they keep (a cell's lock
slot at ``TimeRange(0, 0)``: a point lookup, read in the same snapshot after T was
taken, not a seek for the newest version at or below T).  Other ranges are refused:
they would name a snapshot other than T.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bigtable_lite import ALL_TIME, Cell, InvalidArgument, RowRead, TabletStore, TimeRange

from .oracle import TimestampSource

__all__ = ["FreshReads", "LocalFreshReads", "at_timestamp", "check_fresh_reads"]


class FreshReads(Protocol):
    """Takes a timestamp and reads at it: in-process (:class:`LocalFreshReads`) or at the
    node (``NodeClient``)."""

    def read_at_fresh_timestamp(self, reads: Sequence[RowRead]
                                ) -> tuple[int, list[list[Cell]]]: ...


def check_fresh_reads(reads: Sequence[RowRead]) -> None:
    """The reads of a fresh read leave their time range unset or fix it at one timestamp
    (InvalidArgument otherwise)."""
    for r in reads:
        tr = r.time_range
        if tr.min_ts != tr.max_ts and tr != ALL_TIME:
            raise InvalidArgument("the reads of a fresh read run at its timestamp: leave"
                                  " their time range unset (or fix it at one timestamp)")


def at_timestamp(reads: Sequence[RowRead], ts: int) -> list[RowRead]:
    """The reads (checked by :func:`check_fresh_reads`), each at ``TimeRange(0, ts)``,
    those fixed at one timestamp as they are."""
    time_range = TimeRange(0, ts)
    return [r if r.time_range.min_ts == r.time_range.max_ts else
            RowRead(r.table, r.row, r.columns, r.column_prefixes, time_range, r.max_versions)
            for r in reads]


class LocalFreshReads:
    """A fresh read as two steps in this process: a timestamp, then the reads at it."""

    def __init__(self, store: TabletStore, oracle: TimestampSource) -> None:
        self._store = store
        self._oracle = oracle

    def read_at_fresh_timestamp(self, reads: Sequence[RowRead]
                                ) -> tuple[int, list[list[Cell]]]:
        check_fresh_reads(reads)
        ts = self._oracle.get_timestamp()
        return ts, self._store.read_rows(at_timestamp(reads, ts))

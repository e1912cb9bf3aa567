"""Semantics of the TabletStore contract, run against LocalStore and RemoteStore alike."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bigtable_lite import (
    ALL_TIME,
    MAX_TS,
    Cell,
    Condition,
    DeleteRange,
    DeleteVersion,
    InvalidArgument,
    LimitExceeded,
    LocalStore,
    MutationResult,
    NoValuePrefixAt,
    NoVersionIn,
    Put,
    Row,
    RowMutation,
    RowRead,
    ScanRequest,
    StorageError,
    StoreClosed,
    TabletInfo,
    TabletStore,
    TimeRange,
    ValuePrefixAt,
    VersionAt,
)

from .conftest import Store

T = b"t"


def must_put(store: Store, row: bytes, column: bytes, ts: int, value: bytes) -> None:
    assert store.check_and_mutate(T, row, (), [Put(column, ts, value)]).applied


def must_see(store: Store, row: bytes, column: bytes, ts: int, value: bytes | None) -> None:
    cell = store.get(T, row, column, ts)
    assert (cell.value if cell else None) == value


def rows_of(store: Store, start: bytes | None = None, end: bytes | None = None,
            **kwargs: object) -> list[bytes]:
    return [r.row for r in store.scan_rows(T, start, end, **kwargs)]  # type: ignore[arg-type]


def test_implements_the_protocol(store: Store) -> None:
    assert isinstance(store, TabletStore)


# --- reads ------------------------------------------------------------------------------


def test_get_returns_newest_version_at_or_below_ts(store: Store) -> None:
    for ts in (10, 20, 30):
        must_put(store, b"r", b"c", ts, b"v%d" % ts)
    must_see(store, b"r", b"c", 9, None)
    must_see(store, b"r", b"c", 10, b"v10")
    must_see(store, b"r", b"c", 29, b"v20")
    must_see(store, b"r", b"c", MAX_TS, b"v30")
    assert store.get(T, b"r", b"other") is None
    assert store.get(T, b"absent", b"c") is None


def test_timestamp_extremes(store: Store) -> None:
    must_put(store, b"r", b"c", 0, b"zero")
    must_put(store, b"r", b"c", MAX_TS, b"max")
    must_see(store, b"r", b"c", 0, b"zero")
    must_see(store, b"r", b"c", MAX_TS - 1, b"zero")
    must_see(store, b"r", b"c", MAX_TS, b"max")


def test_read_row_columns_prefixes_and_versions(store: Store) -> None:
    for column in (b"a", b"ab", b"abc", b"b", b"b\x00", b"b\xff"):
        for ts in (1, 2, 3):
            must_put(store, b"r", column, ts, column + b"@%d" % ts)

    cells = store.read_row(T, b"r", columns=[b"ab", b"b\x00"])
    assert [(c.column, c.ts) for c in cells] == [
        (b"ab", 3), (b"ab", 2), (b"ab", 1), (b"b\x00", 3), (b"b\x00", 2), (b"b\x00", 1)]
    # Overlapping prefixes are merged, each column appears once, columns ascending.
    cells = store.read_row(T, b"r", column_prefixes=[b"ab", b"a", b"b\x00"], max_versions=1)
    assert [(c.column, c.ts) for c in cells] == [(b"a", 3), (b"ab", 3), (b"abc", 3),
                                                 (b"b\x00", 3)]
    cells = store.read_row(T, b"r", time_range=TimeRange(2, 2))
    assert {c.ts for c in cells} == {2} and len(cells) == 6
    cells = store.read_row(T, b"r", columns=[b"a"], time_range=TimeRange(0, 2), max_versions=0)
    assert cells == [Cell(b"a", 2, b"a@2"), Cell(b"a", 1, b"a@1")]
    assert len(store.read_row(T, b"r")) == 18
    assert store.read_row(T, b"r", column_prefixes=[b"z"]) == []


def test_read_rows_in_one_call(store: Store) -> None:
    must_put(store, b"r1", b"c", 1, b"one")
    must_put(store, b"r2", b"c", 1, b"two")
    got = store.read_rows([RowRead(T, b"r2"), RowRead(T, b"missing"), RowRead(T, b"r1"),
                           RowRead(b"other-table", b"r1")])
    assert got == [[Cell(b"c", 1, b"two")], [], [Cell(b"c", 1, b"one")], []]
    assert store.read_rows([]) == []


def test_newest_version_in_a_range(store: Store) -> None:
    """max_versions=1: the newest version at or below max_ts, if it is not below min_ts."""
    for ts in (1, 5, 9):
        must_put(store, b"r", b"c", ts, b"v%d" % ts)
        must_put(store, b"r", b"c\x00", ts, b"w%d" % ts)
    newest = store.read_row(T, b"r", columns=[b"c\x00", b"c"], time_range=TimeRange(2, 8),
                            max_versions=1)
    assert newest == [Cell(b"c", 5, b"v5"), Cell(b"c\x00", 5, b"w5")]
    assert store.read_row(T, b"r", columns=[b"c"], time_range=TimeRange(6, 8),
                          max_versions=1) == []
    assert store.read_row(T, b"r", columns=[b"c"], time_range=TimeRange(0, 0),
                          max_versions=1) == []
    assert store.read_row(T, b"r", columns=[b"zz", b"c"], time_range=TimeRange(0, MAX_TS),
                          max_versions=1) == [Cell(b"c", 9, b"v9")]


def test_reads_of_one_timestamp(store: Store) -> None:
    """Exact columns at one ts (served by point lookups): deleted versions, order, repeats."""
    for column in (b"a", b"b", b"b\x00"):
        for ts in (1, 2, 3):
            must_put(store, b"r", column, ts, column + b"@%d" % ts)
    assert store.check_and_mutate(T, b"r", (), [DeleteVersion(b"a", 2)]).applied
    at2 = store.read_row(T, b"r", columns=[b"b\x00", b"a", b"b", b"b", b"zz"],
                         time_range=TimeRange(2, 2))
    assert at2 == [Cell(b"b", 2, b"b@2"), Cell(b"b\x00", 2, b"b\x00@2")]
    assert store.read_row(T, b"r", columns=[b"a"], time_range=TimeRange(3, 3),
                          max_versions=1) == [Cell(b"a", 3, b"a@3")]
    assert store.read_row(T, b"r", columns=[b"a"], time_range=TimeRange(2, 2)) == []
    # Point and range reads in one call.
    got = store.read_rows([
        RowRead(T, b"r", (b"a",), (), TimeRange(1, 1)),
        RowRead(T, b"r", (b"a",), (), TimeRange(0, 2), 1),
        RowRead(T, b"missing", (b"a",), (), TimeRange(1, 1)),
        RowRead(T, b"r", (b"b",), (), TimeRange(0, MAX_TS), 0),
    ])
    assert got == [[Cell(b"a", 1, b"a@1")], [Cell(b"a", 1, b"a@1")], [],
                   [Cell(b"b", ts, b"b@%d" % ts) for ts in (3, 2, 1)]]


def test_reads_of_one_call_see_one_snapshot(local_store: LocalStore) -> None:
    """Point lookups and seeks of one read_rows see the same instant, even while a row changes."""
    stop = threading.Event()
    writes = [0]

    def writer() -> None:
        ts = 1
        while not stop.is_set():
            # Each row mutation moves the cell "x" to a new version and deletes the old one,
            # keeping "n" (the current version) in step: one snapshot sees both agree.
            local_store.mutate_rows([RowMutation(T, b"r", (
                Put(b"x", ts + 1, b"v"), DeleteVersion(b"x", ts), Put(b"n", 0, b"%d" % (ts + 1))))])
            ts += 1
            writes[0] = ts

    local_store.mutate_rows([RowMutation(T, b"r", (Put(b"x", 1, b"v"), Put(b"n", 0, b"1")))])
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reads = 0
        while writes[0] < 3000 and reads < 300_000:  # interleave with many writes, bounded
            point, newest = local_store.read_rows([
                RowRead(T, b"r", (b"n",), (), TimeRange(0, 0)),
                RowRead(T, b"r", (b"x",), (), ALL_TIME, 1)])
            assert [c.ts for c in newest] == [int(point[0].value)]
            reads += 1
    finally:
        stop.set()
        thread.join(timeout=30)


def test_values_are_kept_exactly(store: Store) -> None:
    values = [b"", b"\x00", b"\xff" * 1000, bytes(range(256)) * 64]
    for i, value in enumerate(values):
        must_put(store, b"r", b"c%d" % i, 5, value)
    assert [c.value for c in store.read_row(T, b"r")] == values


def test_str_is_accepted_as_utf8(store: Store) -> None:
    store.put("t", "zeile-ü", "spalte", 3, "wert")
    assert store.get(T, "zeile-ü".encode(), b"spalte") == Cell(b"spalte", 3, b"wert")
    assert store.get("t", "zeile-ü", "spalte", 3) == Cell(b"spalte", 3, b"wert")
    assert [r.row for r in store.scan_rows("t", "zeile", "zeilf")] == ["zeile-ü".encode()]


# --- scans ------------------------------------------------------------------------------


def test_scan_ranges_are_start_inclusive_end_exclusive(store: Store) -> None:
    for row in (b"a", b"b", b"c", b"d"):
        must_put(store, row, b"c", 1, row)
    assert rows_of(store) == [b"a", b"b", b"c", b"d"]
    assert rows_of(store, b"b", b"d") == [b"b", b"c"]
    assert rows_of(store, b"b") == [b"b", b"c", b"d"]
    assert rows_of(store, None, b"b") == [b"a"]
    assert rows_of(store, b"bb", b"bc") == []
    assert rows_of(store, b"c", b"c") == []
    rows = list(store.scan_rows(T, b"a", b"b"))
    assert rows == [Row(b"a", (Cell(b"c", 1, b"a"),))]


def test_scan_rows_with_zero_and_ff_bytes_and_prefix_rows(store: Store) -> None:
    rows = [b"\x00", b"\x00\x00", b"\x00\x01", b"\x00\xff", b"a", b"a\x00", b"a\x00b", b"ab",
            b"\xff", b"\xff\xff"]
    for row in reversed(rows):
        must_put(store, row, b"c", 1, b"x")
    assert rows_of(store) == sorted(rows)
    assert rows_of(store, b"a", b"ab") == [b"a", b"a\x00", b"a\x00b"]
    assert rows_of(store, b"\x00\x00", b"\x00\xff") == [b"\x00\x00", b"\x00\x01"]
    assert rows_of(store, b"\xff") == [b"\xff", b"\xff\xff"]
    # Another table's rows never leak into a scan.
    store.put(b"t\x00", b"a", b"c", 1, b"x")
    store.put(b"s", b"a", b"c", 1, b"x")
    assert rows_of(store) == sorted(rows)


def test_scan_filters_and_skips_rows_without_selected_cells(store: Store) -> None:
    must_put(store, b"r1", b"lock", 5, b"L")
    must_put(store, b"r1", b"data", 5, b"D")
    must_put(store, b"r2", b"data", 7, b"D")
    must_put(store, b"r2", b"data", 9, b"D9")
    must_put(store, b"r3", b"note:x", 1, b"N")
    assert rows_of(store, columns=[b"lock"]) == [b"r1"]
    assert rows_of(store, column_prefixes=[b"note:"]) == [b"r3"]
    assert rows_of(store, time_range=TimeRange(6, 8)) == [b"r2"]
    newest = list(store.scan_rows(T, columns=[b"data"], max_versions=1))
    assert [(r.row, [c.ts for c in r.cells]) for r in newest] == [(b"r1", [5]), (b"r2", [9])]


def test_a_scan_returns_keys_only_for_the_columns_asked(store: Store) -> None:
    """Which versions exist, without their values, for columns under keys_only_prefixes;
    the other columns whole: over every read path of a scan (all columns, exact columns,
    the newest version of each)."""
    must_put(store, b"r", b"big:a", 5, b"B" * 5000)
    must_put(store, b"r", b"big:a", 7, b"C" * 5000)
    must_put(store, b"r", b"meta", 5, b"M")
    keys_only = [(b"big:a", 7, b""), (b"big:a", 5, b""), (b"meta", 5, b"M")]
    for kwargs, expected in (({}, keys_only),
                             ({"columns": [b"big:a", b"meta"]}, keys_only),
                             ({"column_prefixes": [b"big"]}, keys_only[:2]),
                             ({"max_versions": 1}, [keys_only[0], keys_only[2]]),
                             ({"columns": [b"big:a", b"meta"], "max_versions": 1},
                              [keys_only[0], keys_only[2]])):
        rows = list(store.scan_rows(T, keys_only_prefixes=[b"big:"],
                                    **kwargs))  # type: ignore[arg-type]
        assert [(c.column, c.ts, c.value) for c in rows[0].cells] == expected, kwargs
    whole = list(store.scan_rows(T, keys_only_prefixes=[b"other"]))[0].cells
    assert [c.value for c in whole] == [b"C" * 5000, b"B" * 5000, b"M"]
    with pytest.raises(LimitExceeded):
        list(store.scan_rows(T, keys_only_prefixes=[b"p" * 4097]))
    with pytest.raises(TypeError, match="list of names"):
        list(store.scan_rows(T, keys_only_prefixes="big"))  # type: ignore[arg-type]


def test_scan_limit_and_many_rows_in_order(store: Store) -> None:
    n = 700  # more than one engine chunk and one ScanResponse
    store.mutate_rows([RowMutation(T, b"row%05d" % i, (Put(b"c", 1, b"v"),)) for i in range(n)])
    all_rows = rows_of(store)
    assert all_rows == [b"row%05d" % i for i in range(n)]
    assert rows_of(store, limit=3) == all_rows[:3]
    assert rows_of(store, b"row00300", limit=300) == all_rows[300:600]
    assert len(rows_of(store, limit=n + 5)) == n


def test_scan_is_lazy_and_can_stop_early(store: Store) -> None:
    store.mutate_rows([RowMutation(T, b"r%04d" % i, (Put(b"c", 1, b"v"),)) for i in range(600)])
    it = store.scan_rows(T)
    first = [next(it).row for _ in range(3)]
    assert first == [b"r0000", b"r0001", b"r0002"]
    it.close()  # type: ignore[attr-defined]
    assert len(rows_of(store, limit=1)) == 1  # nothing was left stuck


def test_scan_reads_one_snapshot(store: Store) -> None:
    store.mutate_rows([RowMutation(T, b"r%04d" % i, (Put(b"c", 1, b"v"),)) for i in range(600)])
    it = store.scan_rows(T)
    first = next(it)
    store.put(T, b"r0599", b"c", 2, b"late")  # after the scan began
    store.put(T, b"r9999", b"c", 1, b"late")
    rest = list(it)
    assert first.row == b"r0000" and len(rest) == 599
    assert rest[-1] == Row(b"r0599", (Cell(b"c", 1, b"v"),))


# --- conditions -------------------------------------------------------------------------


def test_no_version_in(store: Store) -> None:
    must_put(store, b"r", b"c", 10, b"v")
    cam = store.check_and_mutate
    assert cam(T, b"r", [NoVersionIn(b"c", 11)], [Put(b"x", 1, b"1")]).applied
    assert cam(T, b"r", [NoVersionIn(b"c", 0, 9)], [Put(b"x", 2, b"2")]).applied
    assert cam(T, b"r", [NoVersionIn(b"other")], [Put(b"x", 3, b"3")]).applied
    for lo, hi in ((10, 10), (0, 10), (10, MAX_TS), (0, MAX_TS)):
        res = cam(T, b"r", [NoVersionIn(b"c", lo, hi)], [Put(b"x", 4, b"4")])
        assert res == MutationResult(False, 0, Cell(b"c", 10, b"v"))
    must_see(store, b"r", b"x", MAX_TS, b"3")


def test_no_version_in_one_timestamp_after_deletes(store: Store) -> None:
    """A one-timestamp NoVersionIn (served by a point lookup) sees puts and deletes."""
    cam = store.check_and_mutate
    for _ in range(3):
        assert cam(T, b"r", [NoVersionIn(b"c", 0, 0)], [Put(b"c", 0, b"held")]).applied
        assert cam(T, b"r", [NoVersionIn(b"c", 0, 0)], [Put(b"c", 0, b"again")]) == \
            MutationResult(False, 0, Cell(b"c", 0, b"held"))
        assert cam(T, b"r", [NoVersionIn(b"c", 1, 1)], [Put(b"d", 1, b"")]).applied
        assert cam(T, b"r", [VersionAt(b"c", 0, b"held")], [DeleteVersion(b"c", 0)]).applied


def test_conditions_see_every_earlier_write_to_their_row(store: Store) -> None:
    """Interleaved rows: each check sees the writes before it (the engine reuses iterators)."""
    def claim(row: bytes) -> bool:
        return store.check_and_mutate(T, row, [NoVersionIn(b"lock")],
                                      [Put(b"lock", 7, b"mine")]).applied

    rows = [b"r%04d" % i for i in range(300)]
    for i, row in enumerate(rows):
        assert claim(row)
        assert claim(b"other%04d" % i)
        assert not claim(row)
        assert not claim(rows[i // 2])
    batch = store.mutate_rows([RowMutation(T, row, (Put(b"lock", 8, b""),), (NoVersionIn(b"lock"),))
                               for row in (b"fresh1", rows[0], b"fresh2")])
    assert [r.applied for r in batch] == [True, False, True]
    assert not claim(b"fresh1") and not claim(b"fresh2")


def test_no_version_in_reports_the_newest_version_in_range(store: Store) -> None:
    for ts in (5, 8, 12):
        must_put(store, b"r", b"c", ts, b"v%d" % ts)
    res = store.check_and_mutate(T, b"r", [NoVersionIn(b"c", 0, 10)], [Put(b"x", 1, b"")])
    assert res.found == Cell(b"c", 8, b"v8")


def test_version_at(store: Store) -> None:
    must_put(store, b"r", b"c", 10, b"v")
    cam = store.check_and_mutate
    assert cam(T, b"r", [VersionAt(b"c", 10)], [Put(b"x", 1, b"1")]).applied
    assert cam(T, b"r", [VersionAt(b"c", 10, b"v")], [Put(b"x", 2, b"2")]).applied
    assert cam(T, b"r", [VersionAt(b"c", 9)], [Put(b"x", 3, b"3")]) == \
        MutationResult(False, 0, None)
    assert cam(T, b"r", [VersionAt(b"c", 10, b"w")], [Put(b"x", 3, b"3")]) == \
        MutationResult(False, 0, Cell(b"c", 10, b"v"))
    assert cam(T, b"r", [VersionAt(b"c", 10, b"")], [Put(b"x", 3, b"3")]).failed_condition == 0
    must_see(store, b"r", b"x", MAX_TS, b"2")


def test_value_prefix_at(store: Store) -> None:
    must_put(store, b"r", b"slot", 0, b"\x02owner-1 rest")
    must_put(store, b"r", b"c", 7, b"v")
    cam = store.check_and_mutate
    assert cam(T, b"r", [ValuePrefixAt(b"slot", 0, b"\x02owner-1")], [Put(b"x", 1, b"1")]).applied
    assert cam(T, b"r", [ValuePrefixAt(b"slot", 0, b"\x02owner-1 rest")],
               [Put(b"x", 2, b"2")]).applied
    assert cam(T, b"r", [ValuePrefixAt(b"slot", 0, b"")], [Put(b"x", 3, b"3")]).applied
    # Another owner's value, a prefix longer than the value, no version at ts at all:
    for cond, found in ((ValuePrefixAt(b"slot", 0, b"\x02owner-2"),
                         Cell(b"slot", 0, b"\x02owner-1 rest")),
                        (ValuePrefixAt(b"slot", 0, b"\x02owner-1 rest and more"),
                         Cell(b"slot", 0, b"\x02owner-1 rest")),
                        (ValuePrefixAt(b"slot", 1, b""), None),
                        (ValuePrefixAt(b"c", 6, b"v"), None),
                        (ValuePrefixAt(b"other", 0, b""), None)):
        assert cam(T, b"r", [cond], [Put(b"x", 4, b"4")]) == MutationResult(False, 0, found)
    must_see(store, b"r", b"x", MAX_TS, b"3")


def test_no_value_prefix_at(store: Store) -> None:
    must_put(store, b"r", b"slot", 0, b"\x02owner-1 rest")
    cam = store.check_and_mutate
    for holds in (NoValuePrefixAt(b"slot", 0, b"\x02owner-2"),
                  NoValuePrefixAt(b"slot", 0, b"\x02owner-1 rest and more"),
                  NoValuePrefixAt(b"slot", 1, b""),
                  NoValuePrefixAt(b"other", 0, b"\x02owner-1")):
        assert cam(T, b"r", [holds], [Put(b"x", 1, b"1")]).applied, holds
    for fails in (NoValuePrefixAt(b"slot", 0, b"\x02owner-1"),
                  NoValuePrefixAt(b"slot", 0, b"")):
        assert cam(T, b"r", [fails], [Put(b"x", 2, b"2")]) == \
            MutationResult(False, 0, Cell(b"slot", 0, b"\x02owner-1 rest")), fails
    must_see(store, b"r", b"x", MAX_TS, b"1")


def test_value_prefix_conditions_follow_one_slot_rewritten_by_owners(store: Store) -> None:
    """One cell at a fixed ts, taken, refreshed, released and retaken by several owners
    (point lookups: each sees the latest put or delete of the slot, never an older one)."""
    cam = store.check_and_mutate
    for owner in (b"A", b"B", b"A"):
        assert cam(T, b"r", [NoVersionIn(b"slot", 0, 0)], [Put(b"slot", 0, owner + b"1")]).applied
        assert not cam(T, b"r", [NoVersionIn(b"slot", 0, 0)], [Put(b"slot", 0, b"?")]).applied
        other = b"B" if owner == b"A" else b"A"
        assert not cam(T, b"r", [ValuePrefixAt(b"slot", 0, other)],
                       [DeleteVersion(b"slot", 0)]).applied
        assert cam(T, b"r", [ValuePrefixAt(b"slot", 0, owner)], [Put(b"slot", 0, owner + b"2")]
                   ).applied
        assert cam(T, b"r", [NoValuePrefixAt(b"slot", 0, other)], [Put(b"seal", 1, b"")]).applied
        assert not cam(T, b"r", [NoValuePrefixAt(b"slot", 0, owner)], [Put(b"seal", 1, b"")]
                       ).applied
        assert cam(T, b"r", [ValuePrefixAt(b"slot", 0, owner)], [DeleteVersion(b"slot", 0)]
                   ).applied
        assert cam(T, b"r", [NoValuePrefixAt(b"slot", 0, owner)], [Put(b"seal", 1, b"")]).applied
        assert not cam(T, b"r", [ValuePrefixAt(b"slot", 0, owner)], [Put(b"x", 1, b"")]).applied
    assert store.read_row(T, b"r", columns=[b"slot"]) == []


def test_first_failing_condition_is_reported_and_nothing_applies(store: Store) -> None:
    must_put(store, b"r", b"a", 1, b"A")
    conditions: list[Condition] = [VersionAt(b"a", 1), NoVersionIn(b"b"), NoVersionIn(b"a"),
                                   VersionAt(b"z", 1)]
    res = store.check_and_mutate(T, b"r", conditions,
                                 [Put(b"b", 2, b"B"), DeleteVersion(b"a", 1)])
    assert res == MutationResult(False, 2, Cell(b"a", 1, b"A"))
    assert store.read_row(T, b"r") == [Cell(b"a", 1, b"A")]


def test_conditions_only_see_their_own_row(store: Store) -> None:
    must_put(store, b"r", b"c", 1, b"v")
    assert store.check_and_mutate(T, b"r\x00", [NoVersionIn(b"c")], [Put(b"c", 1, b"")]).applied
    assert store.check_and_mutate(T, b"s", [NoVersionIn(b"c")], [Put(b"c", 1, b"")]).applied
    assert store.check_and_mutate(b"t2", b"r", [NoVersionIn(b"c")], [Put(b"c", 1, b"")]).applied


# --- mutations --------------------------------------------------------------------------


def test_put_overwrites_same_version(store: Store) -> None:
    must_put(store, b"r", b"c", 1, b"old")
    must_put(store, b"r", b"c", 1, b"new")
    assert store.read_row(T, b"r") == [Cell(b"c", 1, b"new")]


def test_delete_version(store: Store) -> None:
    for ts in (1, 2, 3):
        must_put(store, b"r", b"c", ts, b"v")
    assert store.check_and_mutate(T, b"r", (), [DeleteVersion(b"c", 2),
                                                DeleteVersion(b"c", 99)]).applied
    assert [c.ts for c in store.read_row(T, b"r")] == [3, 1]


def test_delete_range_is_inclusive_and_stays_in_its_column(store: Store) -> None:
    for column in (b"c", b"c\x00", b"cc"):
        for ts in range(1, 7):
            must_put(store, b"r", column, ts, b"v")
    must_put(store, b"r\x00", b"c", 3, b"v")
    assert store.check_and_mutate(T, b"r", (), [DeleteRange(b"c", 2, 5)]).applied
    assert [c.ts for c in store.read_row(T, b"r", columns=[b"c"])] == [6, 1]
    assert len(store.read_row(T, b"r", columns=[b"c\x00", b"cc"])) == 12
    assert store.check_and_mutate(T, b"r", (), [DeleteRange(b"c")]).applied
    assert store.read_row(T, b"r", columns=[b"c"]) == []
    must_see(store, b"r\x00", b"c", MAX_TS, b"v")


def test_mutations_of_a_row_apply_in_order(store: Store) -> None:
    res = store.check_and_mutate(T, b"r", (), [Put(b"c", 1, b"a"), DeleteVersion(b"c", 1),
                                               Put(b"c", 2, b"b"), Put(b"d", 1, b"d")])
    assert res.applied
    assert store.read_row(T, b"r") == [Cell(b"c", 2, b"b"), Cell(b"d", 1, b"d")]


def test_empty_mutation_is_a_no_op(store: Store) -> None:
    assert store.check_and_mutate(T, b"r", (), ()).applied
    assert store.mutate_rows([]) == []
    assert list(store.scan_rows(T)) == []


def test_batch_results_are_independent_and_in_order(store: Store) -> None:
    must_put(store, b"b", b"c", 1, b"taken")
    results = store.mutate_rows([
        RowMutation(T, b"a", (Put(b"c", 2, b"A"),), (NoVersionIn(b"c"),)),
        RowMutation(T, b"b", (Put(b"c", 2, b"B"),), (NoVersionIn(b"c"),)),
        RowMutation(T, b"c", (Put(b"c", 2, b"C"),)),
    ])
    assert [r.applied for r in results] == [True, False, True]
    assert results[1].found == Cell(b"c", 1, b"taken")
    assert rows_of(store) == [b"a", b"b", b"c"]
    must_see(store, b"b", b"c", MAX_TS, b"taken")


def test_batch_with_repeated_rows_applies_them_in_order(store: Store) -> None:
    results = store.mutate_rows([
        RowMutation(T, b"r", (Put(b"lock", 5, b"first"),), (NoVersionIn(b"lock"),)),
        RowMutation(T, b"other", (Put(b"c", 1, b"x"),)),
        RowMutation(T, b"r", (Put(b"lock", 6, b"second"),), (NoVersionIn(b"lock"),)),
        RowMutation(T, b"r", (DeleteVersion(b"lock", 5),), (VersionAt(b"lock", 5, b"first"),)),
        RowMutation(T, b"r", (Put(b"lock", 7, b"third"),), (NoVersionIn(b"lock"),)),
    ])
    assert [r.applied for r in results] == [True, True, False, True, True]
    assert results[2].found == Cell(b"lock", 5, b"first")
    assert store.read_row(T, b"r") == [Cell(b"lock", 7, b"third")]


def test_sync_writes(store: Store) -> None:
    assert store.mutate_rows([RowMutation(T, b"r", (Put(b"c", 1, b"v"),))], sync=True)[0].applied
    must_see(store, b"r", b"c", 1, b"v")


# --- tablets ----------------------------------------------------------------------------


def test_split_and_list_tablets(store: Store) -> None:
    store.put(T, b"a", b"c", 1, b"v")
    store.put(b"u", b"a", b"c", 1, b"v")
    assert [(t.table, t.start_row, t.end_row) for t in store.list_tablets()] == [
        (T, b"", None), (b"u", b"", None)]
    halves = store.split_tablet(T, b"m")
    assert [(t.start_row, t.end_row) for t in halves] == [(b"", b"m"), (b"m", None)]
    store.split_tablet(T, b"f")
    assert [(t.start_row, t.end_row) for t in store.list_tablets(T)] == [
        (b"", b"f"), (b"f", b"m"), (b"m", None)]
    assert all(t.approximate_bytes >= 0 for t in store.list_tablets())
    with pytest.raises(InvalidArgument):
        store.split_tablet(T, b"m")
    # Every table starts as one tablet covering every row, written to or not.
    assert store.list_tablets(b"never-written") == [TabletInfo(b"never-written", b"", None, 0)]


# --- caller mistakes --------------------------------------------------------------------


def scan_all(store: Store) -> list[Row]:
    return list(store.scan_rows(T)) + list(store.scan_rows(b"t2"))


@pytest.mark.parametrize("mutation, error", [
    (RowMutation(T, b"", (Put(b"c", 1, b"v"),)), InvalidArgument),
    (RowMutation(b"", b"r", (Put(b"c", 1, b"v"),)), InvalidArgument),
    (RowMutation(T, b"r", (Put(b"", 1, b"v"),)), InvalidArgument),
    (RowMutation(T, b"r" * 4097, (Put(b"c", 1, b"v"),)), LimitExceeded),
    (RowMutation(b"t" * 257, b"r", (Put(b"c", 1, b"v"),)), LimitExceeded),
    (RowMutation(T, b"r", (Put(b"c" * 4097, 1, b"v"),)), LimitExceeded),
    (RowMutation(T, b"r", (Put(b"c", 1, b"v" * (4 * 1024 * 1024 + 1)),)), LimitExceeded),
    (RowMutation(T, b"r", (Put(b"c", 1, b"v"),) * 1001), LimitExceeded),
    (RowMutation(T, b"r", (Put(b"c", MAX_TS + 1, b"v"),)), InvalidArgument),
    (RowMutation(T, b"r", (Put(b"c", -1, b"v"),)), InvalidArgument),
    (RowMutation(T, b"r", (DeleteRange(b"c", 5, 4),)), InvalidArgument),
    (RowMutation(T, b"r", (Put(b"c", 1, b"v"),), (NoVersionIn(b"c", 5, 4),)), InvalidArgument),
    (RowMutation(T, b"r", (Put(b"c", 1, b"v"),), (VersionAt(b"", 1),)), InvalidArgument),
    (RowMutation(T, b"r", (Put(b"c", 1, b"v"),), (ValuePrefixAt(b"", 1, b"p"),)), InvalidArgument),
    (RowMutation(T, b"r", (Put(b"c", 1, b"v"),), (NoValuePrefixAt(b"c", MAX_TS + 1, b"p"),)),
     InvalidArgument),
    (RowMutation(T, b"r", (Put(b"c", 1, b"v"),),
                 (ValuePrefixAt(b"c", 1, b"p" * (4 * 1024 * 1024 + 1)),)), LimitExceeded),
    (RowMutation(T, b"r", (Put(b"c", 1, b"v"),),
                 (NoValuePrefixAt(b"c" * 4097, 1, b"p"),)), LimitExceeded),
])
def test_bad_mutations_are_refused_and_nothing_is_written(store: Store, mutation: RowMutation,
                                                          error: type[Exception]) -> None:
    good = RowMutation(b"t2", b"fine", (Put(b"c", 1, b"v"),))
    with pytest.raises(error):
        store.mutate_rows([good, mutation])
    assert scan_all(store) == []


def test_oversize_batch_is_refused(store: Store) -> None:
    batch = [RowMutation(T, b"r%05d" % i, (Put(b"c", 1, b"v"),)) for i in range(10_001)]
    with pytest.raises(LimitExceeded):
        store.mutate_rows(batch)
    assert scan_all(store) == []
    assert len(store.mutate_rows(batch[:10_000])) == 10_000


@pytest.mark.parametrize("call", [
    lambda s: s.put(T, 5, b"c", 1, b"v"),
    lambda s: s.put(T, b"r", b"c", "1", b"v"),
    lambda s: s.put(T, b"r", b"c", 1.0, b"v"),
    lambda s: s.put(T, b"r", b"c", True, b"v"),
    lambda s: s.put(T, b"r", b"c", 1, 7),
    lambda s: s.put(T, b"r", None, 1, b"v"),
    lambda s: s.mutate_rows([RowMutation("t", b"r", (Put(b"c", 1, b"v"),))]),  # type: ignore[arg-type]
    lambda s: s.mutate_rows([RowMutation(T, b"r", (Put(b"c", 1, "v"),))]),  # type: ignore[arg-type]
    lambda s: s.mutate_rows([RowMutation(T, b"r", ("put",))]),  # type: ignore[arg-type]
    lambda s: s.mutate_rows([RowMutation(T, b"r", (), ("cond",))]),  # type: ignore[arg-type]
    lambda s: s.mutate_rows([RowMutation(T, b"r", (Put(b"c", 1, b"v"),), (
        ValuePrefixAt(b"c", 1, "p"),))]),  # type: ignore[arg-type]
    lambda s: s.mutate_rows([RowMutation(T, b"r", (Put(b"c", 1, b"v"),), (
        NoValuePrefixAt(b"c", 1, None),))]),  # type: ignore[arg-type]
    lambda s: s.mutate_rows([(T, b"r")]),
    lambda s: s.read_rows([RowRead(T, bytearray(b"r"))]),  # type: ignore[arg-type]
    lambda s: s.scan(ScanRequest("t")),  # type: ignore[arg-type]
    lambda s: s.read_row(T, b"r", time_range=(0, 5)),
])
def test_wrong_types_raise_type_error_before_any_io(store: Store, call: object) -> None:
    with pytest.raises(TypeError):
        call(store)  # type: ignore[operator]
    assert scan_all(store) == []


@pytest.mark.parametrize("call", [
    lambda s: s.get(T, b"", b"c"),
    lambda s: s.get(T, b"r", b""),
    lambda s: s.get(T, b"r", b"c", -1),
    lambda s: s.read_row(T, b"r", columns=[b"a"], column_prefixes=[b"b"]),
    lambda s: s.read_row(T, b"r", time_range=TimeRange(5, 4)),
    lambda s: s.read_row(T, b"r", max_versions=-1),
    lambda s: s.read_row(T, b"r", max_versions=1 << 32),
    lambda s: s.read_rows([RowRead(T, b"r")] * 10_001),
    lambda s: list(s.scan_rows(T, b"b", b"a")),
    lambda s: list(s.scan_rows(T, b"")),
    lambda s: list(s.scan_rows(T, limit=-1)),
    lambda s: list(s.scan_rows(T, column_prefixes=[b"p" * 4097])),
    lambda s: s.split_tablet(T, b""),
    lambda s: s.list_tablets(b""),
])
def test_bad_reads_raise_value_error(store: Store, call: object) -> None:
    with pytest.raises(ValueError):
        call(store)  # type: ignore[operator]


class Subclass(bytes):
    pass


def test_bytes_subclasses_are_converted_by_the_convenience_methods(store: Store) -> None:
    store.put(Subclass(b"t"), Subclass(b"r"), Subclass(b"c"), 1, Subclass(b"v"))
    cell = store.get(T, b"r", Subclass(b"c"))
    assert cell == Cell(b"c", 1, b"v") and type(cell.column) is bytes
    with pytest.raises(TypeError):  # the primitives take exactly bytes
        store.mutate_rows([RowMutation(T, Subclass(b"r"), (Put(b"c", 1, b"v"),))])


def test_a_delete_range_deletes_a_put_made_before_it_in_the_same_write(store: Store) -> None:
    """Mutations apply in order: a DeleteRange after a Put of its range deletes it, as a
    DeleteVersion does, also when the Put came in an earlier row mutation of one atomic
    write (its ``finish``)."""
    assert store.mutate_rows([RowMutation(T, b"r1", (
        Put(b"c", 5, b"v"), DeleteRange(b"c")))])[0].applied
    assert store.read_row(T, b"r1") == []
    assert store.mutate_rows([RowMutation(T, b"r2", (
        Put(b"c", 5, b"v"), Put(b"c", 9, b"w"), DeleteRange(b"c", 6, 10)))])[0].applied
    assert store.read_row(T, b"r2") == [Cell(b"c", 5, b"v")]
    if isinstance(store, LocalStore):  # the atomic write's finish is in-process only
        store.mutate_atomic([RowMutation(T, b"r3", (Put(b"c", 7, b"w"),))],
                            lambda: [RowMutation(T, b"r3", (DeleteRange(b"c"),))])
        assert store.read_row(T, b"r3") == []


def test_one_column_name_where_a_list_is_asked_for_is_refused(store: Store) -> None:
    """A str is iterable too: "name" would read the columns n, a, m and e."""
    must_put(store, b"r", b"a", 1, b"not the name")
    for call in (lambda: store.read_row(T, b"r", columns="name"),  # type: ignore[arg-type]
                 lambda: store.read_row(T, b"r", column_prefixes=b"na"),  # type: ignore[arg-type]
                 lambda: list(store.scan_rows(T, columns="name"))):  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="list of names"):
            call()


def test_closing_under_a_call_that_outlasts_the_wait_leaves_leveldb_open(
        tmp_path: Path) -> None:
    """Closing LevelDB under a running call crashes the process (it frees what the call
    uses): a close whose wait ends with a call still running says so and closes nothing;
    no new call is accepted."""
    store = LocalStore(tmp_path / "data")
    must_put(store, b"r", b"c", 1, b"v")
    datadir = store.engine._dir  # noqa: SLF001 - a call in flight, held by the test
    datadir.enter()
    try:
        with pytest.raises(StorageError, match="1 calls .* still run after 0.05s"):
            store.engine.close(timeout=0.05)
        assert not datadir.db.closed
        assert datadir.db.get(b"anything") is None  # usable by the call in flight
        with pytest.raises(StoreClosed):
            store.read_row(T, b"r")
    finally:
        datadir.exit()

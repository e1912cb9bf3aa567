"""The public contract of Client and Transaction: arguments, lifecycle, retries, encodings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bigtable_lite import (
    DEFAULT_LIMITS,
    InvalidArgument,
    LimitExceeded,
    Limits,
    LocalStore,
    UncheckedStore,
)
from percolator import (
    Client,
    CommitConflict,
    CommitUndetermined,
    OracleError,
    PercolatorError,
    Transaction,
    TransactionError,
    _driver,
    _local,
    layout,
    records,
)
from percolator._local import LocalBackend
from percolator.clock import FakeClock
from percolator.oracle import Oracle

from .steps import log_entries
from .txn_fixtures import (  # noqa: F401  (fixtures)
    ALL_KINDS,
    CountingBackend,
    client_fixture,
    client_kind_fixture,
    commit_primary_only,
    committed_state,
    counting_client,
    load,
    lock_cells,
    must_commit,
    must_conflict,
    raw_cells,
    running_server,
    server_fixture,
    snapshot,
)

LIMITS = DEFAULT_LIMITS


@pytest.fixture
def counted(client_kind: str, request: pytest.FixtureRequest, tmp_path: Path
            ) -> Iterator[tuple[Client, CountingBackend]]:
    """An embedded or remote client whose every backend call (the transaction code's only
    way to the data: a step in-process, or a command to the node) is counted."""
    c, backend = counting_client(client_kind, request, tmp_path)
    with c:
        yield c, backend


def test_public_surface() -> None:
    import percolator

    assert {"Client", "Transaction", "CommitConflict", "CommitUndetermined", "TransactionError",
            "PercolatorError"} <= set(percolator.__all__)
    assert issubclass(CommitConflict, TransactionError)
    assert issubclass(CommitUndetermined, TransactionError)
    assert not issubclass(CommitUndetermined, CommitConflict)  # never reported as failed
    assert issubclass(TransactionError, PercolatorError)


# --- argument checks, all before any I/O ------------------------------------------------------


def test_str_is_accepted_and_utf8_encoded(client: Client) -> None:
    txn = client.begin()
    txn.set("ключ", "列", "välue")
    assert txn.get("ключ".encode(), "列".encode()) == "välue".encode()
    must_commit(txn)
    reader = client.begin()
    assert reader.get("ключ", "列") == "välue".encode()
    assert list(reader.scan("к", None, columns=["列"])) == [
        ("ключ".encode(), "列".encode(), "välue".encode())]
    assert reader.get_many([("ключ", "列")]) == {("ключ".encode(), "列".encode()):
                                                 "välue".encode()}


BAD_KEYS: list[tuple[Any, Any, type[Exception]]] = [
    (b"", b"c", ValueError),
    ("", b"c", ValueError),
    (b"r", b"", ValueError),
    (b"r", "", ValueError),
    (b"x" * (LIMITS.max_row_bytes + 1), b"c", ValueError),
    (b"r", b"c" * LIMITS.max_column_bytes, ValueError),  # one byte goes to the kind prefix
    (b"r", b"\x00hidden", ValueError),  # reserved for the system
    (b"r", "\x00hidden", ValueError),
    (None, b"c", TypeError),
    (b"r", None, TypeError),
    (1, b"c", TypeError),
    (b"r", 1, TypeError),
    (bytearray(b"r"), b"c", TypeError),
]


@pytest.mark.parametrize(("row", "column", "error"), BAD_KEYS)
def test_bad_keys_raise_before_any_io(counted: tuple[Client, CountingBackend], row: Any,
                                      column: Any, error: type[Exception]) -> None:
    client, backend = counted
    txn = client.begin()
    before = backend.calls
    with pytest.raises(error):
        txn.set(row, column, b"v")
    with pytest.raises(error):
        txn.delete(row, column)
    with pytest.raises(error):
        txn.get(row, column)
    with pytest.raises(error):
        txn.get_many([(b"ok", b"ok"), (row, column)])
    # The column is the bad part: a scan's column filter is checked too.
    if type(row) is bytes and row == b"r":
        with pytest.raises(error):
            txn.scan(columns=[b"ok", column])
    assert backend.calls == before, "a bad argument reached the backend"
    assert txn.writes == 0
    assert txn.active  # a caller's mistake does not end the transaction
    assert txn.commit() == txn.start_ts  # nothing was buffered: a free, read-only commit
    assert backend.mutations == 0


BAD_VALUES: list[tuple[Any, type[Exception]]] = [
    (None, TypeError),
    (1, TypeError),
    (1.5, TypeError),
    (bytearray(b"v"), TypeError),
    (memoryview(b"v"), TypeError),
    (b"v" * (LIMITS.max_value_bytes + 1), ValueError),
]


@pytest.mark.parametrize(("value", "error"), BAD_VALUES, ids=lambda v: type(v).__name__)
def test_bad_values_raise_before_any_io(counted: tuple[Client, CountingBackend], value: Any,
                                        error: type[Exception]) -> None:
    client, backend = counted
    txn = client.begin()
    txn.set(b"r", b"good", b"kept")
    before = backend.calls
    with pytest.raises(error):
        txn.set(b"r", b"bad", value)
    assert backend.calls == before
    assert txn.writes == 1
    assert txn.get(b"r", b"bad") is None  # the bad write was not buffered either
    must_commit(txn)
    assert committed_state(client) == {(b"r", b"good"): b"kept"}


def test_bad_scan_bounds_raise_before_any_io(counted: tuple[Client, CountingBackend]) -> None:
    client, backend = counted
    txn = client.begin()
    before = backend.calls
    bad: Any = 1
    with pytest.raises(TypeError):
        txn.scan(bad)
    with pytest.raises(TypeError):
        txn.scan(None, bad)
    with pytest.raises(ValueError):
        txn.scan(columns=[b""])
    assert backend.calls == before


def test_inverted_scan_range_raises_value_error(client: Client) -> None:
    txn = client.begin()
    with pytest.raises(ValueError):
        list(txn.scan(b"c", b"a"))


def test_bad_scan_range_raises_before_any_io(counted: tuple[Client, CountingBackend]) -> None:
    client, backend = counted
    txn = client.begin()
    before = backend.calls
    with pytest.raises(ValueError):
        txn.scan(b"c", b"a")  # inverted
    with pytest.raises(ValueError):
        txn.scan(b"x" * (LIMITS.max_row_bytes + 1))
    assert backend.calls == before


def test_limits_are_inclusive(client: Client) -> None:
    row = b"r" * LIMITS.max_row_bytes
    column = b"c" * (LIMITS.max_column_bytes - 1)
    value = b"v" * LIMITS.max_value_bytes
    txn = client.begin()
    txn.set(row, column, value)
    must_commit(txn)
    assert client.begin().get(row, column) == value


def test_bad_arguments_write_nothing(client: Client) -> None:
    """Whatever a caller got wrong, the store holds exactly what it held before."""
    load(client, {(b"r", b"c"): b"v"})
    stored = raw_cells(client)
    for row, column, _ in BAD_KEYS:
        txn = client.begin()
        with pytest.raises((ValueError, TypeError)):
            txn.set(row, column, b"v")
        txn.commit()
    for value, _ in BAD_VALUES:
        txn = client.begin()
        with pytest.raises((ValueError, TypeError)):
            txn.set(b"r", b"c", value)
        txn.commit()
    assert raw_cells(client) == stored


class BytesSubclass(bytes):
    pass


def test_bytes_subclass_keys_are_rejected_or_stored(tmp_path: Path) -> None:
    """Values of a bytes subclass are refused at once; keys must be refused as early, or
    work.  Either way a commit must not fail half-way and leave locks behind."""
    clock = FakeClock()
    with Client.embedded(tmp_path / "data", clock=clock) as client:
        for row, column in ((b"a", BytesSubclass(b"d")), (BytesSubclass(b"b"), b"c")):
            txn = client.begin()
            txn.set(b"a", b"c", b"primary")
            try:
                txn.set(row, column, b"v")
            except (TypeError, ValueError):
                txn.rollback()
                continue
            must_commit(txn)
            assert client.begin().get(row, column) == b"v"
        assert not [cell for _, _, cell in raw_cells(client)
                    if cell.column.startswith(layout.LOCK)], "locks left behind"


class FailingOracle:
    """An oracle that refuses timestamps once ``failing`` is set (delegates otherwise)."""

    def __init__(self, inner: Oracle) -> None:
        self.inner = inner
        self.failing = False

    def get_timestamp(self) -> int:
        if self.failing:
            raise OracleError("oracle down (test)")
        return self.inner.get_timestamp()

    def get_timestamps(self, count: int) -> int:
        if self.failing:
            raise OracleError("oracle down (test)")
        return self.inner.get_timestamps(count)

    def timestamp_if_ready(self, wait: float) -> int | None:
        return None if self.failing else self.inner.timestamp_if_ready(wait)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("one_phase", [True, False], ids=["one-phase", "two-phase"])
def test_commit_failing_before_the_commit_point_leaves_no_locks(tmp_path: Path,
                                                                 one_phase: bool) -> None:
    """The commit step's commit_ts request fails after every cell was locked: whichever
    path the commit took, its locks are undone at once, not left to expire."""
    store = LocalStore(tmp_path / "data")
    oracle = FailingOracle(Oracle(store))
    clock = FakeClock()
    backend = LocalBackend(store, oracle, clock=clock)  # type: ignore[arg-type]
    with Client(backend, clock=clock, one_phase=one_phase) as client:
        load(client, {(b"a", b"c"): b"old", (b"b", b"c"): b"old"})
        txn = client.begin()
        txn.set(b"a", b"c", b"new")
        txn.set(b"b", b"c", b"new")
        oracle.failing = True  # the commit_ts request fails, after both rows are locked
        with pytest.raises(OracleError):
            txn.commit()
        oracle.failing = False
        assert not txn.active
        before = clock.now_ms()
        reader = client.begin()
        assert reader.get_many([(b"a", b"c"), (b"b", b"c")]) == {
            (b"a", b"c"): b"old", (b"b", b"c"): b"old"}
        assert clock.now_ms() == before, \
            f"the reader waited {clock.now_ms() - before} ms for locks of a failed commit"
        assert lock_cells(client) == [], "locks of the failed commit left behind"


# --- lifecycle -------------------------------------------------------------------------------


USES: dict[str, Callable[[Transaction], object]] = {
    "get": lambda t: t.get(b"r", b"c"),
    "get_many": lambda t: t.get_many([(b"r", b"c")]),
    "scan": lambda t: t.scan(),
    "set": lambda t: t.set(b"r", b"c", b"v"),
    "delete": lambda t: t.delete(b"r", b"c"),
    "commit": lambda t: t.commit(),
}


@pytest.mark.parametrize("use", sorted(USES))
@pytest.mark.parametrize("end", ["commit", "read-only commit", "rollback", "conflict"])
def test_use_after_the_end_raises(client: Client, use: str, end: str) -> None:
    txn = client.begin()
    if end == "commit":
        txn.set(b"r", b"c", b"1")
        txn.commit()
    elif end == "read-only commit":
        txn.commit()
    elif end == "rollback":
        txn.set(b"r", b"c", b"1")
        txn.rollback()
    else:
        txn.set(b"r", b"c", b"1")
        other = client.begin()
        other.set(b"r", b"c", b"2")
        other.commit()
        must_conflict(txn)
    assert not txn.active
    stored = raw_cells(client)
    with pytest.raises(TransactionError):
        USES[use](txn)
    txn.rollback()  # harmless once ended
    assert raw_cells(client) == stored


def test_rollback_discards_buffered_writes(client: Client) -> None:
    txn = client.begin()
    txn.set(b"r", b"c", b"v")
    txn.rollback()
    txn.rollback()  # idempotent
    assert raw_cells(client) == []
    assert committed_state(client) == {}


def test_begin_after_close_raises(tmp_path: Path) -> None:
    client = Client.embedded(tmp_path / "data")
    client.close()
    client.close()  # idempotent
    with pytest.raises(TransactionError):
        client.begin()


def test_transaction_context_commits_on_normal_exit(client: Client) -> None:
    with client.transaction() as txn:
        txn.set(b"r", b"c", b"v")
    assert not txn.active
    assert txn.commit_ts is not None and txn.commit_ts > txn.start_ts
    assert committed_state(client) == {(b"r", b"c"): b"v"}


def test_transaction_context_rolls_back_on_exception(client: Client) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), client.transaction() as txn:
        txn.set(b"r", b"c", b"v")
        raise Boom
    assert not txn.active
    assert txn.commit_ts is None
    with pytest.raises(TransactionError):
        txn.get(b"r", b"c")
    assert raw_cells(client) == []


def test_transaction_context_after_explicit_end(client: Client) -> None:
    with client.transaction() as txn:
        txn.set(b"r", b"c", b"v")
        txn.rollback()
    assert committed_state(client) == {}
    with client.transaction() as txn:
        txn.set(b"r", b"c", b"w")
        commit_ts = txn.commit()
    assert txn.commit_ts == commit_ts
    assert committed_state(client) == {(b"r", b"c"): b"w"}


def test_transaction_context_raises_commit_conflict(client: Client) -> None:
    with pytest.raises(CommitConflict), client.transaction() as txn:
        txn.set(b"r", b"c", b"mine")
        with client.transaction() as other:
            other.set(b"r", b"c", b"theirs")
    assert committed_state(client) == {(b"r", b"c"): b"theirs"}


# --- Client.run --------------------------------------------------------------------------------


@pytest.fixture
def fake_clock_client(tmp_path: Path) -> Iterator[Client]:
    """Embedded, with a fake clock so run()'s backoff does not sleep."""
    with Client.embedded(tmp_path / "data", clock=FakeClock()) as c:
        yield c


def conflicting(client: Client, conflicts: int) -> tuple[Callable[[Transaction], int], list[int]]:
    """A transaction function whose first ``conflicts`` runs are sure to conflict.

    Run i writes column c<i>; while it runs, another transaction commits the same
    cell, so run i's commit meets a newer write (first-committer-wins).  Returns the
    function and the list of start_ts of its runs.
    """
    runs: list[int] = []

    def fn(txn: Transaction) -> int:
        i = len(runs)
        runs.append(txn.start_ts)
        column = b"c%d" % i
        txn.set(b"r", column, b"run %d" % i)
        if i < conflicts:
            with client.transaction() as other:
                other.set(b"r", column, b"other %d" % i)
        return i

    return fn, runs


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
def test_run_gives_up_after_max_attempts(fake_clock_client: Client, max_attempts: int) -> None:
    client = fake_clock_client
    fn, runs = conflicting(client, conflicts=100)
    with pytest.raises(CommitConflict) as info:
        client.run(fn, max_attempts=max_attempts)
    assert len(runs) == max_attempts
    assert runs == sorted(set(runs)), "each run must be a fresh transaction"
    last = max_attempts - 1
    assert (info.value.row, info.value.column) == (b"r", b"c%d" % last), \
        "run must re-raise the last CommitConflict"
    assert committed_state(client) == {(b"r", b"c%d" % i): b"other %d" % i
                                       for i in range(max_attempts)}


def test_run_retries_until_success(fake_clock_client: Client) -> None:
    client = fake_clock_client
    fn, runs = conflicting(client, conflicts=3)
    assert client.run(fn, max_attempts=4) == 3
    assert len(runs) == 4
    state = committed_state(client)
    assert state[(b"r", b"c3")] == b"run 3"
    assert [state[(b"r", b"c%d" % i)] for i in range(3)] == [b"other 0", b"other 1", b"other 2"]


def test_run_default_is_ten_attempts(fake_clock_client: Client) -> None:
    fn, runs = conflicting(fake_clock_client, conflicts=100)
    with pytest.raises(CommitConflict):
        fake_clock_client.run(fn)
    assert len(runs) == 10


@pytest.mark.parametrize("error", [ValueError("bad"), KeyError("k"),
                                   TransactionError("not a conflict"),
                                   CommitUndetermined("unknown outcome")],
                         ids=lambda e: type(e).__name__)
def test_run_does_not_retry_other_exceptions(client: Client, error: Exception) -> None:
    runs: list[int] = []

    def fn(txn: Transaction) -> None:
        runs.append(txn.start_ts)
        txn.set(b"r", b"c", b"v")
        raise error

    with pytest.raises(type(error)) as info:
        client.run(fn, max_attempts=5)
    assert info.value is error
    assert len(runs) == 1
    assert raw_cells(client) == []  # rolled back, nothing written


def test_run_returns_the_result_and_commits(client: Client) -> None:
    def fn(txn: Transaction) -> bytes | None:
        old = txn.get(b"r", b"c")
        txn.set(b"r", b"c", b"v")
        return old

    assert client.run(fn) is None
    assert client.run(fn) == b"v"


def test_run_accepts_a_function_that_ends_its_transaction(client: Client) -> None:
    def commit_inside(txn: Transaction) -> int:
        txn.set(b"r", b"c", b"v")
        return txn.commit()

    assert client.run(lambda txn: txn.rollback()) is None
    assert client.run(commit_inside) > 0
    assert committed_state(client) == {(b"r", b"c"): b"v"}


@pytest.mark.parametrize("max_attempts", [0, -1])
def test_run_rejects_a_bad_max_attempts(client: Client, max_attempts: int) -> None:
    calls: list[int] = []
    with pytest.raises(ValueError):
        client.run(lambda txn: calls.append(1), max_attempts=max_attempts)
    assert calls == []


# --- values, deletes, scans, odd bytes ---------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, records.INLINE_VALUE_MAX, records.INLINE_VALUE_MAX + 1,
                                  100_000])
def test_values_round_trip(client: Client, size: int) -> None:
    value = bytes(i % 251 for i in range(size))
    load(client, {(b"r", b"c"): value, (b"s", b"c"): b"x"})
    reader = client.begin()
    got = reader.get(b"r", b"c")
    assert got == value and got is not None
    assert reader.get_many([(b"r", b"c")]) == {(b"r", b"c"): value}
    assert snapshot(reader) == {(b"r", b"c"): value, (b"s", b"c"): b"x"}


def test_what_commits_can_be_read_back_in_one_call(client: Client, client_kind: str,
                                                  request: pytest.FixtureRequest) -> None:
    """A commit splits its store calls to fit the message limit (64 MiB); a get_many or a
    scan of the same cells must too, or committed data becomes unreadable in bulk."""
    size = LIMITS.max_value_bytes
    count = LIMITS.max_message_bytes // size + 1
    keys = [(b"big%02d" % i, b"c") for i in range(count)]
    txn = client.begin()
    for i, (row, column) in enumerate(keys):
        txn.set(row, column, bytes([i]) * size)
    must_commit(txn)
    reader = client.begin()
    assert [len(reader.get(*key) or b"") for key in keys] == [size] * count  # one by one
    got = reader.get_many(keys)
    assert [got[key] == bytes([i]) * size for i, key in enumerate(keys)] == [True] * count
    assert [(row, len(value)) for row, _, value in reader.scan()] == [
        (row, size) for row, _ in keys]


def test_long_values_are_stored_in_the_data_column(client: Client) -> None:
    short = b"s" * records.INLINE_VALUE_MAX
    long = b"l" * (records.INLINE_VALUE_MAX + 1)
    load(client, {(b"r", b"short"): short, (b"r", b"long"): long})
    data = {(row, cell.column): cell.value for table, row, cell in raw_cells(client)
            if cell.column.startswith(layout.DATA)}
    assert data == {(b"r", layout.data_column(b"long")): long}
    assert client.begin().get_many([(b"r", b"short"), (b"r", b"long")]) == {
        (b"r", b"short"): short, (b"r", b"long"): long}


def test_empty_value_is_not_absent(client: Client) -> None:
    load(client, {(b"r", b"c"): b""})
    reader = client.begin()
    assert reader.get(b"r", b"c") == b""
    assert list(reader.scan()) == [(b"r", b"c", b"")]


def test_deletes(client: Client) -> None:
    long = b"L" * 1000
    load(client, {(b"a", b"c"): b"1", (b"b", b"c"): long, (b"c", b"c"): b"3"})
    txn = client.begin()
    txn.delete(b"a", b"c")
    txn.delete(b"b", b"c")
    txn.delete(b"never", b"c")
    must_commit(txn)
    reader = client.begin()
    assert reader.get(b"a", b"c") is None
    assert reader.get(b"b", b"c") is None
    assert reader.get(b"never", b"c") is None
    assert list(reader.scan()) == [(b"c", b"c", b"3")]
    load(client, {(b"a", b"c"): b"again"})  # a put after a delete
    assert committed_state(client) == {(b"a", b"c"): b"again", (b"c", b"c"): b"3"}


def test_scan_ranges_and_column_filters(client: Client) -> None:
    rows = [b"a", b"ab", b"b", b"ba", b"c"]
    load(client, {(row, col): row + b"/" + col for row in rows for col in (b"x", b"y", b"z")})
    reader = client.begin()

    def scanned(*args: Any, **kwargs: Any) -> list[tuple[bytes, bytes]]:
        return [(row, col) for row, col, _ in reader.scan(*args, **kwargs)]

    every = [(row, col) for row in rows for col in (b"x", b"y", b"z")]
    assert scanned() == every
    assert scanned(b"ab", b"ba") == [k for k in every if b"ab" <= k[0] < b"ba"]  # [start, end)
    assert scanned(b"b") == [k for k in every if k[0] >= b"b"]
    assert scanned(None, b"b") == [k for k in every if k[0] < b"b"]
    assert scanned(b"b", b"b") == []
    assert scanned(b"zz") == []
    assert scanned(columns=[b"y"]) == [(row, b"y") for row in rows]
    assert scanned(columns=[b"z", b"x", b"x"]) == [k for k in every if k[1] != b"y"]
    assert scanned(columns=[b"nothing"]) == []
    assert scanned(b"b", None, [b"x", b"z"]) == [k for k in every
                                                 if k[0] >= b"b" and k[1] != b"y"]
    assert scanned(start_row="a", end_row="b", columns=["x"]) == [(b"a", b"x"), (b"ab", b"x")]
    assert all(value == row + b"/" + col for row, col, value in reader.scan())


def test_scan_with_an_empty_column_filter_selects_nothing(client: Client) -> None:
    load(client, {(b"a", b"x"): b"stored"})
    txn = client.begin()
    txn.set(b"b", b"x", b"buffered")
    assert list(txn.scan(columns=[])) == []


def test_scan_spans_many_batches(client: Client) -> None:
    cells = {(b"row%05d" % i, b"c"): b"%d" % i for i in range(700)}
    load(client, cells)
    reader = client.begin()
    assert snapshot(reader) == cells
    assert snapshot(reader, b"row00100", b"row00600") == {
        k: v for k, v in cells.items() if b"row00100" <= k[0] < b"row00600"}


def test_odd_bytes_in_rows_and_columns(client: Client) -> None:
    rows = [b"\x00", b"\x00\x00", b"a\x00b", b"\x7f", b"\xff", b"\xff\xff", b"\xff\x00"]
    columns = [b"c\x00", b"\xff", b"\x01", b"\xff\xff\x00"]
    cells = {(row, col): row + col for row in rows for col in columns}
    load(client, cells)
    reader = client.begin()
    assert snapshot(reader) == cells
    assert list(reader.scan()) == sorted((r, c, v) for (r, c), v in cells.items())
    assert reader.get_many(list(cells)) == cells
    assert snapshot(reader, b"\x00\x00", b"\xff") == {
        k: v for k, v in cells.items() if b"\x00\x00" <= k[0] < b"\xff"}
    assert snapshot(reader, b"\xff", None, [b"\xff"]) == {
        k: v for k, v in cells.items() if k[0] >= b"\xff" and k[1] == b"\xff"}


def test_reserved_columns_are_rejected(client: Client) -> None:
    txn = client.begin()
    for call in (lambda: txn.set(b"r", b"\x00c", b"v"), lambda: txn.get(b"r", b"\x00"),
                 lambda: txn.delete(b"r", b"\x00c"), lambda: txn.scan(columns=[b"\x00c"]),
                 lambda: txn.get_many([(b"r", b"\x00c")])):
        with pytest.raises(ValueError):
            call()
    txn.set(b"r", b"c\x00", b"v")  # 0x00 elsewhere in a column is ordinary
    must_commit(txn)
    assert committed_state(client) == {(b"r", b"c\x00"): b"v"}


# --- timestamps --------------------------------------------------------------------------------


def test_start_ts_follows_every_acknowledged_commit(client: Client) -> None:
    last = 0
    for i in range(20):
        txn = client.begin()
        assert txn.start_ts > last
        txn.set(b"r%d" % (i % 3), b"c", b"%d" % i)
        last = must_commit(txn)
        assert last > txn.start_ts


def test_start_ts_follows_commits_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "data"
    last = 0
    for i in range(4):
        with Client.embedded(path) as client:
            txn = client.begin()
            assert txn.start_ts > last, f"reopen {i}: start_ts went back"
            assert txn.get(b"r", b"c") == (b"%d" % (i - 1) if i else None)
            txn.set(b"r", b"c", b"%d" % i)
            last = must_commit(txn)
            # A read-only commit's timestamp is covered too.
            reader = client.begin()
            assert reader.start_ts > last
            last = reader.commit()


def test_start_ts_follows_commits_of_another_remote_client(server: str) -> None:
    with Client.connect(server, table=b"api_two_clients") as a, \
            Client.connect(server, table=b"api_two_clients") as b:
        for i in range(10):
            writer, reader_client = (a, b) if i % 2 else (b, a)
            txn = writer.begin()
            txn.set(b"r", b"c", b"%d" % i)
            txn.set(b"s", b"c", b"%d" % i)
            commit_ts = must_commit(txn)
            reader = reader_client.begin()
            assert reader.start_ts > commit_ts
            assert reader.get_many([(b"r", b"c"), (b"s", b"c")]) == {
                (b"r", b"c"): b"%d" % i, (b"s", b"c"): b"%d" % i}


def test_start_ts_follows_commits_across_server_restart(tmp_path: Path) -> None:
    last = 0
    for i in range(3):
        with running_server(tmp_path / "server") as address, \
                Client.connect(address) as client:
            txn = client.begin()
            assert txn.start_ts > last, f"restart {i}: start_ts went back"
            assert txn.get_many([(b"r", b"c"), (b"s", b"c")]) == {
                (b"r", b"c"): b"%d" % (i - 1) if i else None,
                (b"s", b"c"): b"%d" % (i - 1) if i else None}
            txn.set(b"r", b"c", b"%d" % i)
            txn.set(b"s", b"c", b"%d" % i)  # a secondary, in another row
            last = must_commit(txn)


def test_get_many_system_reads_system_cells_in_one_call(
        counted: tuple[Client, CountingBackend]) -> None:
    client, backend = counted
    with client.transaction() as txn:
        txn.set_system(b"a", b"state", b"1")
        txn.set_system(b"b", b"state", b"2")
        txn.set(b"a", b"state", b"user")  # a user cell of the same name is another cell
    txn = client.begin()
    txn.set_system(b"b", b"state", b"own")  # own writes win, as with get_many
    before = backend.counts["read"]
    got = txn.get_many_system([(b"a", b"state"), (b"b", b"state"), (b"c", b"state")])
    assert got == {(b"a", b"state"): b"1", (b"b", b"state"): b"own", (b"c", b"state"): None}
    assert backend.counts["read"] - before == 1
    assert txn.get_many([(b"a", b"state")]) == {(b"a", b"state"): b"user"}
    assert got[(b"a", b"state")] == txn.get_system(b"a", b"state")
    with pytest.raises(ValueError):
        txn.get_many_system([(b"", b"state")])


@pytest.mark.parametrize("lazy", [False, True])
def test_get_many_of_more_rows_than_one_store_call_takes(
        counted: tuple[Client, CountingBackend], lazy: bool) -> None:
    """A read of more rows than the store's batch limit is cut into calls of one snapshot."""
    client, backend = counted
    per_call = client.limits.max_batch_rows // 2  # two store reads per row
    rows = per_call + 700
    keys = [(b"many%06d" % i, b"c") for i in range(rows)]
    with client.transaction() as txn:
        for i, (row, column) in enumerate(keys):
            if i % 3:
                txn.set(row, column, b"%d" % i)
    txn = client.begin(lazy=lazy)
    before = backend.counts["read"]
    got = txn.get_many(keys)
    assert backend.counts["read"] - before == 2, "one read call per batch of rows"
    assert got == {key: (b"%d" % i if i % 3 else None) for i, key in enumerate(keys)}
    with client.transaction() as later:  # a commit after the snapshot is not seen
        later.set(*keys[1], b"later")
    assert txn.get_many(keys)[keys[1]] == b"1"


@pytest.mark.parametrize("one_phase", [True, False], ids=["one-phase", "two-phase"])
def test_steps_cut_their_store_calls_to_the_batch_limit(tmp_path: Path, one_phase: bool
                                                        ) -> None:
    """Limits too tight for the unchecked view put a checking store under the steps: with a
    batch limit of 64 rows, a transaction of 300 rows is prewritten, committed, read
    (get_many and scan) and, left with its secondaries locked, rolled forward by readers,
    every store call within the limit (the store refuses any other)."""
    limits = Limits(max_batch_rows=64, max_value_bytes=8_000)
    store = LocalStore(tmp_path / "d", limits=limits)
    assert not _local._requests_fit(store)
    with Client(LocalBackend(store, Oracle(store)), one_phase=one_phase) as client:
        client.register_observed_columns([b"c"])  # notifications in the commit's write too
        keys = [(b"r%04d" % i, b"c") for i in range(300)]
        with client.transaction() as txn:
            for i, key in enumerate(keys):
                txn.set(*key, b"%d" % i)
        reader = client.begin()
        assert reader.get_many(keys) == {key: b"%d" % i for i, key in enumerate(keys)}
        assert snapshot(reader) == {key: b"%d" % i for i, key in enumerate(keys)}
        _, commit_ts = commit_primary_only(client, {key: b"x" for key in keys})
        assert len(lock_cells(client)) == len(keys) - 1
        assert client.begin().get_many(keys) == {key: b"x" for key in keys}
        assert lock_cells(client) == []
        notes = {(e.row, e.column, e.change_ts) for e in log_entries(client)}
        assert {(row, column) for row, column, ts in notes if ts == commit_ts} == set(keys)
        assert len(notes) == 2 * len(keys), "one notification per commit of each cell"


def test_embedded_protocol_skips_store_checks_but_the_client_store_keeps_them(
        tmp_path: Path) -> None:
    """The transaction protocol's requests (built from cells Transaction checked) go to the
    LocalStore's unchecked view; the store users reach through the client still checks."""
    with Client.embedded(tmp_path / "d") as client:
        assert isinstance(client.backend, LocalBackend)
        assert isinstance(client.backend.ctx.store.inner, UncheckedStore)  # type: ignore[attr-defined]
        assert isinstance(client.store, LocalStore)
        with pytest.raises(InvalidArgument, match="row must not be empty"):
            client.store.put(b"t", b"", b"c", 1, b"v")
        with client.transaction() as txn:
            txn.set(b"r", b"c", b"v")
        assert client.begin().get(b"r", b"c") == b"v"


def test_protocol_store_is_checked_when_limits_could_be_exceeded(tmp_path: Path) -> None:
    """A lock record carries the primary's row and column: with a value limit too small for
    the largest one, the protocol's requests are checked by the store after all, so an
    oversize lock is refused whole instead of written."""
    with LocalStore(tmp_path / "default") as store:
        assert _local._requests_fit(store)
    tight = Limits(max_value_bytes=DEFAULT_LIMITS.max_row_bytes)
    store = LocalStore(tmp_path / "tight", limits=tight)
    assert not _local._requests_fit(store)
    # Two-phase: a lock record is what could outgrow the limit (one phase writes none).
    with Client(LocalBackend(store, Oracle(store)), one_phase=False) as client:
        assert isinstance(client.backend, LocalBackend)
        assert client.backend.ctx.store.inner is store  # type: ignore[attr-defined]
        with client.transaction() as txn:
            txn.set(b"r", b"c", b"v")
        txn = client.begin()
        txn.set(b"r" * tight.max_row_bytes, b"c", b"v")  # its lock outgrows the value limit
        with pytest.raises(LimitExceeded):
            txn.commit()
        assert committed_state(client) == {(b"r", b"c"): b"v"}
        assert lock_cells(client) == []


@pytest.mark.parametrize("table", [b"", b"t" * 300, "t"])
def test_a_bad_table_name_is_refused_and_releases_the_directory(tmp_path: Path,
                                                                table: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        Client.embedded(tmp_path / "d", table=table)
    with Client.embedded(tmp_path / "d") as client:  # the directory was released
        with client.transaction() as txn:
            txn.set(b"r", b"c", b"v")


@pytest.mark.parametrize("client_kind", ALL_KINDS)
def test_a_row_with_more_cells_than_one_part_commits_whole(client: Client) -> None:
    """A row's cells are prewritten in parts of CELLS_PER_PART (store items per row are
    bounded); the parts commit together with the transaction's other rows."""
    n = 2 * _driver.CELLS_PER_PART + 50
    with client.transaction() as txn:
        for i in range(n):
            txn.set(b"wide", b"c%04d" % i, b"%d" % i)
        txn.set(b"narrow", b"c", b"n")
    parts = _driver.plan({(b"wide", b"c%04d" % i): (records.PUT, b"v") for i in range(n)}
                         | {(b"a", b"c"): (records.PUT, b"v")})
    assert [(row, len(cells)) for row, cells in parts] == [
        (b"a", 1), (b"wide", _driver.CELLS_PER_PART), (b"wide", _driver.CELLS_PER_PART),
        (b"wide", 50)]
    txn = client.begin()
    assert {c: v for _, c, v in txn.scan(b"wide", b"wide\x00")} == {
        b"c%04d" % i: b"%d" % i for i in range(n)}
    assert txn.get(b"narrow", b"c") == b"n"
    assert lock_cells(client) == []


def test_a_failure_rolling_secondaries_forward_after_the_commit_point_is_not_the_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the commit point (the primary committed), rolling the secondaries the commit
    step did not carry forward is left to readers if it fails, whatever fails (here the
    oracle a notifying roll-forward asks for a log position): the commit returns its
    commit_ts, never an error its caller would take for a failed transaction."""
    limits = Limits(max_batch_rows=64, max_value_bytes=8_000)
    store = LocalStore(tmp_path / "d", limits=limits)
    with Client(LocalBackend(store, Oracle(store)), one_phase=False) as client:
        keys = [(b"r%04d" % i, b"c") for i in range(200)]  # more than one step carries

        def failing(*args: object, **kwargs: object) -> list[tuple[bytes, bytes]]:
            raise OracleError("the oracle is unavailable (a stand-in)")

        monkeypatch.setattr(client.backend, "resolve", failing)
        txn = client.begin()
        for key in keys:
            txn.set(*key, b"v")
        commit_ts = txn.commit()
        assert commit_ts > txn.start_ts
        monkeypatch.undo()
        assert lock_cells(client), "secondaries were left locked, for readers"
        assert client.begin().get_many(keys) == {key: b"v" for key in keys}
        assert lock_cells(client) == []

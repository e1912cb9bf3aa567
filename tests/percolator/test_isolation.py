"""Snapshot isolation, anomaly by anomaly, after the Hermitage suite (github.com/ept/hermitage).

Each test replays one of Hermitage's interleavings (the PostgreSQL "repeatable read"
cases, which are snapshot isolation) step by step with explicit transactions, against
an embedded and a remote client.  Hermitage's table ``test(id, value)`` starting as
``(1, 10), (2, 20)`` becomes rows ``b"1"`` and ``b"2"`` with a ``value`` column.

Where PostgreSQL blocks a writer on a row lock, Percolator buffers writes until
commit, so the same conflict shows up at commit: the second committer of a cell
gets CommitConflict (first-committer-wins) and none of its writes become visible.
Every anomaly below is prevented except G2 (write skew), which snapshot isolation
allows by design.

Every test runs against both commit paths: one phase (the default: a transaction that
fits one step is prewritten and committed by it) and two phases (``one_phase=False``:
prewrite calls, then the commit step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bigtable_lite import Limits, LocalStore
from percolator import Client, CommitConflict, _driver
from percolator._local import LocalBackend
from percolator.clock import FakeClock
from percolator.oracle import Oracle

from .txn_fixtures import (  # noqa: F401  (fixtures)
    ALL_KINDS,
    client_fixture,
    commit_primary_only,
    committed_state,
    counting_client,
    load,
    lock_cells,
    must_commit,
    must_conflict,
    open_client,
    raw_cells,
    server_fixture,
    snapshot,
)


@pytest.fixture(params=ALL_KINDS, name="client_kind")
def client_kind_fixture(request: pytest.FixtureRequest) -> str:
    """Embedded and remote, each committing in one phase and in two."""
    return str(request.param)


V = b"value"
X = (b"1", V)
Y = (b"2", V)
Z = (b"3", V)


@pytest.fixture
def db(client: Client) -> Client:
    """Hermitage's starting state: x = 10, y = 20."""
    load(client, {X: b"10", Y: b"20"})
    return client


def values(state: dict[tuple[bytes, bytes], bytes]) -> dict[bytes, bytes]:
    """{row: value} of a snapshot of the ``value`` column."""
    return {row: value for (row, column), value in state.items() if column == V}


def by_value(txn_state: dict[tuple[bytes, bytes], bytes], pred: Callable[[int], bool]
             ) -> set[bytes]:
    """Rows whose value (an integer) satisfies ``pred``: a predicate read over a scan."""
    return {row for row, value in values(txn_state).items() if pred(int(value))}


# --- G0: dirty writes -------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["T1", "T2"])
def test_g0_dirty_write_second_committer_conflicts(db: Client, first: str) -> None:
    """T1 and T2 both write x and y; whoever commits second gets CommitConflict, and the
    final state is the winner's on both cells (no interleaving of their writes)."""
    t1, t2 = db.begin(), db.begin()
    t1.set(*X, b"11")
    t2.set(*X, b"12")
    t1.set(*Y, b"21")
    t2.set(*Y, b"22")
    winner, loser = (t1, t2) if first == "T1" else (t2, t1)
    must_commit(winner)
    must_conflict(loser)
    expected = {b"1": b"11", b"2": b"21"} if first == "T1" else {b"1": b"12", b"2": b"22"}
    assert values(committed_state(db)) == expected


def test_g0_three_writers_only_the_first_committer_wins(db: Client) -> None:
    t1, t2, t3 = db.begin(), db.begin(), db.begin()
    for i, txn in enumerate((t1, t2, t3), start=1):
        txn.set(*Y, b"2%d" % i)
        txn.set(*X, b"1%d" % i)
    must_commit(t2)
    must_conflict(t3)
    must_conflict(t1)
    assert values(committed_state(db)) == {b"1": b"12", b"2": b"22"}


def test_g0_conflict_on_a_secondary_undoes_the_locked_primary(db: Client) -> None:
    """T1 locks its primary x, then meets T2's newer commit of y: T1 must roll x back,
    leaving no lock behind, so a later writer of x commits at once."""
    t1, t2 = db.begin(), db.begin()
    t1.set(*X, b"11")  # x < y: x is T1's primary, locked first
    t1.set(*Y, b"21")
    t2.set(*Y, b"22")
    must_commit(t2)
    must_conflict(t1)
    assert lock_cells(db) == []
    t3 = db.begin()
    assert t3.get(*X) == b"10"
    t3.set(*X, b"13")
    must_commit(t3)
    assert values(committed_state(db)) == {b"1": b"13", b"2": b"22"}


# --- G1a: aborted reads -----------------------------------------------------------------------


def test_g1a_aborted_read_rolled_back(db: Client) -> None:
    t1, t2 = db.begin(), db.begin()
    t1.set(*X, b"101")
    assert values(snapshot(t2)) == {b"1": b"10", b"2": b"20"}
    t1.rollback()
    assert values(snapshot(t2)) == {b"1": b"10", b"2": b"20"}
    must_commit(t2)
    assert values(committed_state(db)) == {b"1": b"10", b"2": b"20"}


def test_g1a_aborted_read_after_failed_commit(db: Client) -> None:
    """A commit that fails after locking some cells leaves none of its writes visible."""
    t1, t2 = db.begin(), db.begin()
    t1.set(*X, b"101")  # primary, prewritten before T1 meets the conflict on y
    t1.set(*Y, b"201")
    t2.set(*Y, b"22")
    must_commit(t2)
    reader_before = db.begin()
    must_conflict(t1)
    assert lock_cells(db) == []
    reader_after = db.begin()
    for reader in (reader_before, reader_after):
        assert reader.get(*X) == b"10"
        assert reader.get_many([X, Y]) == {X: b"10", Y: b"22"}
        assert values(snapshot(reader)) == {b"1": b"10", b"2": b"22"}


# --- G1b: intermediate reads ------------------------------------------------------------------


def test_g1b_intermediate_read(db: Client) -> None:
    t1, t2 = db.begin(), db.begin()
    t1.set(*X, b"101")
    assert values(snapshot(t2)) == {b"1": b"10", b"2": b"20"}
    t1.set(*X, b"11")
    must_commit(t1)
    assert values(snapshot(t2)) == {b"1": b"10", b"2": b"20"}
    assert t2.get(*X) == b"10"
    t3 = db.begin()
    assert t3.get(*X) == b"11"  # the final write, never the intermediate 101


# --- G1c: circular information flow ---------------------------------------------------------


def test_g1c_circular_information_flow(db: Client) -> None:
    t1, t2 = db.begin(), db.begin()
    t1.set(*X, b"11")
    t2.set(*Y, b"22")
    assert t1.get(*Y) == b"20"
    assert t2.get(*X) == b"10"
    must_commit(t1)
    must_commit(t2)  # disjoint writes: both commit, and neither saw the other
    assert values(committed_state(db)) == {b"1": b"11", b"2": b"22"}


# --- OTV: observed transaction vanishes --------------------------------------------------------


def test_otv_observed_transaction_vanishes(db: Client) -> None:
    t1, t2, t3 = db.begin(), db.begin(), db.begin()
    t1.set(*X, b"11")
    t1.set(*Y, b"19")
    t2.set(*X, b"12")
    must_commit(t1)
    t3_late = db.begin()
    assert t3.get(*X) == b"10"  # began before T1 committed
    assert t3_late.get(*X) == b"11"
    t2.set(*Y, b"18")
    must_conflict(t2)
    assert t3_late.get(*Y) == b"19"  # T1 does not vanish, T2 never appears
    assert t3_late.get(*X) == b"11"
    assert t3.get_many([X, Y]) == {X: b"10", Y: b"20"}
    must_commit(t3)
    must_commit(t3_late)


# --- PMP: predicate-many-preceders ------------------------------------------------------------


def test_pmp_predicate_read(db: Client) -> None:
    t1, t2 = db.begin(), db.begin()
    assert by_value(snapshot(t1), lambda v: v == 30) == set()
    t2.set(*Z, b"30")
    must_commit(t2)
    assert by_value(snapshot(t1), lambda v: v % 3 == 0) == set()  # the insert stays invisible
    assert snapshot(t1, b"3", None) == {}
    assert t1.get(*Z) is None
    must_commit(t1)


def test_pmp_write_predicate(db: Client) -> None:
    """T1 ``update set value = value + 10``; T2 ``delete where value = 20``: T2 must fail."""
    t1, t2 = db.begin(), db.begin()
    for (row, column), value in snapshot(t1).items():
        t1.set(row, column, b"%d" % (int(value) + 10))
    for row in by_value(snapshot(t2), lambda v: v == 20):
        t2.delete(row, V)
    must_commit(t1)
    must_conflict(t2)
    assert values(committed_state(db)) == {b"1": b"20", b"2": b"30"}


# --- P4: lost update --------------------------------------------------------------------------


def test_p4_lost_update(db: Client) -> None:
    t1, t2 = db.begin(), db.begin()
    x1, x2 = t1.get(*X), t2.get(*X)
    assert x1 == x2 == b"10"
    t1.set(*X, b"%d" % (int(x1) + 1))
    t2.set(*X, b"%d" % (int(x2) + 1))
    must_commit(t1)
    must_conflict(t2)
    assert db.begin().get(*X) == b"11"


def test_p4_lost_update_by_delete(db: Client) -> None:
    t1, t2 = db.begin(), db.begin()
    t1.delete(*X)
    t2.set(*X, b"%d" % (int(t2.get(*X) or b"0") + 1))
    must_commit(t1)
    must_conflict(t2)
    assert db.begin().get(*X) is None


# --- G-single: read skew ----------------------------------------------------------------------


def test_g_single_read_skew(db: Client) -> None:
    t1, t2 = db.begin(), db.begin()
    assert t1.get(*X) == b"10"
    assert t2.get_many([X, Y]) == {X: b"10", Y: b"20"}
    t2.set(*X, b"12")
    t2.set(*Y, b"18")
    must_commit(t2)
    assert t1.get(*Y) == b"20"  # not 18: x + y stays 30 in T1's snapshot
    assert t1.get_many([X, Y]) == {X: b"10", Y: b"20"}
    must_commit(t1)


def test_g_single_read_skew_predicate(db: Client) -> None:
    t1, t2 = db.begin(), db.begin()
    assert by_value(snapshot(t1), lambda v: v % 5 == 0) == {b"1", b"2"}
    t2.set(*X, b"12")
    must_commit(t2)
    assert by_value(snapshot(t1), lambda v: v % 3 == 0) == set()
    must_commit(t1)


def test_g_single_read_skew_write_1(db: Client) -> None:
    """T1 reads x, T2 moves 2 from y to x and commits, T1 deletes ``where value = 20``."""
    t1, t2 = db.begin(), db.begin()
    assert t1.get(*X) == b"10"
    assert values(snapshot(t2)) == {b"1": b"10", b"2": b"20"}
    t2.set(*X, b"12")
    t2.set(*Y, b"18")
    must_commit(t2)
    for row in by_value(snapshot(t1), lambda v: v == 20):
        t1.delete(row, V)
    must_conflict(t1)
    assert values(committed_state(db)) == {b"1": b"12", b"2": b"18"}


def test_g_single_read_skew_write_2(db: Client) -> None:
    t1, t2 = db.begin(), db.begin()
    assert t1.get(*X) == b"10"
    assert values(snapshot(t2)) == {b"1": b"10", b"2": b"20"}
    t2.set(*X, b"12")
    for row in by_value(snapshot(t1), lambda v: v == 20):
        t1.delete(row, V)
    t2.set(*Y, b"18")
    must_commit(t2)
    must_conflict(t1)
    assert values(committed_state(db)) == {b"1": b"12", b"2": b"18"}


# --- G2: anti-dependency cycles (allowed) -----------------------------------------------------


def test_g2_item_write_skew_is_allowed(db: Client) -> None:
    """Write skew commits: the trade-off of snapshot isolation.

    T1 and T2 each read both x and y from the same snapshot and write a *different*
    one.  Snapshot isolation only aborts write-write conflicts, and the write sets are
    disjoint, so both commit, although no serial order of T1 and T2 gives this result
    (each would have seen the other's write).  Percolator accepts this, as PostgreSQL's
    repeatable read does; applications that need the constraint make both
    transactions write a common cell.
    """
    t1, t2 = db.begin(), db.begin()
    assert t1.get_many([X, Y]) == {X: b"10", Y: b"20"}
    assert t2.get_many([X, Y]) == {X: b"10", Y: b"20"}
    t1.set(*X, b"11")
    t2.set(*Y, b"21")
    must_commit(t1)
    must_commit(t2)
    assert values(committed_state(db)) == {b"1": b"11", b"2": b"21"}


def test_g2_write_skew_prevented_by_a_common_write(db: Client) -> None:
    """The remedy for write skew: both transactions also write the cells they read."""
    t1, t2 = db.begin(), db.begin()
    assert t1.get_many([X, Y]) == t2.get_many([X, Y]) == {X: b"10", Y: b"20"}
    t1.set(*X, b"11")
    t1.set(*Y, b"20")
    t2.set(*Y, b"21")
    t2.set(*X, b"10")
    must_commit(t1)
    must_conflict(t2)


def test_g2_predicate_anti_dependency_is_allowed(db: Client) -> None:
    """Hermitage's G2 with predicates: both insert after seeing no match; SI allows it."""
    t1, t2 = db.begin(), db.begin()
    assert by_value(snapshot(t1), lambda v: v % 3 == 0) == set()
    assert by_value(snapshot(t2), lambda v: v % 3 == 0) == set()
    t1.set(*Z, b"30")
    t2.set(b"4", V, b"42")
    must_commit(t1)
    must_commit(t2)
    assert by_value(committed_state(db), lambda v: v % 3 == 0) == {b"3", b"4"}


# --- own writes, visibility after commit, read-only commits -----------------------------------


def test_read_your_own_writes(db: Client) -> None:
    txn = db.begin()
    txn.set(*X, b"11")
    txn.delete(*Y)
    txn.set(*Z, b"30")
    assert txn.get(*X) == b"11"
    assert txn.get(*Y) is None
    assert txn.get(*Z) == b"30"
    assert txn.get_many([X, Y, Z, (b"4", V)]) == {X: b"11", Y: None, Z: b"30", (b"4", V): None}
    txn.set(*Y, b"22")  # a set after a delete wins
    txn.delete(*Z)  # a delete after a set wins
    assert txn.get_many([Y, Z]) == {Y: b"22", Z: None}
    other = db.begin()
    assert values(snapshot(other)) == {b"1": b"10", b"2": b"20"}  # nothing leaked
    must_commit(txn)
    assert values(committed_state(db)) == {b"1": b"11", b"2": b"22"}


def test_scan_merges_buffered_writes_and_deletes(client: Client) -> None:
    load(client, {(b"a", b"c1"): b"a1", (b"a", b"c2"): b"a2", (b"c", b"c1"): b"c1",
                  (b"e", b"c1"): b"e1", (b"g", b"c1"): b"g1"})
    txn = client.begin()
    txn.set(b"0", b"c1", b"new-first")    # before every stored row
    txn.set(b"a", b"c0", b"new-a0")       # a new column before a stored one in one row
    txn.set(b"a", b"c2", b"over-a2")      # overwrite a stored cell
    txn.set(b"b", b"c1", b"new-b")        # a new row between stored rows
    txn.delete(b"c", b"c1")               # delete a stored row's only cell
    txn.delete(b"d", b"c1")               # delete of an absent cell: nothing to hide
    txn.set(b"z", b"c1", b"new-last")     # after every stored row
    assert list(txn.scan()) == [
        (b"0", b"c1", b"new-first"),
        (b"a", b"c0", b"new-a0"),
        (b"a", b"c1", b"a1"),
        (b"a", b"c2", b"over-a2"),
        (b"b", b"c1", b"new-b"),
        (b"e", b"c1", b"e1"),
        (b"g", b"c1", b"g1"),
        (b"z", b"c1", b"new-last"),
    ]
    assert list(txn.scan(b"a", b"e")) == [
        (b"a", b"c0", b"new-a0"), (b"a", b"c1", b"a1"), (b"a", b"c2", b"over-a2"),
        (b"b", b"c1", b"new-b"),
    ]
    assert list(txn.scan(columns=[b"c2", b"c0"])) == [
        (b"a", b"c0", b"new-a0"), (b"a", b"c2", b"over-a2")]
    assert list(txn.scan(b"b", b"d", columns=[b"c1"])) == [(b"b", b"c1", b"new-b")]
    txn.delete(b"e", b"c1")
    txn.delete(b"g", b"c1")
    txn.delete(b"z", b"c1")
    assert list(txn.scan(b"d")) == []
    must_commit(txn)
    assert committed_state(client) == {
        (b"0", b"c1"): b"new-first", (b"a", b"c0"): b"new-a0", (b"a", b"c1"): b"a1",
        (b"a", b"c2"): b"over-a2", (b"b", b"c1"): b"new-b"}


def test_transaction_begun_after_commit_returned_sees_it(client: Client) -> None:
    """Every cell of a commit, the primary and the secondaries (committed by the commit
    step, or settled after it before commit() returns), is visible to a transaction
    begun after commit()."""
    rows = [b"r%02d" % i for i in range(20)]
    for round_ in range(5):
        txn = client.begin()
        for row in rows:
            txn.set(row, V, b"%d" % round_)
        if round_ % 2:
            txn.delete(rows[0], V)
        commit_ts = must_commit(txn)
        reader = client.begin()
        assert reader.start_ts > commit_ts
        expected = {(row, V): b"%d" % round_ for row in rows}
        if round_ % 2:
            del expected[(rows[0], V)]
        assert snapshot(reader) == expected
        assert reader.get_many([(row, V) for row in rows]) == {
            (row, V): expected.get((row, V)) for row in rows}
        assert reader.get(rows[-1], V) == b"%d" % round_


def test_transaction_begun_before_commit_does_not_see_it(client: Client) -> None:
    before = client.begin()
    txn = client.begin()
    txn.set(*X, b"1")
    txn.set(*Y, b"2")
    commit_ts = must_commit(txn)
    assert before.start_ts < commit_ts
    assert before.get_many([X, Y]) == {X: None, Y: None}
    assert snapshot(before) == {}


def test_read_only_commit_is_free(client_kind: str, request: pytest.FixtureRequest,
                                  tmp_path: Path) -> None:
    client, backend = counting_client(client_kind, request, tmp_path)
    with client:
        load(client, {X: b"10", Y: b"20"})
        txn = client.begin()
        assert txn.get(*X) == b"10"
        assert values(snapshot(txn)) == {b"1": b"10", b"2": b"20"}
        calls = backend.calls
        stored = raw_cells(client)
        assert txn.commit() == txn.start_ts
        assert txn.commit_ts == txn.start_ts
        assert backend.calls == calls, backend.counts  # no commit_ts taken, no step run
        assert raw_cells(client) == stored  # nothing written


def test_read_only_transactions_never_conflict(db: Client) -> None:
    reader = db.begin()
    assert reader.get(*X) == b"10"
    writer = db.begin()
    writer.set(*X, b"11")
    must_commit(writer)
    assert reader.commit() == reader.start_ts  # read-only: nothing to conflict with


def test_commit_conflict_names_the_cell(db: Client) -> None:
    t1, t2 = db.begin(), db.begin()
    t1.set(*Y, b"21")
    t2.set(*Y, b"22")
    t2.set(*Z, b"32")
    must_commit(t1)
    err = must_conflict(t2)
    assert isinstance(err, CommitConflict)
    assert (err.row, err.column) == Y


# --- commits whose secondaries were never written ---------------------------------------------


@pytest.fixture
def lossy(client_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    """A client with a fake clock, so a reader that waited for a lock's TTL instead of
    resolving it shows up as fake time (embedded, that clock also judges lock expiry)."""
    with open_client(client_kind, request, tmp_path, clock=FakeClock()) as c:
        yield c


NEW = {(b"a", b"c"): b"new-a",          # the primary
       (b"a", b"d"): b"new-a2",         # in the primary's row
       (b"b", b"c"): b"L" * 300,        # a secondary in the data column
       (b"c", b"c"): b"",               # an empty value
       (b"d", b"c"): None}              # a delete
OLD = {(b"a", b"c"): b"old-a", (b"d", b"c"): b"old-d", (b"e", b"c"): b"old-e"}


LEFT_LOCKED = {"other rows": [(b"a", b"d")],  # committed with the primary, in its row
               "all but the primary": []}


@pytest.mark.parametrize("left", sorted(LEFT_LOCKED))
@pytest.mark.parametrize("resolver", ["scan", "get", "get_many", "write", "concurrent read",
                                      "concurrent write"])
def test_secondaries_lost_after_the_commit_point_are_rolled_forward(
        lossy: Client, resolver: str, left: str) -> None:
    """Once the primary is committed the transaction is, whatever became of its secondaries:
    whoever meets one of their locks first rolls it forward, and every later snapshot
    sees the whole transaction.  The writer here died right after its commit point: the
    commit step committed its primary (and the cells ``left`` names) alone."""
    client = lossy
    clock = client.clock
    load(client, OLD)
    start_ts = client.timestamp()
    concurrent = client.begin()  # its snapshot holds the locks, not the commit
    _, commit_ts = commit_primary_only(client, NEW, start_ts=start_ts, keys=LEFT_LOCKED[left])
    assert {(row, cell.column[1:]) for _, row, cell in lock_cells(client)} == \
        set(NEW) - {(b"a", b"c"), *LEFT_LOCKED[left]}, \
        "the secondaries are not locked: the test proves nothing"
    after = {**OLD, **{k: v for k, v in NEW.items() if v is not None}}
    del after[(b"d", b"c")]
    waited = clock.now_ms()

    if resolver == "scan":
        assert snapshot(client.begin()) == after
    elif resolver == "get":
        reader = client.begin()
        for key, value in NEW.items():
            assert reader.get(*key) == value
    elif resolver == "get_many":
        assert client.begin().get_many(list(NEW)) == NEW
    elif resolver == "write" and left == "other rows":
        writer = client.begin()
        for (row, column) in NEW:
            writer.set(row, column, b"newer")
        assert must_commit(writer) > commit_ts
        after = {**after, **{key: b"newer" for key in NEW}}
    elif resolver == "write":
        # A lock left in the primary's row fails the writer's primary part in a call that
        # locks its other rows: the prewrite rolls the lock forward, then gives up rather
        # than retry its primary (see the prewrite step); the next attempt commits.
        for attempt in range(2):
            writer = client.begin()
            for (row, column) in NEW:
                writer.set(row, column, b"newer")
            try:
                assert writer.commit() > commit_ts
                break
            except CommitConflict:
                assert attempt == 0, "the lock was not rolled forward by the first attempt"
        after = {**after, **{key: b"newer" for key in NEW}}
    elif resolver == "concurrent read":
        assert start_ts < concurrent.start_ts < commit_ts
        assert snapshot(concurrent) == OLD
        assert concurrent.get_many(list(NEW)) == {key: OLD.get(key) for key in NEW}
    else:
        concurrent.set(b"d", b"c", b"lost update")
        must_conflict(concurrent)

    assert clock.now_ms() == waited, "a lock of a committed transaction was waited out"
    assert committed_state(client) == after
    assert lock_cells(client) == [], "locks left behind"


# --- transactions larger than one store call --------------------------------------------------


def big_writes(txn_id: bytes) -> dict[tuple[bytes, bytes], bytes]:
    """1,200 cells in the primary's row (more than a store row mutation may carry) and
    300 further rows: the commit is split into several parts and calls."""
    cells = {(b"a", b"c%04d" % i): txn_id + b"%d" % i for i in range(1200)}
    cells.update({(b"r%03d" % i, b"c"): txn_id for i in range(300)})
    return cells


CONFLICTS = pytest.mark.parametrize(
    "conflict_at", [(b"a", b"c0000"), (b"a", b"c1199"), (b"r299", b"c")],
    ids=["primary", "primary-row-last-part", "last-row"])


@CONFLICTS
def test_large_transaction_is_all_or_nothing(client: Client,
                                             conflict_at: tuple[bytes, bytes]) -> None:
    check_all_or_nothing(client, conflict_at)


@CONFLICTS
@pytest.mark.parametrize("one_phase", [True, False], ids=["one-phase", "two-phase"])
def test_transaction_of_several_prewrite_calls_is_all_or_nothing(
        tmp_path: Path, conflict_at: tuple[bytes, bytes], one_phase: bool) -> None:
    """With a batch limit of 64 rows the same commit takes 16 prewrite calls (two-phase
    whatever the client asks): a conflict in any call undoes what the earlier calls
    locked, at once (the fake clock shows any wait for their TTL)."""
    store = LocalStore(tmp_path / "d", limits=Limits(max_batch_rows=64, max_value_bytes=8_000))
    clock = FakeClock()
    backend = LocalBackend(store, Oracle(store), clock=clock)
    with Client(backend, clock=clock, one_phase=one_phase) as client:
        assert len(_driver.calls(_driver.plan({k: (b"P", v) for k, v in big_writes(b"").items()}),
                                 client.limits)) == 16  # 6 parts of 200 cells, 10 of rows
        check_all_or_nothing(client, conflict_at)
        assert clock.now_ms() == 1_000_000, "a reader waited for the locks of a failed commit"


def test_a_transaction_of_more_cells_than_a_step_takes_commits(client: Client) -> None:
    """3,000 rows of 4 cells: within the rows a step call takes, beyond its cells (10,000,
    which a node checks): the commit is cut into calls the node accepts."""
    cells = {(b"m%04d" % i, b"c%d" % j): b"v" for i in range(3000) for j in range(4)}
    load(client, cells)
    assert committed_state(client) == cells


def check_all_or_nothing(client: Client, conflict_at: tuple[bytes, bytes]) -> None:
    first = big_writes(b"T1-")
    load(client, first)
    before = client.begin()
    t2, t3 = client.begin(), client.begin()
    for key, value in big_writes(b"T2-").items():
        t2.set(*key, value)
    t3.set(*conflict_at, b"T3")
    must_commit(t3)
    must_conflict(t2)
    expected = {**first, conflict_at: b"T3"}
    assert committed_state(client) == expected
    assert lock_cells(client) == []
    assert snapshot(before) == first
    t4 = client.begin()
    for key, value in big_writes(b"T4-").items():
        t4.set(*key, value)
    must_commit(t4)
    assert snapshot(before) == first
    assert committed_state(client) == big_writes(b"T4-")

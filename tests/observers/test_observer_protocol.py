"""The per-cell protocol driven step by step: run (or skip), then hand back exactly the entries.

These tests stop between steps to show what a crash there leaves and why the next
delivery neither loses nor doubles an observer's effect.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bigtable_lite import Put, RowMutation
from observers import Observer, observer
from observers import _layout as olayout
from observers._notifications import PendingCell, cells_of
from observers._processing import (
    MalformedNotification,
    Outcome,
    finish,
    process_cell,
    process_cells,
    run_observer,
    run_observer_batch,
)
from percolator import Client, CommitConflict, Transaction, failpoints, layout
from percolator._backend import CommitOutcome, CommitRequest, PrewriteRequest
from percolator._local import LocalBackend
from percolator._notify import log
from percolator.clock import FakeClock
from percolator.notifications import LogRow
from tests.percolator.steps import log_entries
from tests.percolator.txn_fixtures import parts_of

COL = b"watched"


def pending_cells(client: Client) -> list[PendingCell]:
    """Every cell with entries in the log, as a worker's pulls would hand them over."""
    rows = [LogRow(r.row, tuple((c.column, c.value) for c in r.cells))
            for r in client.store.scan_rows(layout.notify_table(client.table))]
    return sorted(cells_of(rows), key=lambda c: c.key)


def pending(client: Client, row: bytes, column: bytes = COL) -> PendingCell:
    """The cell's entries (none: a cell without entries)."""
    found = [c for c in pending_cells(client) if c.key == (row, column)]
    return found[0] if found else PendingCell(row, column, ())


def must_have_no_notification(client: Client, row: bytes, column: bytes = COL) -> None:
    assert pending(client, row, column).entries == ()


class Counting(Observer):
    """Counts its runs in the store (row, b"runs") and in memory."""

    column = COL

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
        self.calls += 1
        runs = int(txn.get(row, b"runs") or b"0")
        txn.set(row, b"runs", b"%d" % (runs + 1))


def runs(client: Client, row: bytes) -> int:
    txn = client.begin()
    return int(txn.get(row, b"runs") or b"0")


@pytest.fixture(name="fake_clock")
def fake_clock_fixture() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="embedded")
def embedded_fixture(tmp_path: Path, fake_clock: FakeClock) -> Client:
    client = Client.embedded(tmp_path / "data", lock_ttl=1.0, clock=fake_clock)
    client.register_observed_columns([COL])
    yield client  # type: ignore[misc]
    client.close()


@pytest.fixture(name="two_phase")
def two_phase_fixture(embedded: Client, fake_clock: FakeClock) -> Iterator[Client]:
    """A second client of the same backend that always commits in two phases (so the
    commit driver's failpoints fire)."""
    writer = Client(embedded.backend, lock_ttl=1.0, clock=fake_clock, one_phase=False)
    yield writer
    writer.ctx.keeper.close()  # not close(): the backend is the embedded client's


def test_committed_write_is_observed_acknowledged_and_deleted(embedded: Client) -> None:
    with embedded.transaction() as txn:
        txn.set(b"r", COL, b"v1")
    cell = pending(embedded, b"r")
    assert len(cell.entries) == 1
    obs = Counting()
    result = run_observer(embedded, obs, cell)
    assert result.outcome is Outcome.PROCESSED
    ack = olayout.decode_ack(embedded.begin().get_system(b"r", olayout.ack_column(COL)))
    assert ack == result.start_ts > cell.max_change_ts
    finish(embedded, cell)
    must_have_no_notification(embedded, b"r")
    assert runs(embedded, b"r") == 1


def test_crash_between_commit_and_delete_is_a_skip_on_redelivery(embedded: Client) -> None:
    with embedded.transaction() as txn:
        txn.set(b"r", COL, b"v1")
    obs = Counting()
    failpoints.enable("worker.after_observer", "raise")
    with pytest.raises(failpoints.FailpointError):
        process_cell(embedded, obs, pending(embedded, b"r"))
    failpoints.reset()
    cell = pending(embedded, b"r")
    assert len(cell.entries) == 1, "the notification must outlive the crash"
    again = process_cell(embedded, obs, cell)
    assert again.outcome is Outcome.SKIPPED
    must_have_no_notification(embedded, b"r")
    assert (obs.calls, runs(embedded, b"r")) == (1, 1)


def test_rolled_back_writer_leaves_nothing_to_observe(embedded: Client, two_phase: Client
                                                     ) -> None:
    """Notifications are written with the write records they announce: a writer that
    locked its cells and then failed before its commit point leaves none at all."""
    txn = two_phase.begin()
    txn.set(b"r", COL, b"never")
    txn.set(b"s", b"other", b"x")
    failpoints.enable("commit.after_prewrite", "raise")
    with pytest.raises(failpoints.FailpointError):
        txn.commit()
    failpoints.reset()
    assert pending_cells(embedded) == []
    assert embedded.begin().get_many([(b"r", COL), (b"s", b"other")]) == {
        (b"r", COL): None, (b"s", b"other"): None}
    with embedded.transaction() as later:  # the next commit of the cell is observed
        later.set(b"r", COL, b"v")
    [cell] = pending_cells(embedded)
    obs = Counting()
    assert process_cell(embedded, obs, cell).outcome is Outcome.PROCESSED and obs.calls == 1


def test_conflicting_writer_leaves_nothing_to_observe(embedded: Client) -> None:
    loser = embedded.begin()
    loser.set(b"r", COL, b"lost")
    with embedded.transaction() as winner:
        winner.set(b"r", COL, b"won")
    with pytest.raises(CommitConflict):
        loser.commit()
    [cell] = pending_cells(embedded)
    assert len(cell.entries) == 1, "the winner's notification only"
    seen: list[bytes | None] = []

    @observer(COL)
    def mirror(txn: Transaction, row: bytes, column: bytes) -> None:
        seen.append(txn.get(row, column))

    assert process_cell(embedded, mirror, cell).outcome is Outcome.PROCESSED
    assert seen == [b"won"]


def test_dead_writer_leaves_nothing_to_observe_before_or_after_its_rollback(
        embedded: Client, fake_clock: FakeClock) -> None:
    """A writer that died after its prewrite: nothing is pending while its locks live,
    nor after a reader rolled it back once they expired (a late commit then fails)."""
    start_ts = embedded.timestamp()
    cells = {(b"r", COL): b"never", (b"s", COL): b"never"}
    primary = (b"r", COL)
    backend = embedded.backend
    assert backend.prewrite(PrewriteRequest(embedded.table, start_ts, primary, 1000,
                                            parts_of(cells))) is None
    assert pending_cells(embedded) == [], "a writer before its commit point notifies nobody"
    fake_clock.advance(2.0)  # past the locks' TTL: the reader's status check rolls it back
    assert embedded.begin().get_many(list(cells)) == {key: None for key in cells}
    late = backend.commit(CommitRequest(embedded.table, start_ts, primary, [(b"s", COL)]))
    assert late == CommitOutcome(False)
    assert pending_cells(embedded) == []


def test_notifications_are_written_by_the_commit_that_rolls_a_secondary_forward(
        embedded: Client) -> None:
    """A writer that died right after its commit point: the primary's notification came
    with it, at log position commit_ts; the secondary's comes when a reader rolls it
    forward: the same change (commit_ts), at a later position (readers of the log may
    have passed commit_ts by then)."""
    start_ts = embedded.timestamp()
    cells = {(b"r", COL): b"v", (b"s", COL): b"v"}
    primary = (b"r", COL)
    backend = embedded.backend
    assert backend.prewrite(PrewriteRequest(embedded.table, start_ts, primary, 60_000,
                                            parts_of(cells))) is None
    outcome = backend.commit(CommitRequest(embedded.table, start_ts, primary, []))
    assert outcome.committed
    commit_ts = outcome.commit_ts
    assert [(e.row, e.change_ts, e.position) for e in log_entries(embedded)] == [
        (b"r", commit_ts, commit_ts)]
    assert embedded.begin().get(b"s", COL) == b"v"  # rolled forward
    entries = sorted((e.row, e.change_ts, e.position) for e in log_entries(embedded))
    assert entries[0] == (b"r", commit_ts, commit_ts)
    assert entries[1][:2] == (b"s", commit_ts) and entries[1][2] > commit_ts
    obs = CountingBatches()
    results = process_cells(embedded, obs, pending_cells(embedded))
    assert [r.outcome for r in results] == [Outcome.PROCESSED] * 2
    assert pending_cells(embedded) == []


class HeldOracle:
    """Hands out timestamps, but the call after ``hold()`` blocks until ``release()``.

    A two-phase writer whose commit_ts request is held is a live writer stuck between
    its prewrite (its locks written) and its commit point; a one-phase writer is stuck
    before its only write.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.armed = False
        self.waiting = threading.Event()
        self.go = threading.Event()

    def get_timestamp(self) -> int:
        if self.armed:
            self.armed = False
            self.waiting.set()
            assert self.go.wait(30), "never released"
        return self.inner.get_timestamp()  # type: ignore[no-any-return]

    def timestamp_if_ready(self, wait: float) -> int | None:
        """Armed: not ready, so a one-phase commit asks ``get_timestamp`` (held) instead."""
        return None if self.armed else self.inner.timestamp_if_ready(wait)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("one_phase", [True, False], ids=["one-phase", "two-phase"])
def test_live_writer_notifies_nobody_and_once_rolled_back_after_its_ttl_cannot_commit(
        embedded: Client, fake_clock: FakeClock, one_phase: bool) -> None:
    assert isinstance(embedded.backend, LocalBackend)
    oracle = HeldOracle(embedded.backend.oracle)
    writer_clock = FakeClock()
    backend = LocalBackend(embedded.backend.local_store, oracle, clock=writer_clock,
                           owned=False)
    writer = Client(backend, lock_ttl=1.0, clock=writer_clock, one_phase=one_phase)
    txn = writer.begin()
    txn.set(b"r", COL, b"v")
    txn.set(b"s", COL, b"v")
    oracle.armed = True
    outcome: list[BaseException] = []

    def commit() -> None:
        try:
            txn.commit()
        except CommitConflict as exc:
            outcome.append(exc)

    thread = threading.Thread(target=commit)
    thread.start()
    try:
        assert oracle.waiting.wait(30)
        assert pending_cells(embedded) == [], "a live writer notifies nobody"
        fake_clock.advance(4.0)  # past the writer's lock TTL: a reader rolls it back
        assert embedded.begin().get_many([(b"r", COL), (b"s", COL)]) == {
            (b"r", COL): None, (b"s", COL): None}
    finally:
        oracle.go.set()
        thread.join(30)
        writer.close()
    if one_phase:
        # A one-phase commit holds no lock a reader could roll back: it takes commit_ts
        # after the reader's snapshot, so the reader saw nothing and the writer commits.
        assert outcome == [], "a one-phase writer has no lock to lose"
        assert embedded.begin().get(b"r", COL) == b"v"
        assert len(pending_cells(embedded)) == 2, "its notifications came with its commit"
        return
    assert len(outcome) == 1, "the writer, rolled back by a reader, cannot commit"
    assert pending_cells(embedded) == []


def test_two_racing_observer_transactions_commit_once(embedded: Client) -> None:
    with embedded.transaction() as txn:
        txn.set(b"r", COL, b"v")
    both_inside = threading.Barrier(2, timeout=30)
    calls: list[int] = []

    @observer(COL)
    def racing(txn: Transaction, row: bytes, column: bytes) -> None:
        calls.append(1)
        both_inside.wait()  # both have read the old ack before either commits
        txn.set(row, b"effect", b"%d" % txn.start_ts)

    cell = pending(embedded, b"r")
    outcomes: list[object] = []

    def run() -> None:
        try:
            outcomes.append(run_observer(embedded, racing, cell).outcome)
        except CommitConflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(type(o).__name__ for o in outcomes) == ["CommitConflict", "Outcome"]
    assert Outcome.PROCESSED in outcomes
    # The loser retries from scratch: it now reads an ack that covers the change.
    retried = run_observer(embedded, racing, cell)
    assert retried.outcome is Outcome.SKIPPED and len(calls) == 2


def test_notification_written_meanwhile_survives_and_is_then_a_skip(embedded: Client) -> None:
    with embedded.transaction() as txn:
        txn.set(b"r", COL, b"v1")
    stale = pending(embedded, b"r")  # what a scan saw before the second write
    with embedded.transaction() as txn:
        txn.set(b"r", COL, b"v2")
    obs = Counting()
    seen: list[bytes | None] = []

    @observer(COL)
    def mirror(txn: Transaction, row: bytes, column: bytes) -> None:
        seen.append(txn.get(row, column))

    assert process_cell(embedded, mirror, stale).outcome is Outcome.PROCESSED
    assert seen == [b"v2"], "the observer's snapshot includes every change committed before it"
    left = pending(embedded, b"r")
    assert len(left.entries) == 1 and left.entries[0].change_ts > stale.entries[0].change_ts
    assert process_cell(embedded, obs, left).outcome is Outcome.SKIPPED
    must_have_no_notification(embedded, b"r")


def test_coalesced_versions_are_one_run(embedded: Client) -> None:
    for i in range(5):
        with embedded.transaction() as txn:
            txn.set(b"r", COL, b"v%d" % i)
    cell = pending(embedded, b"r")
    assert len(cell.entries) == 5
    obs = Counting()
    assert process_cell(embedded, obs, cell).outcome is Outcome.PROCESSED
    assert obs.calls == 1
    must_have_no_notification(embedded, b"r")


def test_weak_notification_without_writes_is_unconditional(embedded: Client) -> None:
    txn = embedded.begin()
    txn.notify(b"r", COL)
    txn.commit()
    cell = pending(embedded, b"r")
    [entry] = cell.entries
    assert entry.kind == log.WEAK and entry.change_ts == entry_position(embedded)
    obs = Counting()
    assert process_cell(embedded, obs, cell).outcome is Outcome.PROCESSED
    assert runs(embedded, b"r") == 1


def entry_position(client: Client) -> int:
    [entry] = log_entries(client)
    return entry.position


MALFORMED = {"notification record of before": b"\x02\x00", "truncated": b"\x01\x00",
             "too long": b"\x01" + bytes(9), "unknown kind": b"\x07" + bytes(8), "junk": b"\x01"}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_notification_is_reported_not_dropped(embedded: Client, raw: bytes) -> None:
    key = log.log_key(COL, log.bucket_of(b"r"), embedded.timestamp())
    embedded.store.mutate_rows([RowMutation(layout.notify_table(embedded.table), key,
                                            (Put(b"r", 0, raw),))])
    with pytest.raises(MalformedNotification):
        process_cell(embedded, Counting(), pending(embedded, b"r"))
    assert len(pending(embedded, b"r").entries) == 1


def test_cells_of_groups_entries_by_cell(embedded: Client) -> None:
    with embedded.transaction() as txn:
        txn.set(b"r", COL, b"1")
        txn.notify(b"r", b"other")
    with embedded.transaction() as txn:
        txn.set(b"r", COL, b"2")
    cells = pending_cells(embedded)
    assert [(c.column, len(c.entries)) for c in cells] == [(b"other", 1), (COL, 2)]
    first, second = cells[1].entries
    assert first.change_ts < second.change_ts, "in log order: oldest first"
    assert {b for c in cells for b in c.buckets} == {log.bucket_of(b"r")}


# --- several cells in one observer transaction (Observer.max_batch) -------------------------


class CountingBatches(Counting):
    """Counting, with process_batch calls recorded."""

    max_batch = 100

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[bytes]] = []

    def process_batch(self, txn: Transaction, rows: object, column: bytes) -> None:
        self.batches.append(list(rows))  # type: ignore[call-overload]
        super().process_batch(txn, rows, column)  # type: ignore[arg-type]


def write_rows(client: Client, rows: list[bytes], value: bytes = b"v") -> None:
    with client.transaction() as txn:
        for row in rows:
            txn.set(row, COL, value)


def ack_of(client: Client, row: bytes) -> int:
    return olayout.decode_ack(client.begin().get_system(row, olayout.ack_column(COL)))


def test_batch_runs_and_acknowledges_every_cell_in_one_transaction(embedded: Client) -> None:
    rows = [b"r%d" % i for i in range(5)]
    write_rows(embedded, rows)
    obs = CountingBatches()
    pending_before = {r: pending(embedded, r) for r in rows}
    results = process_cells(embedded, obs, list(pending_before.values()))
    assert [r.outcome for r in results] == [Outcome.PROCESSED] * 5
    assert obs.batches == [rows], "one call with every row"
    assert len({(r.start_ts, r.commit_ts) for r in results}) == 1, "one transaction"
    for row, result in zip(rows, results):
        assert ack_of(embedded, row) == result.start_ts > pending_before[row].max_change_ts
        assert runs(embedded, row) == 1
        must_have_no_notification(embedded, row)


class Summing(Observer):
    """Adds its rows' values into one total cell (shared by the group), recording calls."""

    max_batch = 100
    batch_group = "totals"

    def __init__(self, column: bytes, calls: list[tuple[bytes, list[bytes]]]) -> None:
        super().__init__(column)
        self.calls = calls

    def process_batch(self, txn: Transaction, rows: object, column: bytes) -> None:
        self.calls.append((column, list(rows)))  # type: ignore[call-overload]
        total = int(txn.get(b"total", b"sum") or b"0")
        txn.set(b"total", b"sum", b"%d" % (total + len(list(rows))))  # type: ignore[call-overload]


def test_batch_of_a_group_runs_each_observer_in_turn_in_one_transaction(
        embedded: Client) -> None:
    other = b"watched2"
    embedded.register_observed_columns([COL, other])
    with embedded.transaction() as txn:
        for row in (b"a", b"b"):
            txn.set(row, COL, b"v")
        txn.set(b"c", other, b"v")
    calls: list[tuple[bytes, list[bytes]]] = []
    group = [Summing(COL, calls), Summing(other, calls)]
    cells = [pending(embedded, b"c", other), pending(embedded, b"a"), pending(embedded, b"b")]
    results = process_cells(embedded, group, cells)
    assert [r.outcome for r in results] == [Outcome.PROCESSED] * 3
    assert len({r.commit_ts for r in results}) == 1, "one transaction"
    assert calls == [(COL, [b"a", b"b"]), (other, [b"c"])], "per column, in the group's order"
    assert embedded.begin().get(b"total", b"sum") == b"3", \
        "the second observer read the first one's write: the cell is written once"
    ack = olayout.decode_ack(embedded.begin().get_system(b"c", olayout.ack_column(other)))
    assert ack == results[0].start_ts, "each cell acknowledged in its own column"
    again = process_cells(embedded, group, cells)
    assert [r.outcome for r in again] == [Outcome.SKIPPED] * 3
    for row, column in ((b"a", COL), (b"b", COL), (b"c", other)):
        must_have_no_notification(embedded, row, column)


def test_batch_skips_the_cells_an_earlier_commit_covers(embedded: Client) -> None:
    write_rows(embedded, [b"a", b"b"])
    obs = CountingBatches()
    failpoints.enable("worker.after_observer", "raise")  # a's run commits, then "crashes"
    with pytest.raises(failpoints.FailpointError):
        process_cell(embedded, obs, pending(embedded, b"a"))
    failpoints.reset()
    results = process_cells(embedded, obs, [pending(embedded, b"a"), pending(embedded, b"b")])
    assert [r.outcome for r in results] == [Outcome.SKIPPED, Outcome.PROCESSED]
    assert obs.batches == [[b"b"]] and obs.calls == 2, "the covered cell is not run again"
    assert (runs(embedded, b"a"), runs(embedded, b"b")) == (1, 1)
    must_have_no_notification(embedded, b"a")
    must_have_no_notification(embedded, b"b")


def test_batch_crash_between_commit_and_delete_is_skipped_on_redelivery(
        embedded: Client) -> None:
    rows = [b"a", b"b", b"c"]
    write_rows(embedded, rows)
    obs = CountingBatches()
    failpoints.enable("worker.after_observer", "raise")
    with pytest.raises(failpoints.FailpointError):
        process_cells(embedded, obs, [pending(embedded, r) for r in rows])
    failpoints.reset()
    cells = [pending(embedded, r) for r in rows]
    assert all(len(c.entries) == 1 for c in cells), "the notifications outlive the crash"
    again = process_cells(embedded, obs, cells)
    assert [r.outcome for r in again] == [Outcome.SKIPPED] * 3
    assert [runs(embedded, r) for r in rows] == [1, 1, 1] and obs.calls == 3
    for row in rows:
        must_have_no_notification(embedded, row)


def test_batch_with_a_rolled_back_writer_runs_the_others(embedded: Client,
                                                         two_phase: Client) -> None:
    write_rows(embedded, [b"a"])
    txn = two_phase.begin()
    txn.set(b"b", COL, b"never")
    txn.set(b"s", b"other", b"x")
    failpoints.enable("commit.after_prewrite", "raise")
    with pytest.raises(failpoints.FailpointError):
        txn.commit()
    failpoints.reset()
    obs = CountingBatches()
    cells = pending_cells(embedded)
    assert [c.row for c in cells] == [b"a"], "the rolled-back writer of b notified nobody"
    results = process_cells(embedded, obs, cells)
    assert [r.outcome for r in results] == [Outcome.PROCESSED]
    assert obs.batches == [[b"a"]]
    assert pending_cells(embedded) == []


def test_failing_batch_writes_nothing(embedded: Client) -> None:
    write_rows(embedded, [b"a", b"b"])

    class Failing(CountingBatches):
        def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
            super().process(txn, row, column)
            if row == b"b":
                raise RuntimeError("bad cell")

    cells = [pending(embedded, b"a"), pending(embedded, b"b")]
    with pytest.raises(RuntimeError):
        process_cells(embedded, Failing(), cells)
    assert (runs(embedded, b"a"), ack_of(embedded, b"a")) == (0, 0), "a's effect is not kept"
    assert len(pending(embedded, b"a").entries) == 1


def test_batch_racing_a_single_run_commits_each_change_once(embedded: Client) -> None:
    write_rows(embedded, [b"a", b"b"])
    both_inside = threading.Barrier(2, timeout=30)

    class Racing(CountingBatches):
        def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
            super().process(txn, row, column)
            if row == b"b":
                both_inside.wait()  # both have read b's old ack before either commits

    obs = Racing()
    cells = [pending(embedded, b"a"), pending(embedded, b"b")]
    outcomes: list[object] = []

    def run(batch: list[PendingCell]) -> None:
        try:
            outcomes.append([r.outcome for r in run_observer_batch(embedded, obs, batch)])
        except CommitConflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in (cells, cells[1:])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(isinstance(o, CommitConflict) for o in outcomes) == 1, outcomes
    for _ in range(2):  # the loser, retried: whatever is covered now is skipped
        run_observer_batch(embedded, obs, cells)
    assert (runs(embedded, b"a"), runs(embedded, b"b")) == (1, 1)

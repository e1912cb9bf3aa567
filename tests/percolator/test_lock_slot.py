"""One lock slot per cell: where locks live, and why every step acting on its own lock
checks that the slot still holds it.

The slot (``l<column>`` at ``layout.LOCK_SLOT_TS``) is taken by one transaction after
another.  Once a transaction is decided, a reader may settle its cells and a later
transaction lock them: a late step of the first (a secondary's commit or rollback, a
heartbeat, a resolver acting on a lock it read earlier, the commit point, a seal) must
leave the later lock alone.  Protocol phases are driven one by one; TTLs expire on a
fake clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bigtable_lite import (
    ALL_TIME,
    Cell,
    DataCorruption,
    Put,
    RowMutation,
    RowRead,
    ScanRequest,
    TimeRange,
)
from percolator import Client, CommitConflict, committer, layout, mutations, records
from percolator.clock import FakeClock
from percolator.committer import CommitPlan
from percolator.resolve import FoundLock
from percolator.txn_status import COMMITTED, ROLLED_BACK, check_txn_status

from .test_records import format_1

TTL = 2.0
Key = tuple[bytes, bytes]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(tmp_path: Path, clock: FakeClock) -> Iterator[Client]:
    with Client.embedded(tmp_path / "d", lock_ttl=TTL, clock=clock) as c:
        yield c


def locked(client: Client, cells: list[Key], value: bytes = b"v") -> CommitPlan:
    """A transaction with every cell locked (the smallest is its primary), then stalled."""
    start_ts = client.oracle.get_timestamp()
    writes: dict[Key, tuple[bytes, bytes | None]] = {
        key: (records.PUT, value) for key in cells}
    plan = committer.plan(client.ctx, start_ts, writes, set())
    done: list[int] = []
    committer.lock_parts(client.ctx, plan, list(range(len(plan.parts))), done)
    assert len(done) == len(plan.parts)
    return plan


def slot(client: Client, row: bytes, column: bytes = b"c") -> records.Lock | None:
    """The lock in the cell's slot, if any."""
    cells = client.store.read_rows([RowRead(
        client.table, row, (layout.lock_column(column),), (),
        TimeRange(layout.LOCK_SLOT_TS, layout.LOCK_SLOT_TS), 1)])[0]
    return records.decode_lock(cells[0].value) if cells else None


def must_hold(client: Client, row: bytes, plan: CommitPlan, column: bytes = b"c") -> None:
    lock = slot(client, row, column)
    assert lock is not None and lock.start_ts == plan.start_ts, lock


def lock_versions(client: Client) -> list[tuple[bytes, Cell]]:
    """Every version of every lock column of the table."""
    return [(row.row, cell) for row in client.store.scan(ScanRequest(
        client.table, None, None, (), (layout.LOCK,), ALL_TIME, 0)) for cell in row.cells]


# --- where locks live -------------------------------------------------------------------------


def test_locks_live_in_one_slot_per_cell_and_name_their_transaction(client: Client) -> None:
    plan = locked(client, [(b"a", b"c"), (b"b", b"c")])
    found = lock_versions(client)
    assert [(row, cell.column, cell.ts) for row, cell in found] == [
        (b"a", b"lc", layout.LOCK_SLOT_TS), (b"b", b"lc", layout.LOCK_SLOT_TS)]
    for _, cell in found:
        assert cell.value.startswith(records.lock_owner(plan.start_ts))
        assert records.decode_lock(cell.value).start_ts == plan.start_ts
    committer.commit(client.ctx, plan)
    assert lock_versions(client) == []
    again = locked(client, [(b"a", b"c")])  # the next transaction takes the same slot
    assert [cell.ts for _, cell in lock_versions(client)] == [layout.LOCK_SLOT_TS]
    must_hold(client, b"a", again)


def test_readers_ignore_the_lock_of_a_transaction_that_started_after_them(
        client: Client) -> None:
    with client.transaction() as txn:
        txn.set(b"a", b"c", b"old")
    reader = client.begin()
    locked(client, [(b"a", b"c")], b"new")  # started after the reader: commits above it
    checks = client.resolver.status_checks
    assert reader.get(b"a", b"c") == b"old"
    assert list(reader.scan()) == [(b"a", b"c", b"old")]
    assert client.resolver.status_checks == checks, "no status check, no wait"


# --- late steps of a decided transaction leave a later lock alone -----------------------------


def test_a_late_secondary_commit_leaves_a_later_lock_alone(client: Client) -> None:
    first = locked(client, [(b"a", b"c"), (b"b", b"c")])
    commit_ts = client.oracle.get_timestamp()
    committer.commit_primary(client.ctx, first, commit_ts)
    assert client.begin().get(b"b", b"c") == b"v"  # a reader rolls b forward
    second = locked(client, [(b"b", b"c")], b"second")
    assert committer.commit_secondaries(client.ctx, first, commit_ts)  # late: a no-op
    must_hold(client, b"b", second)
    committer.commit_primary(client.ctx, second, client.oracle.get_timestamp())
    assert client.begin().get(b"b", b"c") == b"second"


def test_a_secondary_row_commit_settles_its_cells_still_locked_and_skips_the_others(
        client: Client) -> None:
    first = locked(client, [(b"a", b"c"), (b"b", b"c"), (b"b", b"d")])
    commit_ts = client.oracle.get_timestamp()
    committer.commit_primary(client.ctx, first, commit_ts)
    assert client.begin().get(b"b", b"c") == b"v"  # a reader rolls (b, c) forward only
    must_hold(client, b"b", first, b"d")
    second = locked(client, [(b"b", b"c")], b"second")
    checks = client.resolver.status_checks
    assert committer.commit_secondaries(client.ctx, first, commit_ts)
    assert slot(client, b"b", b"d") is None, "the cell still ours is committed"
    must_hold(client, b"b", second, b"c")
    committer.commit_primary(client.ctx, second, client.oracle.get_timestamp())
    assert client.begin().get_many([(b"b", b"c"), (b"b", b"d")]) == {
        (b"b", b"c"): b"second", (b"b", b"d"): b"v"}
    assert client.resolver.status_checks == checks, "nothing was left for readers"


def test_a_late_secondary_rollback_leaves_a_later_lock_alone(client: Client,
                                                               clock: FakeClock) -> None:
    first = locked(client, [(b"a", b"c"), (b"b", b"c"), (b"b", b"d")])
    clock.advance(TTL + 1)
    assert client.begin().get(b"b", b"c") is None  # rolls first back, and (b, c) with it
    second = locked(client, [(b"b", b"c")], b"second")
    late = mutations.rollback_secondary(client.table, b"b", [b"c", b"d"], first.start_ts)
    assert not client.store.mutate_rows([late])[0].applied
    must_hold(client, b"b", second, b"c")
    must_hold(client, b"b", first, b"d")
    assert mutations.per_cell(late)[1] == mutations.rollback_secondary(
        client.table, b"b", [b"d"], first.start_ts)
    assert [r.applied for r in client.store.mutate_rows(mutations.per_cell(late))] == [
        False, True]
    must_hold(client, b"b", second, b"c")
    assert slot(client, b"b", b"d") is None


@pytest.mark.parametrize("fate", ["committed", "rolled back"])
def test_a_resolver_acting_on_a_stale_lock_leaves_a_later_lock_alone(
        client: Client, clock: FakeClock, fate: str) -> None:
    first = locked(client, [(b"a", b"c"), (b"b", b"c")])
    lock = slot(client, b"b")
    assert lock is not None
    stale = FoundLock(b"b", b"c", lock)  # read by a reader that is slow to act on it
    if fate == "committed":
        committer.commit(client.ctx, first)
    else:
        clock.advance(TTL + 1)
        assert client.begin().get(b"b", b"c") is None
    second = locked(client, [(b"b", b"c")], b"second")
    assert client.resolver.resolve([stale]) == []  # decided: a roll forward or back, a no-op
    must_hold(client, b"b", second)
    expected = (COMMITTED if fate == "committed" else ROLLED_BACK)
    assert client.resolver.status(b"a", b"c", first.start_ts).state == expected


def test_a_late_heartbeat_leaves_a_later_lock_alone(client: Client, clock: FakeClock) -> None:
    first = locked(client, [(b"a", b"c")])
    keeper = client.ctx.keeper
    lock = slot(client, b"a")
    assert lock is not None
    keeper.hold(b"a", b"c", first.start_ts, first.parts[0][1][0], lock.expires_at_ms)
    clock.advance(TTL + 1)  # the owner stalled: a checker rolls it back
    assert check_txn_status(client.store, client.table, b"a", b"c", first.start_ts,
                            clock.now_ms()).state == ROLLED_BACK
    second = locked(client, [(b"a", b"c")], b"second")
    before = slot(client, b"a")
    keeper.refresh_due()  # the first owner's heartbeat: must not rewrite the slot
    keeper.release(first.start_ts)
    assert slot(client, b"a") == before
    must_hold(client, b"a", second)


def test_a_late_commit_point_fails_on_a_later_lock(client: Client, clock: FakeClock) -> None:
    first = locked(client, [(b"a", b"c"), (b"b", b"c")])
    clock.advance(TTL + 1)
    assert check_txn_status(client.store, client.table, b"a", b"c", first.start_ts,
                            clock.now_ms()).state == ROLLED_BACK
    second = locked(client, [(b"a", b"c")], b"second")
    with pytest.raises(CommitConflict):
        committer.commit_primary(client.ctx, first, client.oracle.get_timestamp())
    must_hold(client, b"a", second)
    committer.commit_primary(client.ctx, second, client.oracle.get_timestamp())
    assert client.begin().get(b"a", b"c") == b"second"


def test_a_seal_leaves_a_later_lock_in_the_primarys_slot_alone(client: Client,
                                                                clock: FakeClock) -> None:
    never_locked = client.oracle.get_timestamp()
    later = locked(client, [(b"p", b"c")], b"later")
    status = check_txn_status(client.store, client.table, b"p", b"c", never_locked,
                              clock.now_ms())
    assert status.state == ROLLED_BACK
    must_hold(client, b"p", later)
    committer.commit_primary(client.ctx, later, client.oracle.get_timestamp())
    assert client.begin().get(b"p", b"c") == b"later"
    late = mutations.prewrite(client.table, b"p", [mutations.CellWrite(b"c", records.PUT, b"x")],
                              never_locked, (b"p", b"c"), clock.now_ms() + 10_000)
    assert not client.store.mutate_rows([late])[0].applied, "the sealed primary stays dead"


@pytest.mark.parametrize("where", ["at its start_ts", "in the slot"])
def test_a_lock_of_the_format_before_the_slot_is_refused_not_misread(client: Client,
                                                                     where: str) -> None:
    """Format 1 stored a lock at its writer's start_ts: a scan meets it there; a lookup of
    the slot would meet one put there.  Both refuse it."""
    version = client.oracle.get_timestamp() if where == "at its start_ts" else \
        layout.LOCK_SLOT_TS
    client.store.mutate_rows([RowMutation(client.table, b"a", (
        Put(layout.lock_column(b"c"), version, format_1()),))])
    with pytest.raises(DataCorruption, match="format 1"):
        list(client.begin().scan())
    if version == layout.LOCK_SLOT_TS:
        with pytest.raises(DataCorruption, match="format 1"):
            client.begin().get(b"a", b"c")


def test_a_commit_whose_primary_was_rolled_back_commits_no_secondary(client: Client,
                                                                      clock: FakeClock) -> None:
    """Embedded, the primary's commit and the secondaries' are one guarded write: with the
    primary rolled back under it, no secondary is committed either (readers roll it back)."""
    first = locked(client, [(b"a", b"c"), (b"b", b"c")])
    clock.advance(TTL + 1)
    assert check_txn_status(client.store, client.table, b"a", b"c", first.start_ts,
                            clock.now_ms()).state == ROLLED_BACK  # the primary only
    must_hold(client, b"b", first)
    with pytest.raises(CommitConflict):
        committer.commit(client.ctx, first)
    must_hold(client, b"b", first)  # not committed by the failed step
    assert client.begin().get_many([(b"a", b"c"), (b"b", b"c")]) == {
        (b"a", b"c"): None, (b"b", b"c"): None}
    assert slot(client, b"b") is None


def test_one_guarded_write_commits_primary_and_secondaries(client: Client,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[bytes]] = []
    engine = client.store.engine  # type: ignore[attr-defined]
    real = engine.mutate_guarded

    def counted(batch: list[RowMutation], **kw: bool) -> list[object]:
        calls.append([m.row for m in batch])
        return real(batch, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(engine, "mutate_guarded", counted)
    plan = locked(client, [(b"a", b"c"), (b"b", b"c"), (b"b", b"d"), (b"c", b"c")])
    commit_ts = committer.commit(client.ctx, plan)
    assert calls == [[b"a", b"b", b"c"]], "the primary's row first, one call"
    assert lock_versions(client) == []
    got = client.begin().get_many([(b"a", b"c"), (b"b", b"c"), (b"b", b"d"), (b"c", b"c")])
    assert set(got.values()) == {b"v"} and commit_ts > plan.start_ts

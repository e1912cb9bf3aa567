"""One lock slot per cell: where locks live, and why every step acting on its own lock
checks that the slot still holds it.

The slot (``l<column>`` at ``layout.LOCK_SLOT_TS``) is taken by one transaction after
another.  Once a transaction is decided, a reader may settle its cells and a later
transaction lock them: a late step of the first (a secondary's commit or rollback, a
heartbeat, a resolver acting on a lock it read earlier, the commit point, a seal) must
leave the later lock alone.  Protocol steps are driven one by one, embedded and at a
real node alike; a late step is either sent late, or caught between its read and its
write by a store hook where the steps run; TTLs expire on a fake clock (the node's).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bigtable_lite import DataCorruption, Put, RowMutation, RowRead
from percolator import layout, records
from percolator._backend import COMMITTED, ROLLED_BACK
from percolator._keeper import LockKeeper
from percolator._steps.batches import per_cell
from percolator._steps.resolve_lock import FoundLock, resolve_locks
from percolator._steps.rollback import rollback_secondary

from .steps import (  # noqa: F401 - fake_node_fixture registers the fixture
    KINDS,
    TTL_MS,
    World,
    before_mutation,
    fake_node_fixture,
    lock_versions,
    must_commit,
    must_commit_fail,
    must_heartbeat,
    must_locked,
    must_prewrite,
    must_prewrite_conflict,
    must_resolve,
    must_rollback,
    must_see,
    must_status,
    must_unlocked,
    new_txn,
    open_world,
    slot,
    touches,
)
from .test_records import format_1

EXPIRED = TTL_MS / 1000 + 1  # seconds past every lock the helpers write
A, B, BD, C = (b"a", b"c"), (b"b", b"c"), (b"b", b"d"), (b"c", b"c")


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    node = request.getfixturevalue("fake_node") if request.param == "remote" else None
    with open_world(request.param, tmp_path / "d", node=node, name=request.node.name,
                    lock_ttl=TTL_MS / 1000) as w:
        yield w


# --- where locks live -------------------------------------------------------------------------


def test_locks_live_in_one_slot_per_cell_and_name_their_transaction(world: World) -> None:
    be, table = world.backend, world.table
    first = new_txn(be, table, [A, B])
    must_prewrite(be, first)
    found = lock_versions(be, table)
    assert [(row, cell.column, cell.ts) for row, cell in found] == [
        (b"a", b"lc", layout.LOCK_SLOT_TS), (b"b", b"lc", layout.LOCK_SLOT_TS)]
    for _, cell in found:
        assert cell.value.startswith(records.lock_owner(first.start_ts))
        assert records.decode_lock(cell.value).start_ts == first.start_ts
    must_locked(be, first, A)
    must_locked(be, first, B)
    must_commit(be, first)
    assert lock_versions(be, table) == []
    again = new_txn(be, table, [A])  # the next transaction takes the same slot
    must_prewrite(be, again)
    assert [cell.ts for _, cell in lock_versions(be, table)] == [layout.LOCK_SLOT_TS]
    must_locked(be, again, A)


def test_readers_ignore_the_lock_of_a_transaction_that_started_after_them(
        world: World) -> None:
    with world.client.transaction() as txn:
        txn.set(b"a", b"c", b"old")
    reader = world.client.begin()
    later = new_txn(world.backend, world.table, [A], b"new")  # commits above the reader
    must_prewrite(world.backend, later)
    checks = world.statuses.checks
    assert reader.get(b"a", b"c") == b"old"
    assert list(reader.scan()) == [(b"a", b"c", b"old")]
    assert world.statuses.checks == checks, "no status check, no wait"
    must_locked(world.backend, later, A)


# --- late steps of a decided transaction leave a later lock alone -----------------------------


def test_a_late_secondary_commit_leaves_a_later_lock_alone(world: World) -> None:
    be, table = world.backend, world.table
    first = new_txn(be, table, [A, B])
    must_prewrite(be, first)
    commit_ts = must_commit(be, first, keys=[])  # the commit point only
    must_see(be, table, B, b"v")  # a reader rolls b forward
    second = new_txn(be, table, [B], b"second")
    must_prewrite(be, second)
    # The owner's late requests for b: a retried commit step, a settle of b.
    assert must_commit(be, first) == commit_ts
    must_resolve(be, first, [B])
    must_locked(be, second, B)
    must_commit(be, second)
    must_see(be, table, B, b"second")


def test_a_secondary_settle_caught_between_its_read_and_its_write_leaves_a_later_lock_alone(
        world: World) -> None:
    """The settle of b reads first's lock; before its write, a reader rolls b forward and
    a later transaction locks b: the write must fail on the slot, not commit b again."""
    be, table = world.backend, world.table
    first = new_txn(be, table, [A, B])
    must_prewrite(be, first)
    commit_ts = must_commit(be, first, keys=[])
    second = new_txn(be, table, [B], b"second")

    def reader_then_second() -> None:
        must_see(world.local, table, B, b"v")
        must_prewrite(world.local, second)

    with before_mutation(world, reader_then_second, touches(layout.WRITE, b"b")) as hook:
        must_resolve(be, first, [B])
    assert hook.ran, "the race did not run: the test proves nothing"
    must_locked(be, second, B)
    cells = be.store.read_rows([RowRead(table, b"b", (layout.write_column(b"c"),))])[0]
    assert [cell.ts for cell in cells] == [commit_ts], "b committed once"
    must_commit(be, second)
    must_see(be, table, B, b"second")


def test_a_secondary_row_settle_commits_its_cells_still_locked_and_skips_the_others(
        world: World) -> None:
    """One row mutation settles (b, c) and (b, d); meanwhile a reader rolled (b, c)
    forward and a later transaction locked it: the row is re-sent cell by cell."""
    be, table = world.backend, world.table
    first = new_txn(be, table, [A, B, BD])
    must_prewrite(be, first)
    must_commit(be, first, keys=[])
    second = new_txn(be, table, [B], b"second")

    def reader_then_second() -> None:
        must_see(world.local, table, B, b"v")  # rolls (b, c) forward only
        must_locked(world.local, first, BD)
        must_prewrite(world.local, second)

    with before_mutation(world, reader_then_second, touches(layout.WRITE, b"b")) as hook:
        must_resolve(be, first, [B, BD])
    assert hook.ran, "the race did not run: the test proves nothing"
    must_unlocked(be, table, BD)  # the cell still ours is committed
    must_locked(be, second, B)
    must_commit(be, second)
    checks = world.statuses.checks
    assert world.client.begin().get_many([B, BD]) == {B: b"second", BD: b"v"}
    assert world.statuses.checks == checks, "nothing was left for readers"


def test_a_late_secondary_rollback_leaves_a_later_lock_alone(world: World) -> None:
    be, table = world.backend, world.table
    first = new_txn(be, table, [A, B, BD])
    must_prewrite(be, first)
    world.advance(EXPIRED)
    must_see(be, table, B, None)  # rolls first back, and (b, c) with it
    must_locked(be, first, BD)
    second = new_txn(be, table, [B], b"second")
    must_prewrite(be, second)
    must_rollback(be, first)  # the owner's late rollback of every cell
    must_locked(be, second, B)
    must_unlocked(be, table, BD)
    # How: the row's mutation fails on (b, c)'s slot, then is re-sent cell by cell.
    late = rollback_secondary(table, b"b", [b"c", b"d"], first.start_ts)
    assert per_cell(late) == [rollback_secondary(table, b"b", [b"c"], first.start_ts),
                              rollback_secondary(table, b"b", [b"d"], first.start_ts)]
    assert not be.store.mutate_rows([late])[0].applied
    must_locked(be, second, B)


@pytest.mark.parametrize("fate", ["committed", "rolled back"])
def test_a_resolver_acting_on_a_stale_lock_leaves_a_later_lock_alone(
        world: World, fate: str) -> None:
    be, table = world.backend, world.table
    first = new_txn(be, table, [A, B])
    must_prewrite(be, first)
    stale = FoundLock(b"b", b"c", must_locked(be, first, B))  # read by a slow reader
    if fate == "committed":
        must_commit(be, first)
    else:
        world.advance(EXPIRED)
        must_see(be, table, B, None)
    second = new_txn(be, table, [B], b"second")
    must_prewrite(be, second)
    assert resolve_locks(world.ctx, table, [stale]) == []  # decided: settling it is a no-op
    must_locked(be, second, B)
    must_status(be, first, COMMITTED if fate == "committed" else ROLLED_BACK)


def test_a_late_heartbeat_leaves_a_later_lock_alone(world: World) -> None:
    be, table = world.backend, world.table
    first = new_txn(be, table, [A])
    must_prewrite(be, first)
    keeper = LockKeeper(be, world.clock, TTL_MS / 1000)
    keeper.close()  # no thread: its heartbeats are sent below, by hand
    keeper.hold(table, A, first.start_ts)
    world.advance(EXPIRED)  # the owner stalled: a checker rolls it back
    must_status(be, first, ROLLED_BACK)
    second = new_txn(be, table, [A], b"second")
    must_prewrite(be, second)
    before = slot(be, table, A)
    refreshes = keeper.refreshes
    keeper.refresh_due()  # the first owner's heartbeat: must not rewrite the slot
    keeper.release(first.start_ts)
    assert keeper.refreshes == refreshes + 1, "the heartbeat was not sent"
    must_heartbeat(be, first, held=False)
    assert slot(be, table, A) == before
    must_locked(be, second, A)


def test_a_heartbeat_caught_between_its_read_and_its_write_leaves_a_later_lock_alone(
        world: World) -> None:
    be, table = world.backend, world.table
    first = new_txn(be, table, [A])
    must_prewrite(be, first)
    second = new_txn(be, table, [A], b"second")

    def first_expires_and_second_locks() -> None:
        world.advance(EXPIRED)
        must_status(world.local, first, ROLLED_BACK)
        must_prewrite(world.local, second)

    with before_mutation(world, first_expires_and_second_locks,
                         touches(layout.LOCK, b"a")) as hook:
        must_heartbeat(be, first, held=False, ttl_ms=TTL_MS * 10)
    assert hook.ran, "the race did not run: the test proves nothing"
    lock = must_locked(be, second, A)
    assert lock.expires_at_ms == world.clock.now_ms() + TTL_MS, "the later lock was rewritten"


def test_a_late_commit_point_fails_on_a_later_lock(world: World) -> None:
    be, table = world.backend, world.table
    first = new_txn(be, table, [A, B])
    must_prewrite(be, first)
    world.advance(EXPIRED)
    must_status(be, first, ROLLED_BACK)
    second = new_txn(be, table, [A], b"second")
    must_prewrite(be, second)
    must_commit_fail(be, first)
    must_locked(be, second, A)
    must_commit(be, second)
    must_see(be, table, A, b"second")


def test_a_commit_point_caught_between_its_read_and_its_write_fails_on_a_later_lock(
        world: World) -> None:
    """The commit step read first's locks; before its write, first expired, was rolled
    back and a later transaction locked the primary: nothing of first is committed."""
    be, table = world.backend, world.table
    first = new_txn(be, table, [A, B])
    must_prewrite(be, first)
    second = new_txn(be, table, [A], b"second")

    def first_expires_and_second_locks() -> None:
        world.advance(EXPIRED)
        must_status(world.local, first, ROLLED_BACK)
        must_prewrite(world.local, second)

    with before_mutation(world, first_expires_and_second_locks,
                         touches(layout.WRITE, b"a")) as hook:
        must_commit_fail(be, first)
    assert hook.ran, "the race did not run: the test proves nothing"
    must_locked(be, second, A)
    must_locked(be, first, B)  # not committed by the failed step; readers roll it back
    must_see(be, table, B, None)
    must_unlocked(be, table, B)
    must_commit(be, second)
    must_see(be, table, A, b"second")


def test_a_seal_leaves_a_later_lock_in_the_primarys_slot_alone(world: World) -> None:
    be, table = world.backend, world.table
    never_locked = new_txn(be, table, [(b"p", b"c")], b"x")
    later = new_txn(be, table, [(b"p", b"c")], b"later")
    must_prewrite(be, later)
    must_status(be, never_locked, ROLLED_BACK)  # sealed
    must_locked(be, later, (b"p", b"c"))
    must_commit(be, later)
    must_see(be, table, (b"p", b"c"), b"later")
    must_prewrite_conflict(be, never_locked)  # the sealed primary stays dead
    must_status(be, never_locked, ROLLED_BACK)
    must_unlocked(be, table, (b"p", b"c"))
    must_see(be, table, (b"p", b"c"), b"later")


@pytest.mark.parametrize("where", ["at its start_ts", "in the slot"])
def test_a_lock_of_the_format_before_the_slot_is_refused_not_misread(world: World,
                                                                     where: str) -> None:
    """Format 1 stored a lock at its writer's start_ts: a scan meets it there; a lookup of
    the slot would meet one put there.  Both refuse it."""
    version = world.client.timestamp() if where == "at its start_ts" else layout.LOCK_SLOT_TS
    world.backend.store.mutate_rows([RowMutation(world.table, b"a", (
        Put(layout.lock_column(b"c"), version, format_1()),))])
    with pytest.raises(DataCorruption, match="format 1"):
        list(world.client.begin().scan())
    if version == layout.LOCK_SLOT_TS:
        with pytest.raises(DataCorruption, match="format 1"):
            world.client.begin().get(b"a", b"c")


def test_a_commit_whose_primary_was_rolled_back_commits_no_secondary(world: World) -> None:
    """The primary's commit and the secondaries' are one guarded write: with the primary
    rolled back under it, no secondary is committed either (readers roll it back)."""
    be, table = world.backend, world.table
    first = new_txn(be, table, [A, B])
    must_prewrite(be, first)
    world.advance(EXPIRED)
    must_status(be, first, ROLLED_BACK)  # the primary only
    must_locked(be, first, B)
    must_commit_fail(be, first)
    must_locked(be, first, B)  # not committed by the failed step
    assert world.client.begin().get_many([A, B]) == {A: None, B: None}
    must_unlocked(be, table, B)


def test_one_guarded_write_commits_primary_and_secondaries(world: World) -> None:
    be, table = world.backend, world.table
    txn = new_txn(be, table, [A, B, BD, C])
    must_prewrite(be, txn)
    calls: list[list[bytes]] = []
    store = world.ctx.store

    class Counted:
        def mutate_guarded(self, batch: list[RowMutation], **kw: bool) -> object:
            calls.append([m.row for m in batch])
            return store.mutate_guarded(batch, **kw)

        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

    world.ctx.store = Counted()  # type: ignore[assignment]
    try:
        commit_ts = must_commit(be, txn)
    finally:
        world.ctx.store = store
    assert calls == [[b"a", b"b", b"c"]], "the primary's row first, one call"
    assert lock_versions(be, table) == []
    got = world.client.begin().get_many([A, B, BD, C])
    assert set(got.values()) == {b"v"} and commit_ts > txn.start_ts

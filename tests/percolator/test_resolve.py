"""Lock resolution, driven step by step: roll forward, roll back, seal, batch, wait.

Embedded and at a real node alike (the node resolves the locks its reads meet); TTLs
expire on a fake clock, the node's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bigtable_lite import Unavailable
from percolator import CommitConflict, LockWaitTimeout, layout, records
from percolator._backend import COMMITTED, LOCKED, ROLLED_BACK, CellWrite, Conflict
from percolator._steps.prewrite import prewrite_row

from .steps import (  # noqa: F401 - fake_node_fixture registers the fixture
    KINDS,
    TTL_MS,
    World,
    before_mutation,
    fake_node_fixture,
    lock_versions,
    must_commit,
    must_commit_fail,
    must_locked,
    must_prewrite,
    must_prewrite_conflict,
    must_resolve,
    must_see,
    must_see_locked,
    must_status,
    must_unlocked,
    new_txn,
    open_world,
    touches,
)

ROWS = [b"row%04d" % i for i in range(1000)]
EXPIRED = TTL_MS / 1000 + 1
A, B = (b"a", b"c"), (b"b", b"c")


def cells(rows: list[bytes]) -> list[tuple[bytes, bytes]]:
    return [(row, b"c") for row in rows]


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    node = request.getfixturevalue("fake_node") if request.param == "remote" else None
    with open_world(request.param, tmp_path / "d", node=node, name=request.node.name,
                    lock_ttl=TTL_MS / 1000) as w:
        yield w


def scan_values(world: World) -> dict[bytes, bytes]:
    return {row: value for row, _, value in world.client.begin().scan(columns=[b"c"])}


def test_thousand_stranded_locks_of_a_dead_transaction_cost_one_status_check(
        world: World) -> None:
    be = world.backend
    dead = new_txn(be, world.table, cells(ROWS))
    must_prewrite(be, dead)
    world.advance(EXPIRED)  # the owner died: its primary lock expires
    checks = world.statuses.checks
    assert scan_values(world) == {}
    assert world.statuses.checks - checks == 1
    assert lock_versions(be, world.table) == [], "every stranded lock was rolled back"
    with world.client.transaction() as txn:  # the cells can be written again
        txn.set(ROWS[500], b"c", b"again")
    assert scan_values(world) == {ROWS[500]: b"again"}


def test_committed_primary_rolls_all_secondaries_forward(world: World) -> None:
    be = world.backend
    txn = new_txn(be, world.table, cells(ROWS), b"x" * 300)  # values in the data column
    must_prewrite(be, txn)
    must_commit(be, txn, keys=[])  # the commit point only
    # The client "dies" before its secondaries: readers roll them forward, no waiting.
    checks = world.statuses.checks
    values = scan_values(world)
    assert values == {row: b"x" * 300 for row in ROWS}
    assert world.statuses.checks - checks <= 1
    assert lock_versions(be, world.table) == []
    assert scan_values(world) == values  # and they stay committed


def test_delayed_prewrite_and_commit_of_a_rolled_back_primary_fail(world: World) -> None:
    be = world.backend
    txn = new_txn(be, world.table, cells(ROWS[:2]))
    must_prewrite(be, txn)
    world.advance(EXPIRED)
    must_status(be, txn, ROLLED_BACK)
    # The dead client's requests arrive late: neither may succeed.
    must_prewrite_conflict(be, txn, reason=Conflict.ROLLED_BACK)
    must_commit_fail(be, txn)
    must_unlocked(be, world.table, txn.primary)
    must_locked(be, txn, txn.secondaries[0])  # the first prewrite's, stranded
    assert scan_values(world) == {}  # a reader rolls it back
    assert lock_versions(be, world.table) == []


def test_a_primary_never_locked_is_sealed(world: World) -> None:
    be = world.backend
    txn = new_txn(be, world.table, [(b"p", b"c")])
    must_status(be, txn, ROLLED_BACK)
    must_prewrite_conflict(be, txn, reason=Conflict.ROLLED_BACK)
    must_unlocked(be, world.table, (b"p", b"c"))


def test_commit_is_idempotent_and_status_is_cached(world: World) -> None:
    be = world.backend
    txn = new_txn(be, world.table, cells(ROWS[:3]))
    must_prewrite(be, txn)
    commit_ts = must_commit(be, txn, keys=[])
    must_resolve(be, txn, txn.secondaries)
    must_resolve(be, txn, txn.secondaries)  # a retry changes nothing
    assert must_commit(be, txn) == commit_ts  # a retried commit step answers its commit
    must_status(be, txn, COMMITTED, commit_ts)
    checks = world.statuses.checks
    must_status(be, txn, COMMITTED, commit_ts)
    assert world.statuses.checks == checks
    assert scan_values(world) == {row: b"v" for row in ROWS[:3]}


def test_reader_gives_up_on_a_live_lock_after_its_wait_limit(world: World) -> None:
    be = world.backend
    world.client.ctx.lock_wait_timeout = 1.0
    txn = new_txn(be, world.table, cells(ROWS[:2]))
    must_prewrite(be, txn, ttl_ms=60_000)
    with pytest.raises(LockWaitTimeout):
        world.client.begin().get(ROWS[1], b"c")  # waits on the fake clock, moving it
    # Nothing was rolled back: the owner can still commit.
    must_status(be, txn, LOCKED)
    must_commit(be, txn)
    assert world.client.begin().get(ROWS[1], b"c") == b"v"


@pytest.mark.parametrize("phases", ["one phase", "two phases"])
def test_a_failed_primary_prewrite_leaves_no_secondary_lock(world: World, phases: str) -> None:
    w = world
    w.client.ctx.one_phase = phases == "one phase"
    txn = w.client.begin()
    with w.client.transaction() as other:
        other.set(b"a", b"c", b"other")
    txn.set(b"a", b"c", b"mine")
    txn.set(b"b", b"c", b"mine")
    with pytest.raises(CommitConflict, match="write-write conflict"):
        txn.commit()
    assert lock_versions(w.backend, w.table) == [], \
        "the secondary locked beside the primary is rolled back"
    assert w.client.begin().get_many([A, B]) == {A: b"other", B: None}


def test_a_dead_writers_secondary_beside_a_failed_primary_is_rolled_back_at_once(
        world: World) -> None:
    """One prewrite call: the primary fails (a write after its start), b is locked; the
    step dies before it undoes b.  A reader meeting b finds the primary without a trace:
    it seals the primary and rolls b back without waiting for b's TTL."""
    be, table = world.backend, world.table
    txn = new_txn(be, table, [A, B], b"mine")
    with world.client.transaction() as other:
        other.set(b"a", b"c", b"other")

    def crash() -> None:
        raise Unavailable("the step's process died here (test)")

    with before_mutation(world, crash, touches(layout.ROLLBACK, b"a")) as hook:
        with pytest.raises(Unavailable):
            must_prewrite_conflict(be, txn)
    assert hook.ran, "the crash did not happen: the test proves nothing"
    must_locked(be, txn, B)
    must_see(be, table, B, None)  # clock unmoved: b's lock has not expired
    assert lock_versions(be, table) == []
    must_status(be, txn, ROLLED_BACK)
    must_prewrite_conflict(be, txn, keys=[A])  # the sealed primary stays dead
    must_unlocked(be, table, A)


@pytest.mark.parametrize("value", [b"v", b"L" * 300], ids=["inlined", "data column"])
@pytest.mark.parametrize("writer", ["locks and commits", "locks"])
def test_a_seal_never_lands_on_a_primary_locked_after_the_status_read(
        world: World, writer: str, value: bytes) -> None:
    """A checker finds no trace of the primary (the writer's prewrite of it was blocked
    and is retried), then the writer locks (and commits) it, then the checker's seal
    arrives: the seal must fail, and the status is the writer's (a marker and erased
    data beside a commit would let readers roll the other cells back: a torn
    transaction)."""
    be, table = world.backend, world.table
    txn = new_txn(be, table, {A: value, B: b"v"})
    # The secondary only, so far: a prewrite refuses to lock it before its primary, so
    # the state (a reader's view while the primary's prewrite is retried) is stored
    # directly, as the step would have stored it.
    expires = world.local.clock.now_ms() + 60_000
    assert world.local.store.mutate_rows([prewrite_row(
        table, B[0], [CellWrite(B[1], records.PUT, b"v")], txn.start_ts, A, expires)])[0].applied
    commit_ts: list[int] = []

    def writer_gets_there_first() -> None:
        must_prewrite(world.local, txn, keys=[A])
        if writer == "locks and commits":
            commit_ts.append(must_commit(world.local, txn, keys=[]))

    with before_mutation(world, writer_gets_there_first, touches(layout.ROLLBACK, b"a")) as hook:
        status = be.check_txn_status(table, A, txn.start_ts)
    assert hook.ran, "the race did not run: the test proves nothing"
    if writer == "locks and commits":
        assert (status.state, status.commit_ts) == (COMMITTED, commit_ts[0])
    else:
        assert status.state == LOCKED
        must_see_locked(be, txn, B)  # alive: readers wait, nobody rolls it back
        commit_ts.append(must_commit(be, txn))
    assert world.client.begin().get_many([A, B]) == {A: value, B: b"v"}


def test_a_primary_behind_anothers_write_is_rolled_back_for_good(world: World) -> None:
    be = world.backend
    txn = new_txn(be, world.table, [A], b"late")
    with world.client.transaction() as other:  # commits the primary's cell after start_ts
        other.set(b"a", b"c", b"other")
    must_status(be, txn, ROLLED_BACK)
    must_prewrite_conflict(be, txn)  # its primary can never be locked
    must_status(be, txn, ROLLED_BACK)
    must_see(be, world.table, A, b"other")


def test_a_primary_blocked_beside_locked_secondaries_is_not_retried(world: World) -> None:
    """The primary's prewrite meets a dead transaction's lock in a call that locked b
    too: a reader meeting b meanwhile may seal the primary, so the step resolves the dead
    lock but does not retry the primary; it gives up, and undoes b."""
    be, table = world.backend, world.table
    dead = new_txn(be, table, [A], b"dead")  # a writer that dies holding a lock on a
    must_prewrite(be, dead)
    world.advance(EXPIRED)
    txn = new_txn(be, table, [A, B], b"mine")
    conflict = must_prewrite_conflict(be, txn, reason=Conflict.LOCKED)
    assert (conflict.row, conflict.column, conflict.lock_start_ts) == (
        *A, dead.start_ts)
    assert lock_versions(be, table) == [], "the dead lock resolved, the secondary rolled back"
    must_status(be, dead, ROLLED_BACK)
    must_status(be, txn, ROLLED_BACK)  # sealed: never locked later at this start_ts
    # Through a transaction (two phases): the conflict, then the next attempt goes through.
    world.client.ctx.one_phase = False
    dead = new_txn(be, table, [A], b"dead")
    must_prewrite(be, dead)
    world.advance(EXPIRED)
    mine = world.client.begin()
    mine.set(b"a", b"c", b"mine")
    mine.set(b"b", b"c", b"mine")
    with pytest.raises(CommitConflict):
        mine.commit()
    assert lock_versions(be, table) == []
    with world.client.transaction() as again:
        again.set(b"a", b"c", b"mine")
        again.set(b"b", b"c", b"mine")
    assert scan_values(world) == {b"a": b"mine", b"b": b"mine"}

"""The commit and prewrite steps on their own: what a commit writes comes from the
prewritten locks, a commit is idempotent, a prewrite locks all its cells or none, and
a step naming a cell as its transaction's primary acts only on the real primary.

Embedded and at a real node alike; the node's commit command is also sent raw, as a
foreign client would (a node trusts no client).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bigtable_lite import ALL_TIME, InvalidArgument, ScanRequest
from percolator import layout
from percolator._backend import (
    COMMITTED,
    LOCKED,
    ROLLED_BACK,
    CommitRequest,
    Conflict,
    PrewriteRequest,
)
from percolator._node_codec import SERVICE_NAME
from percolator.node import Node
from percolator.v1 import node_pb2 as pb

from .steps import (  # noqa: F401 - fake_node_fixture registers the fixture
    KINDS,
    TTL_MS,
    World,
    fake_node_fixture,
    lock_versions,
    log_entries,
    must_commit,
    must_heartbeat,
    must_locked,
    must_prewrite,
    must_prewrite_conflict,
    must_see,
    must_status,
    must_unlocked,
    new_txn,
    open_world,
)

A, B, C, D, X = (b"a", b"c"), (b"b", b"c"), (b"c", b"c"), (b"d", b"c"), (b"x", b"c")
LONG = b"L" * 300  # too long to inline: in the data column at start_ts


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    node = request.getfixturevalue("fake_node") if request.param == "remote" else None
    with open_world(request.param, tmp_path / "d", node=node, name=request.node.name,
                    lock_ttl=TTL_MS / 1000) as w:
        yield w


def stored(world: World, tables: tuple[bytes, ...] = ()) -> list[tuple[bytes, bytes, int, bytes]]:
    """Every stored version of the world's table (and ``tables``)."""
    out = []
    for table in (world.table, *tables):
        for row in world.backend.store.scan(ScanRequest(table, None, None, (), (),
                                                         ALL_TIME, 0)):
            out += [(row.row, cell.column, cell.ts, cell.value) for cell in row.cells]
    return out


def send_raw(node: Node, command: pb.Command) -> pb.Result:
    """One command in a Batch call of its own, as any gRPC client can send it."""
    with grpc.insecure_channel(node.address) as channel:
        call = channel.unary_unary(f"/{SERVICE_NAME}/Batch",
                                   request_serializer=lambda raw: raw,
                                   response_deserializer=pb.BatchResponse.FromString)
        reply = call(pb.BatchRequest(commands=[command]).SerializeToString(), timeout=30)
    assert len(reply.results) == 1
    result: pb.Result = reply.results[0]
    return result


def rows_of(*keys: tuple[bytes, bytes]) -> list[pb.RowColumns]:
    return [pb.RowColumns(row=row, columns=[column]) for row, column in keys]


# --- commit writes what the locks hold --------------------------------------------------------


def test_commit_writes_the_values_its_locks_hold(world: World) -> None:
    be, table = world.backend, world.table
    with world.client.transaction() as txn:
        txn.set(b"d", b"c", b"old")
    mine = new_txn(be, table, {A: b"A", B: LONG, D: None})  # a put, a long put, a delete
    must_prewrite(be, mine)
    # The commit request names cells, never values: what it writes is in the locks.
    assert set(CommitRequest._fields) == {"table", "start_ts", "primary", "keys", "weak"}
    must_commit(be, mine)
    for key, value in [(A, b"A"), (B, LONG), (D, None)]:
        must_see(be, table, key, value)
    assert lock_versions(be, table) == []


def test_the_commit_command_carries_no_values_and_refuses_fields_it_does_not_know(
        fake_node: Node) -> None:
    assert {f.name for f in pb.CommitRequest.DESCRIPTOR.fields} == {
        "table", "start_ts", "primary", "secondaries", "weak"}
    request = pb.CommitRequest(table=b"t_values", start_ts=5, primary=pb.Key(row=b"a",
                                                                             column=b"c"))
    command = pb.Command()
    # A value tacked on as a field the node does not know (number 99, bytes).
    command.commit.MergeFromString(request.SerializeToString() + b"\x9a\x06\x01Z")
    result = send_raw(fake_node, command)
    assert result.WhichOneof("kind") == "error"
    assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "unknown" in result.error.message


def test_a_raw_commit_of_another_transaction_commits_only_what_it_prewrote(
        request: pytest.FixtureRequest, fake_node: Node, tmp_path: Path) -> None:
    with open_world("remote", tmp_path, node=fake_node, name=request.node.name) as world:
        be, table = world.backend, world.table
        with world.client.transaction() as txn:
            txn.set(b"x", b"c", b"x-old")
        theirs = new_txn(be, table, {A: b"A", B: LONG})
        must_prewrite(be, theirs)
        before = stored(world)
        # A foreign client names their start_ts, their primary, their secondary and a
        # cell they never prewrote.
        result = send_raw(fake_node, pb.Command(commit=pb.CommitRequest(
            table=table, start_ts=theirs.start_ts, primary=pb.Key(row=b"a", column=b"c"),
            secondaries=rows_of(B, X))))
        assert result.WhichOneof("kind") == "commit" and result.commit.committed
        commit_ts = result.commit.commit_ts
        must_status(be, theirs, COMMITTED, commit_ts)
        for key, value in [(A, b"A"), (B, LONG), (X, b"x-old")]:
            must_see(be, table, key, value)
        new = sorted(set(stored(world)) - set(before))
        assert [(row, column, ts) for row, column, ts, _ in new] == [
            (b"a", layout.write_column(b"c"), commit_ts),
            (b"b", layout.write_column(b"c"), commit_ts)], "x was not written"


# --- a step naming a secondary as the primary -------------------------------------------------


def test_a_commit_naming_a_secondary_as_the_primary_commits_nothing(world: World) -> None:
    """Were the secondary committed as if it were the commit point, the real primary's
    lock could still expire and be rolled back: a torn transaction."""
    be, table = world.backend, world.table
    theirs = new_txn(be, table, [A, B])
    must_prewrite(be, theirs)
    before = stored(world)
    with pytest.raises(InvalidArgument, match="not the primary"):
        be.commit(CommitRequest(table, theirs.start_ts, B, []))
    assert stored(world) == before
    must_status(be, theirs, LOCKED)
    must_commit(be, theirs)  # the owner's commit is unharmed
    assert world.client.begin().get_many([A, B]) == {A: b"v", B: b"v"}


def test_a_raw_commit_naming_a_secondary_as_the_primary_is_refused(
        request: pytest.FixtureRequest, fake_node: Node, tmp_path: Path) -> None:
    with open_world("remote", tmp_path, node=fake_node, name=request.node.name) as world:
        be, table = world.backend, world.table
        theirs = new_txn(be, table, [A, B])
        must_prewrite(be, theirs)
        before = stored(world)
        result = send_raw(fake_node, pb.Command(commit=pb.CommitRequest(
            table=table, start_ts=theirs.start_ts, primary=pb.Key(row=b"b", column=b"c"))))
        assert result.WhichOneof("kind") == "error"
        assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "not the primary" in result.error.message
        assert stored(world) == before
        world.advance(TTL_MS / 1000 + 1)  # the owner dies: readers roll it all back
        assert world.client.begin().get_many([A, B]) == {A: None, B: None}


def test_a_rollback_naming_a_secondary_as_the_primary_erases_nothing(world: World) -> None:
    """Were the secondary rolled back as a primary (marker, lock and data erased), the
    owner would then commit without it: a torn transaction."""
    be, table = world.backend, world.table
    theirs = new_txn(be, table, {A: b"A", B: LONG})
    must_prewrite(be, theirs)
    before = stored(world)
    with pytest.raises(InvalidArgument, match="not the primary"):
        be.rollback(table, theirs.start_ts, B, [])
    assert stored(world) == before
    must_commit(be, theirs)
    assert world.client.begin().get_many([A, B]) == {A: b"A", B: LONG}


def test_a_status_check_naming_an_expired_secondary_as_the_primary_rolls_nothing_back(
        world: World) -> None:
    """A secondary's lock keeps its first expiry while heartbeats move the primary's: a
    checker taking the secondary for the primary would roll back a live transaction's
    cell."""
    be, table = world.backend, world.table
    theirs = new_txn(be, table, [A, B])
    must_prewrite(be, theirs)
    world.advance(TTL_MS / 1000 - 0.5)
    must_heartbeat(be, theirs, held=True)
    world.advance(1)  # b's lock has expired, the primary's has not
    before = stored(world)
    with pytest.raises(InvalidArgument, match="not the primary"):
        be.check_txn_status(table, B, theirs.start_ts)
    assert stored(world) == before
    must_status(be, theirs, LOCKED)
    must_commit(be, theirs)
    assert world.client.begin().get_many([A, B]) == {A: b"v", B: b"v"}


def test_a_heartbeat_naming_a_secondary_as_the_primary_is_refused(world: World) -> None:
    be, table = world.backend, world.table
    theirs = new_txn(be, table, [A, B])
    must_prewrite(be, theirs)
    before = stored(world)
    with pytest.raises(InvalidArgument, match="not the primary"):
        be.heartbeat(table, theirs.start_ts, B, TTL_MS * 10)
    assert stored(world) == before


# --- commit is idempotent -----------------------------------------------------------------------


def test_a_second_commit_answers_the_first_and_writes_nothing(world: World) -> None:
    be, table = world.backend, world.table
    world.client.register_observed_columns([b"c"])
    mine = new_txn(be, table, {A: b"A", B: LONG, C: None})
    must_prewrite(be, mine)
    commit_ts = must_commit(be, mine)
    notify = layout.notify_table(table)
    after_first = stored(world, (notify,))
    notes = sorted((e.row, e.change_ts, e.position) for e in log_entries(world.client))
    assert notes == [(row, commit_ts, commit_ts) for row in (b"a", b"b", b"c")]
    assert must_commit(be, mine) == commit_ts  # a retry after a lost reply
    assert must_commit(be, mine, keys=[]) == commit_ts
    assert stored(world, (notify,)) == after_first, "the retries wrote nothing"
    must_status(be, mine, COMMITTED, commit_ts)


# --- prewrite: all or nothing -------------------------------------------------------------------


@pytest.mark.parametrize("blocker", ["a later write", "a live lock"])
def test_a_prewrite_conflicting_on_its_last_cell_locks_nothing_and_seals_the_primary(
        world: World, blocker: str) -> None:
    be, table = world.backend, world.table
    mine = new_txn(be, table, [A, B, C, D], b"mine")
    if blocker == "a later write":
        with world.client.transaction() as other:
            other.set(b"d", b"c", b"other")
        reason = Conflict.WRITE_CONFLICT
    else:
        other_txn = new_txn(be, table, [D], b"other")
        must_prewrite(be, other_txn, ttl_ms=60_000)
        reason = Conflict.LOCKED
    conflict = must_prewrite_conflict(be, mine, reason=reason)  # one call, every cell
    assert (conflict.row, conflict.column) == D
    for key in (A, B, C):
        must_unlocked(be, table, key)
    must_status(be, mine, ROLLED_BACK)
    must_prewrite_conflict(be, mine, keys=[A], reason=Conflict.ROLLED_BACK)  # for good
    for key in (A, B, C):
        must_see(be, table, key, None)


def test_a_prewrite_of_secondaries_before_their_primary_is_refused(world: World) -> None:
    """A request without its primary needs the primary locked first (an earlier request
    of the transaction): a lock naming a primary never locked can only be settled by
    sealing that primary (test_forged_prewrites)."""
    be, table = world.backend, world.table
    mine = new_txn(be, table, [A, B, C], b"mine")
    with pytest.raises(InvalidArgument, match="holds no primary lock"):
        be.prewrite(PrewriteRequest(table, mine.start_ts, mine.primary, TTL_MS,
                                    mine.parts([B, C])))
    assert lock_versions(be, table) == []
    with world.client.transaction() as other:
        other.set(b"c", b"c", b"other")
    # In order, the conflict on C undoes B and rolls the primary back for good.
    must_prewrite_conflict(be, mine, reason=Conflict.WRITE_CONFLICT)
    must_unlocked(be, table, B)
    must_unlocked(be, table, A)
    must_status(be, mine, ROLLED_BACK)
    must_prewrite_conflict(be, mine, keys=[A], reason=Conflict.ROLLED_BACK)
    assert lock_versions(be, table) == []


def test_a_prewrite_locks_every_cell_naming_the_primary(world: World) -> None:
    be, table = world.backend, world.table
    mine = new_txn(be, table, {A: b"A", B: LONG, D: None})
    must_prewrite(be, mine)
    for key in mine.keys:
        must_locked(be, mine, key)
    assert must_locked(be, mine, A).value == b"A"
    assert must_locked(be, mine, B).value is None  # in the data column instead

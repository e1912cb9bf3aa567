"""Prewrites a writer-role client crafts outside the protocol cannot wedge cells.

A lock names its transaction's primary; lock resolution learns the transaction's fate
there.  Cells of one start_ts prewritten under two primaries naming each other used to
leave locks no resolution could settle (each primary held a lock of that start_ts that
was not a primary lock, and the checker refused it): every later reader and writer of
those cells failed, for good.  Now the node refuses a prewrite whose primary does not
hold its transaction's primary lock (``_steps/prewrite.py``), and lock resolution
settles such locks anyway, whatever is stored (``_steps/check_txn_status.py``).

The refusals are checked on a real node, by raw batches over gRPC (unary and stream);
the resolution of stored states on an embedded client and on a node alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bigtable_lite import Put, RowMutation, RowRead, TimeRange
from percolator import Client, Transaction, layout, records
from percolator._backend import COMMITTED, ROLLED_BACK
from percolator._node_client import NodeClient
from percolator.clock import FakeClock
from percolator.node import Node
from percolator.v1 import node_pb2

from .steps import (
    KINDS,
    World,
    lock_versions,
    must_commit,
    must_locked,
    must_prewrite,
    must_rollback,
    must_see,
    must_status,
    new_txn,
    open_world,
    running_node,
)
from .test_node_batch import WAIT, must_fail, send

Code = grpc.StatusCode
TABLE = b"forged"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with running_node(tmp_path_factory.mktemp("forged") / "data", FakeClock()) as n:
        yield n


@pytest.fixture
def channel(node: Node) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(node.address) as ch:
        yield ch


def prewrite(table: bytes, start_ts: int, primary: tuple[bytes, bytes],
             *cells: tuple[bytes, bytes]) -> node_pb2.Command:
    """A raw prewrite command: put b"forged" in ``cells``, naming ``primary``."""
    return node_pb2.Command(prewrite=node_pb2.PrewriteRequest(
        table=table, start_ts=start_ts, primary=node_pb2.Key(row=primary[0], column=primary[1]),
        ttl_ms=60_000, rows=[node_pb2.RowWrites(row=row, cells=[node_pb2.CellWrite(
            column=column, value=b"forged")]) for row, column in cells]))


def set_ok(txn: Transaction, keys: list[tuple[bytes, bytes]]) -> None:
    for row, column in keys:
        txn.set(row, column, b"ok")


def stamp(channel: grpc.Channel, transport: str) -> int:
    reply = send(channel, transport, node_pb2.BatchRequest(commands=[node_pb2.Command(
        get_timestamps={"count": 1})]))
    return int(reply.results[0].get_timestamps.first)


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_prewrites_naming_each_other_as_primary_are_refused_and_lock_nothing(
        node: Node, channel: grpc.Channel, transport: str) -> None:
    table = TABLE + transport.encode()
    a, b = (b"a", b"c"), (b"b", b"c")
    start_ts = stamp(channel, transport)
    # The wedge: b locked naming a, a locked naming b, neither a primary lock.
    results = send(channel, transport, node_pb2.BatchRequest(commands=[
        prewrite(table, start_ts, a, b), prewrite(table, start_ts, b, a)])).results
    for result in results:
        must_fail(result, Code.INVALID_ARGUMENT, "InvalidArgument")
        assert "holds no primary lock of transaction" in result.error.message
    assert lock_versions(node.backend, table) == []
    # The cells serve as any: a writer writes them, a reader reads them.
    with Client(NodeClient(node.address, timeout=WAIT), table=table) as client:
        client.run(lambda txn: set_ok(txn, [a, b]))
        assert client.begin().get_many([a, b]) == {a: b"ok", b: b"ok"}


def test_a_prewrite_after_its_transaction_was_decided_locks_nothing(
        node: Node, channel: grpc.Channel) -> None:
    backend = node.backend
    table = TABLE + b"decided"
    committed = new_txn(backend, table, [(b"p", b"c")])
    must_prewrite(backend, committed)
    commit_ts = must_commit(backend, committed)
    rolled_back = new_txn(backend, table, [(b"q", b"c")])
    must_prewrite(backend, rolled_back)
    must_rollback(backend, rolled_back)
    results = send(channel, "unary", node_pb2.BatchRequest(commands=[
        # A lock added after the commit would be rolled forward to a commit_ts taken
        # before it existed: a reader between the two would see history change.
        prewrite(table, committed.start_ts, committed.primary, (b"late", b"c")),
        prewrite(table, rolled_back.start_ts, rolled_back.primary, (b"late", b"d")),
    ])).results
    must_fail(results[0], Code.INVALID_ARGUMENT, "InvalidArgument")
    assert f"committed at {commit_ts}" in results[0].error.message
    assert results[1].prewrite.conflict.reason == node_pb2.Conflict.ROLLED_BACK
    assert lock_versions(backend, table) == []
    must_see(backend, table, (b"late", b"c"), None)


def test_secondaries_prewritten_after_their_primary_are_taken(node: Node) -> None:
    """The protocol's own order, in several requests: the primary's first."""
    backend = node.backend
    txn = new_txn(backend, TABLE + b"order", [(b"p", b"c"), (b"s", b"c"), (b"t", b"c")])
    must_prewrite(backend, txn, [txn.primary])
    must_prewrite(backend, txn, [(b"s", b"c")])
    must_prewrite(backend, txn, [(b"t", b"c")])
    for key in txn.keys:
        must_locked(backend, txn, key)
    must_commit(backend, txn)
    must_see(backend, txn.table, (b"t", b"c"), b"v")


# --- whatever is stored is resolved ----------------------------------------------------------


def forge_lock(world: World, key: tuple[bytes, bytes], start_ts: int,
               primary: tuple[bytes, bytes]) -> None:
    """Store a lock of ``start_ts`` on ``key`` naming ``primary`` (not a primary lock), as
    an earlier version's node stored for the crafted prewrites above."""
    row, column = key
    lock = records.Lock(start_ts, records.PUT, primary[0], primary[1],
                        world.local.clock.now_ms() + 60_000, False, b"forged")
    result = world.local.store.mutate_rows([RowMutation(world.table, row, (Put(
        layout.lock_column(column), layout.LOCK_SLOT_TS, records.encode_lock(lock)),))])
    assert result[0].applied


def markers(world: World, key: tuple[bytes, bytes]) -> list[int]:
    row, column = key
    cells = world.local.store.read_rows([RowRead(
        world.table, row, (layout.rollback_column(column),), (), TimeRange(1, 2**64 - 1))])
    return [cell.ts for cell in cells[0]]


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path, node: Node) -> Iterator[World]:
    kind = request.param
    with open_world(kind, tmp_path / "data", node=node if kind == "remote" else None,
                    name=request.node.name) as w:
        yield w


@pytest.mark.parametrize("world", KINDS, indirect=True)
def test_locks_naming_each_other_as_primary_are_rolled_back(world: World) -> None:
    a, b = (b"a", b"c"), (b"b", b"c")
    start_ts = world.backend.timestamps(1)
    forge_lock(world, a, start_ts, b)
    forge_lock(world, b, start_ts, a)
    # A reader settles both (each primary is sealed: its transaction never locked it).
    assert world.client.begin().get_many([a, b]) == {a: None, b: None}
    assert lock_versions(world.local, world.table) == []
    assert markers(world, a) == [start_ts] and markers(world, b) == [start_ts]
    world.client.run(lambda txn: set_ok(txn, [a, b]))
    assert world.client.begin().get_many([a, b]) == {a: b"ok", b: b"ok"}


@pytest.mark.parametrize("world", KINDS, indirect=True)
def test_a_lock_naming_a_live_transactions_secondary_leaves_that_transaction_whole(
        world: World) -> None:
    backend = world.backend
    txn = new_txn(backend, world.table, [(b"p", b"c"), (b"s", b"c")], b"real")
    must_prewrite(backend, txn)
    forged = (b"x", b"c")
    forge_lock(world, forged, txn.start_ts, (b"s", b"c"))  # names txn's secondary
    # The reader settles the forged lock: s never held a primary lock of that start_ts.
    assert world.client.begin().get(*forged) is None
    assert lock_versions(world.local, world.table) != []  # txn's own locks stay
    must_locked(backend, txn, txn.primary)
    must_locked(backend, txn, (b"s", b"c"))
    must_status(backend, txn, "locked")
    # The real transaction commits whole; its primary's fate was never touched.
    commit_ts = must_commit(backend, txn)
    must_status(backend, txn, COMMITTED, commit_ts)
    assert world.client.begin().get_many(txn.keys + [forged]) == {
        (b"p", b"c"): b"real", (b"s", b"c"): b"real", forged: None}


@pytest.mark.parametrize("world", KINDS, indirect=True)
def test_a_caller_naming_a_secondary_as_primary_is_still_refused(world: World) -> None:
    """Lock resolution settles stored states; a caller's own mistake is still its error."""
    backend = world.backend
    txn = new_txn(backend, world.table, [(b"p", b"c"), (b"s", b"c")])
    must_prewrite(backend, txn)
    with pytest.raises(ValueError, match="is not the primary"):
        backend.check_txn_status(world.table, (b"s", b"c"), txn.start_ts)
    must_rollback(backend, txn)
    must_status(backend, txn, ROLLED_BACK)

"""Garbage collection and the Transactions service's open transactions.

A transaction the service holds open for a remote caller is a ``Transaction`` of the
node's own backend, registered with the running transactions the safe point reads:
open, it holds the safe point at or below its snapshot whatever the life time; once its
TTL passes without a call it expires and holds nothing; a Commit of it then, below the
safe point, is refused with SnapshotTooOld (FAILED_PRECONDITION, named in the
``bigtable-lite-error`` trailer), never answered as if it were known.  Nodes are real,
on a fake clock, GC life time 0, passes run by the test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from percolator import Client
from percolator._safe_point import HELD_BY
from percolator.clock import FakeClock
from percolator.node import Node

from .gc_helpers import eventually, gc_node
from .txn_service_client import ServiceClient, ServiceError, ServiceTxn

CELL = (b"acct", b"balance")
TOO_OLD = {"bigtable-lite-error": "SnapshotTooOld"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def node(tmp_path: Path, clock: FakeClock) -> Iterator[Node]:
    with gc_node(tmp_path / "node", clock=clock, life_time=0.0) as n:
        yield n


@pytest.fixture(params=["unary", "stream"])
def svc(node: Node, request: pytest.FixtureRequest) -> Iterator[ServiceClient]:
    with ServiceClient(node.address, timeout=30, stream=request.param == "stream") as client:
        yield client


@pytest.fixture
def native(node: Node) -> Iterator[Client]:
    with Client.connect(node.address) as client:
        yield client


def overwrite(client: Client, times: int) -> None:
    for i in range(times):
        with client.begin() as txn:
            txn.set(*CELL, b"v%d" % i)


def too_old(fn: object, *args: object) -> ServiceError:
    assert callable(fn)
    with pytest.raises(ServiceError) as info:
        fn(*args)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION, info.value
    assert {k: v for k, v in info.value.trailers.items() if k in TOO_OLD} == TOO_OLD
    assert "safe point" in info.value.details and "new snapshot" in info.value.details
    return info.value


def test_an_open_transaction_holds_the_safe_point_and_its_snapshot_stays_readable(
        node: Node, svc: ServiceClient, native: Client, clock: FakeClock) -> None:
    overwrite(native, 1)
    txn = svc.begin([CELL], ttl_ms=60_000)
    assert txn.values[CELL] == b"v0"
    overwrite(native, 5)
    for _ in range(3):  # passes while it is open, however long it has been
        clock.advance(30)
        txn.get(*CELL)  # a call: its TTL starts again
        gc = node.backend.collect_garbage()
        assert gc.safe_point <= txn.txn_id, gc
        assert gc.held_by == HELD_BY["transactions"], gc
    assert node.backend.collect_garbage().removed == 0  # nothing it can read went
    assert txn.get(*CELL) == b"v0"
    assert [(r, c, v) for r, c, v in txn.scan()] == [(*CELL, b"v0")]
    txn.set(b"other", b"c", b"x")
    commit_ts = txn.commit()
    clock.advance(1)
    gc = node.backend.collect_garbage()  # ended: it holds nothing any more
    assert gc.safe_point > txn.txn_id and gc.removed > 0, gc
    snap = native.begin()
    assert snap.get(*CELL) == b"v4" and snap.get(b"other", b"c") == b"x"
    assert commit_ts > txn.txn_id


def test_an_abandoned_transaction_holds_the_safe_point_until_its_ttl_then_is_too_old(
        node: Node, svc: ServiceClient, native: Client, clock: FakeClock) -> None:
    sessions = node.transactions.sessions
    overwrite(native, 2)
    held = svc.begin([CELL], ttl_ms=60_000)
    abandoned = svc.begin([CELL], ttl_ms=1_000)
    assert abandoned.values[CELL] == b"v1"
    overwrite(native, 3)
    clock.advance(0.5)
    assert node.backend.collect_garbage().safe_point <= held.txn_id < abandoned.txn_id
    held.rollback()
    clock.advance(0.4)  # within its TTL: it still holds
    assert node.backend.collect_garbage().safe_point <= abandoned.txn_id
    clock.advance(0.2)  # past its TTL: the node's reaper expires it (production's path)
    eventually(lambda: sessions.open == 0, "the abandoned transaction to expire")
    assert len(node.backend.snapshots) == 0
    gc = node.backend.collect_garbage()
    assert gc.safe_point > abandoned.txn_id and gc.removed > 0, gc
    with pytest.raises(ServiceError) as info:  # reads: it is gone
        abandoned.get(*CELL)
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    abandoned.set(b"late", b"c", b"1")
    too_old(abandoned.commit)  # its Commit: below the safe point, it can never commit
    assert native.begin().get(b"late", b"c") is None
    assert native.backend.read(native.table, None, [(b"late", b"c")]).locked == []


def test_a_forgotten_commit_retried_below_the_safe_point_is_too_old_never_committed_twice(
        node: Node, svc: ServiceClient, native: Client, clock: FakeClock) -> None:
    """A retry of a Commit whose answer was lost, after the node forgot the outcome and
    GC passed it: whether it committed can no longer be read there, so it is not
    answered either way (the caller learns it can never commit now)."""
    txn = svc.begin()
    txn.set(*CELL, b"once")
    commit_ts = txn.commit()
    overwrite(native, 2)  # supersedes it: GC may remove its record
    clock.advance(node.transactions.sessions.retain_ms / 1000 + 1)
    assert node.transactions.sessions.sweep() == 1
    gc = node.backend.collect_garbage()
    assert gc.safe_point > commit_ts and gc.write_records > 0, gc
    error = too_old(txn.commit)
    assert str(txn.txn_id) in error.details
    assert native.begin().get(*CELL) == b"v1"


def test_service_run_reruns_a_transaction_refused_as_too_old(
        node: Node, native: Client, clock: FakeClock) -> None:
    """The caller's retry rule: SnapshotTooOld on Commit is run again in a new
    transaction, like ABORTED (the test client's ``run`` follows it)."""
    sessions = node.transactions.sessions
    attempts: list[int] = []
    with ServiceClient(node.address, timeout=30) as svc:
        def transfer(txn: ServiceTxn) -> None:
            attempts.append(txn.txn_id)
            txn.set(*CELL, b"ran")
            if len(attempts) == 1:  # the first one stalls past its TTL and GC passes it
                clock.advance(2)
                deadline = time.monotonic() + 60
                while sessions.open:
                    assert time.monotonic() < deadline, "the transaction never expired"
                    sessions.sweep()
                overwrite(native, 1)
                assert node.backend.collect_garbage().safe_point > txn.txn_id

        svc.run(transfer, ttl_ms=1_000)
    assert len(attempts) == 2 and attempts[1] > attempts[0]
    assert native.begin().get(*CELL) == b"ran"

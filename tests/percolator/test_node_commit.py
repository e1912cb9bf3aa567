"""The commit step at the node: one command takes commit_ts, commits the primary, then the
secondaries it names (``percolator._steps.commit``, the Node's ``commit`` command); the
commit steps of one batch take their commit_ts from one oracle call.

Servers are real (127.0.0.1 port 0); where commands must meet in one batch, the node's
first batch is held until the others are queued (see test_node_batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bigtable_lite import ALL_TIME, Cell, RowRead, ScanRequest
from percolator import Client, CommitConflict, failpoints, layout, records
from percolator._backend import ROLLED_BACK, CommitOutcome, CommitRequest
from percolator._node_client import NodeClient
from percolator.clock import FakeClock
from percolator.oracle import OracleExhausted
from percolator.v1 import node_pb2

from .steps import Txn, must_locked, must_prewrite, must_see, must_status, new_txn
from .test_node_batch import (
    WAIT,
    FakeOracle,
    Served,
    hold_first_then,
    must_fail,
    read_command,
    send,
    serve,
)

TABLE = b"t"


def connect(served: Served, *, one_phase: bool = True) -> Client:
    """A transaction client of the served node."""
    return Client(NodeClient(served.address, timeout=WAIT), table=TABLE, one_phase=one_phase)


def node_of(client: Client) -> NodeClient:
    assert isinstance(client.backend, NodeClient)
    return client.backend


def write_records(served: Served, row: bytes, column: bytes = b"c") -> list[Cell]:
    return served.store.read_rows([RowRead(TABLE, row, (layout.write_column(column),))])[0]


def locks_left(served: Served) -> list[tuple[bytes, Cell]]:
    return [(r.row, cell) for r in served.store.scan(
        ScanRequest(TABLE, None, None, (), (layout.LOCK,), ALL_TIME, 0)) for cell in r.cells]


@pytest.mark.parametrize("one_phase", [False, True], ids=["two-phase", "one-phase"])
def test_a_transaction_commits_by_one_command_at_the_node(tmp_path: Path,
                                                          one_phase: bool) -> None:
    with serve(tmp_path / "data") as served, connect(served, one_phase=one_phase) as client:
        txn = client.begin()
        for row in (b"a", b"b", b"c"):
            txn.set(row, b"c", b"x" * 300 if row == b"b" else b"v-" + row)  # b: data column
        commit_ts = txn.commit()
        assert commit_ts > txn.start_ts
        kinds = served.service.kinds()
        assert kinds.count("get_timestamps") == 1, "commit_ts came with the commit step"
        if one_phase:
            assert kinds == ["get_timestamps", "one_phase"]
        else:
            assert kinds == ["get_timestamps", "prewrite", "commit"]
        # The primary and both secondaries are committed at the node, at commit_ts.
        for row in (b"a", b"b", b"c"):
            (write,) = write_records(served, row)
            assert write.ts == commit_ts
            assert records.decode_write(write.value).start_ts == txn.start_ts
        assert locks_left(served) == []
        reader = client.begin()
        assert reader.get_many([(r, b"c") for r in (b"a", b"b", b"c")]) == {
            (b"a", b"c"): b"v-a", (b"b", b"c"): b"x" * 300, (b"c", b"c"): b"v-c"}


def test_commits_of_one_batch_share_one_oracle_call(tmp_path: Path) -> None:
    oracle = FakeOracle()
    with serve(tmp_path / "data", oracle=oracle) as served, \
            NodeClient(served.address, timeout=WAIT) as node:
        txns = [new_txn(node, TABLE, [(b"p%d" % i, b"c"), (b"s%d" % i, b"c")], b"v%d" % i)
                for i in range(3)]
        for txn in txns:
            must_prewrite(node, txn)
        before, calls = oracle.next, oracle.calls
        results = hold_first_then(served, node, lambda: node.store.read_rows(
            [RowRead(TABLE, b"none")]), {
            f"c{i}": (lambda t=t: node.commit(CommitRequest(  # type: ignore[misc]
                TABLE, t.start_ts, t.primary, t.secondaries))) for i, t in enumerate(txns)})
        assert served.service.batches[-1] == ["commit"] * 3
        outcomes = [results[f"c{i}"] for i in range(3)]
        assert all(type(o) is CommitOutcome and o.committed for o in outcomes), outcomes
        # One contiguous range, one commit_ts each, taken after the batch arrived.
        assert sorted(o.commit_ts for o in outcomes) == [before, before + 1, before + 2]
        assert oracle.next == before + 3 and oracle.calls == calls + 1
        for txn, outcome in zip(txns, outcomes):
            for row, _ in txn.keys:
                assert [c.ts for c in write_records(served, row)] == [outcome.commit_ts]
            must_see(node, TABLE, txn.primary, txn.writes[txn.primary])
        assert locks_left(served) == []


def test_the_commit_of_a_rolled_back_primary_is_refused(tmp_path: Path) -> None:
    clock = FakeClock()
    with serve(tmp_path / "data", clock=clock) as served, \
            NodeClient(served.address, timeout=WAIT) as node:
        txn = new_txn(node, TABLE, [(b"a", b"c"), (b"b", b"c")])
        must_prewrite(node, txn, ttl_ms=1_000)
        clock.advance(2.0)  # the lock expired, by the node's clock
        must_status(node, txn, ROLLED_BACK)  # another client rolled the primary back
        outcome = node.commit(CommitRequest(TABLE, txn.start_ts, txn.primary,
                                            txn.secondaries))
        assert outcome == CommitOutcome(False)
        assert write_records(served, b"a") == [] and write_records(served, b"b") == [], \
            "secondaries of a refused commit stay uncommitted"
        must_locked(node, txn, (b"b", b"c"))  # left to readers (or its owner) to roll back
        must_see(node, TABLE, (b"b", b"c"), None)  # a reader rolls it back
        assert locks_left(served) == []


@pytest.fixture
def between_prewrite_and_commit(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Runs the callables put in the list at the client's ``commit.after_prewrite``."""
    todo: list[object] = []
    hit = failpoints.hit

    def hook(name: str) -> None:
        if name == "commit.after_prewrite":
            while todo:
                action = todo.pop(0)
                assert callable(action)
                action()
        hit(name)

    monkeypatch.setattr(failpoints, "hit", hook)
    yield todo


def test_a_client_whose_primary_was_rolled_back_meanwhile_gets_a_conflict(
        tmp_path: Path, between_prewrite_and_commit: list[object]) -> None:
    clock = FakeClock()
    with serve(tmp_path / "data", clock=clock) as served, \
            connect(served, one_phase=False) as client:
        txn = client.begin()
        txn.set(b"a", b"c", b"v")
        txn.set(b"b", b"c", b"v")

        def expire_and_roll_back() -> None:
            clock.advance(60.0)  # past the lock TTL (no heartbeat beats a stopped clock)
            status = client.backend.check_txn_status(TABLE, (b"a", b"c"), txn.start_ts)
            assert status.state == ROLLED_BACK

        between_prewrite_and_commit.append(expire_and_roll_back)
        with pytest.raises(CommitConflict):
            txn.commit()
        assert not between_prewrite_and_commit, "the hook ran"
        assert locks_left(served) == [], "the client rolled back what it locked"
        assert client.begin().get_many([(b"a", b"c"), (b"b", b"c")]) == {
            (b"a", b"c"): None, (b"b", b"c"): None}


@pytest.mark.parametrize("one_phase", [False, True], ids=["two-phase", "one-phase"])
def test_an_oracle_failure_fails_the_commit_and_nothing_stays_locked(
        tmp_path: Path, one_phase: bool) -> None:
    oracle = FakeOracle()
    with serve(tmp_path / "data", oracle=oracle) as served, \
            connect(served, one_phase=one_phase) as client:
        txn = client.begin()
        txn.set(b"a", b"c", b"v")
        txn.set(b"b", b"c", b"v")
        oracle.error = OracleExhausted("no timestamps left (test)")
        with pytest.raises(OracleExhausted):
            txn.commit()
        oracle.error = None
        assert locks_left(served) == [], "the failed commit's locks are rolled back"
        assert write_records(served, b"a") == [] and write_records(served, b"b") == []
        assert client.begin().get(b"a", b"c") is None
        with client.transaction() as again:
            again.set(b"a", b"c", b"w")
        assert client.begin().get(b"a", b"c") == b"w"


def commit_pb(table: bytes = TABLE, start_ts: int = 5, primary: tuple[bytes, bytes] = (b"a", b"c"),
              secondaries: list[tuple[bytes, bytes]] | None = None) -> node_pb2.Command:
    return node_pb2.Command(commit=node_pb2.CommitRequest(
        table=table, start_ts=start_ts, primary=node_pb2.Key(row=primary[0], column=primary[1]),
        secondaries=[node_pb2.RowColumns(row=r, columns=[c])
                     for r, c in (secondaries or [(b"b", b"c")])]))


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_a_malformed_commit_fails_alone_with_invalid_argument(tmp_path: Path,
                                                              transport: str) -> None:
    bad = [
        (commit_pb(table=b""), "InvalidArgument"),                       # no table
        (commit_pb(start_ts=0), "InvalidArgument"),                      # start_ts 0
        (commit_pb(primary=(b"", b"c")), "InvalidArgument"),             # no primary row
        (commit_pb(primary=(b"a", b"")), "InvalidArgument"),             # no primary column
        (commit_pb(secondaries=[(b"b", b"c" * 5000)]), "LimitExceeded"),  # oversize column
    ]
    with serve(tmp_path / "data") as served, NodeClient(served.address) as node, \
            grpc.insecure_channel(served.address) as channel:
        txn = new_txn(node, TABLE, [(b"a", b"c"), (b"b", b"c")])
        must_prewrite(node, txn)
        good = commit_pb(start_ts=txn.start_ts)
        nothing_locked = node.timestamps(1)
        reply = send(channel, transport, node_pb2.BatchRequest(
            commands=[*[c for c, _ in bad], read_command(TABLE, b"a"), good,
                      commit_pb(start_ts=nothing_locked)]))
        for result, (_, name) in zip(reply.results, bad):
            must_fail(result, grpc.StatusCode.INVALID_ARGUMENT, name)
        assert reply.results[len(bad)].WhichOneof("kind") == "read_rows"
        committed = reply.results[len(bad) + 1]
        assert committed.WhichOneof("kind") == "commit" and committed.commit.committed
        # Nothing was locked at nothing_locked: that transaction cannot commit.
        other = reply.results[len(bad) + 2]
        assert other.WhichOneof("kind") == "commit" and not other.commit.committed
        must_see(node, TABLE, (b"b", b"c"), b"v")


def test_a_transaction_of_many_cells_in_one_row_stays_within_the_stores_row_limits(
        tmp_path: Path) -> None:
    """450 cells of one row (long values: a data column each) locked, committed, rolled
    back and rolled forward through the node, whose steps here write through the checked
    store: every row mutation a step builds must be within the store's items per row."""
    with serve(tmp_path / "data") as served, connect(served, one_phase=False) as client:
        served.backend.ctx.store = served.store  # checked: refuses an oversize row mutation
        node = node_of(client)
        value = b"x" * 300
        cells = {(b"row", b"c%03d" % i): value for i in range(450)}
        cells[(b"other", b"c")] = value
        # Committed by the client's driver: prewrites, then the commit step.
        with client.transaction() as txn:
            for (row, column), v in cells.items():
                txn.set(row, column, v)
        assert client.begin().get_many(list(cells)) == cells
        assert locks_left(served) == []
        # Rolled back by its owner after locking every cell.
        doomed = new_txn(node, TABLE, cells)
        must_prewrite(node, doomed)
        node.rollback(TABLE, doomed.start_ts, doomed.primary, doomed.keys)
        assert locks_left(served) == []
        # Rolled forward cell by cell by a reader, after a commit step that named none.
        late = Txn(TABLE, node.timestamps(1), {k: b"late" for k in cells})
        must_prewrite(node, late)
        outcome = node.commit(CommitRequest(TABLE, late.start_ts, late.primary, []))
        assert outcome.committed
        assert client.begin().get_many(list(cells)) == {k: b"late" for k in cells}
        assert locks_left(served) == []

"""The commit step at the node: one command takes commit_ts, commits the primary, then the
secondaries (percolator.commit, Node's ``commit`` command).

Servers are real (127.0.0.1 port 0); where commands must meet in one batch, the node's
first read is held until the others are queued (see test_node_batch).
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from percolator.commit import CommitOutcome, CommitRequest, check_commit_request
from percolator.committer import CommitPlan
from percolator.node_client import NodeClient
from percolator.node_service import commit_request_to_pb
from percolator.txn_status import ROLLED_BACK, check_txn_status

from bigtable_lite import ALL_TIME, Cell, LimitExceeded, Limits, RowRead, ScanRequest
from percolator import Client, CommitConflict, committer, layout, records
from percolator.oracle import OracleExhausted
from percolator.v1 import node_pb2

from .test_node_batch import (
    WAIT,
    FakeOracle,
    hold_first_read_then,
    must_fail,
    read_command,
    send,
    serve,
)

TABLE = b"t"


def connect(client: NodeClient) -> Client:
    """A transaction client over ``client``, committing through its commit command."""
    return Client(client, client, table=TABLE, commits=client)


def prewritten(client: Client, rows: list[bytes], value: bytes = b"v") -> CommitPlan:
    """A transaction whose every row is locked: ready for its commit step."""
    start_ts = client.oracle.get_timestamp()
    writes = {(row, b"c"): (records.PUT, value) for row in rows}
    plan = committer.plan(client.ctx, start_ts, writes, set())
    locked: list[int] = []
    committer.lock_parts(client.ctx, plan, list(range(len(plan.parts))), locked)
    assert len(locked) == len(plan.parts)
    return plan


def write_records(store: NodeClient, row: bytes) -> list[Cell]:
    return store.read_rows([RowRead(TABLE, row, (layout.write_column(b"c"),))])[0]


def locks_left(store: NodeClient) -> list[tuple[bytes, Cell]]:
    return [(r.row, cell) for r in store.scan(ScanRequest(TABLE, None, None, (), (), ALL_TIME, 0))
            for cell in r.cells if cell.column.startswith(layout.LOCK)]


def test_a_transaction_commits_by_one_command_at_the_node(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as served, NodeClient(served.address, timeout=WAIT) as node, \
            connect(node) as client:
        txn = client.begin()
        for row in (b"a", b"b", b"c"):
            txn.set(row, b"c", b"x" * 300 if row == b"b" else b"v-" + row)  # b: data column
        commit_ts = txn.commit()
        assert commit_ts > txn.start_ts
        kinds = [kind for batch in served.service.batches for kind in batch]
        assert kinds.count("commit") == 1
        assert kinds.count("get_timestamps") == 1, "commit_ts came with the commit command"
        # The primary and both secondaries are committed at the node, at commit_ts.
        for row in (b"a", b"b", b"c"):
            (write,) = write_records(node, row)
            assert write.ts == commit_ts
            assert records.decode_write(write.value).start_ts == txn.start_ts
        assert locks_left(node) == []
        reader = client.begin()
        assert reader.get_many([(r, b"c") for r in (b"a", b"b", b"c")]) == {
            (b"a", b"c"): b"v-a", (b"b", b"c"): b"x" * 300, (b"c", b"c"): b"v-c"}


def test_commits_of_one_batch_share_one_oracle_call(tmp_path: Path) -> None:
    oracle = FakeOracle()
    with serve(tmp_path / "data", oracle=oracle) as served, \
            NodeClient(served.address, timeout=WAIT) as node, connect(node) as client:
        plans = [prewritten(client, [b"p%d" % i, b"s%d" % i]) for i in range(3)]
        requests = [committer.commit_request(client.ctx, p) for p in plans]
        before = oracle.next
        results = hold_first_read_then(served, node, lambda: node.read_rows(
            [RowRead(TABLE, b"none")]), {f"c{i}": (lambda r=r: node.commit(r))
                                         for i, r in enumerate(requests)})
        assert served.service.batches[-1] == ["commit"] * 3
        outcomes = [results[f"c{i}"] for i in range(3)]
        assert all(type(o) is CommitOutcome and o.committed for o in outcomes), outcomes
        # One contiguous range, one commit_ts each, taken after the batch arrived.
        assert sorted(o.commit_ts for o in outcomes) == [before, before + 1, before + 2]
        assert oracle.next == before + 3
        for plan, outcome in zip(plans, outcomes):
            for row, _ in plan.parts:
                assert [c.ts for c in write_records(node, row)] == [outcome.commit_ts]
        assert locks_left(node) == []


def test_the_commit_of_a_rolled_back_primary_is_refused(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as served, NodeClient(served.address, timeout=WAIT) as node, \
            connect(node) as client:
        plan = prewritten(client, [b"a", b"b"])
        status = check_txn_status(node, TABLE, *plan.primary, plan.start_ts, now_ms=2**63)
        assert status.state == ROLLED_BACK  # another client rolled the expired primary back
        outcome = node.commit(committer.commit_request(client.ctx, plan))
        assert outcome == CommitOutcome(False)
        assert write_records(node, b"a") == [] and write_records(node, b"b") == [], \
            "secondaries of a refused commit stay uncommitted"
        with pytest.raises(CommitConflict):
            committer.commit(client.ctx, plan)


def test_an_oracle_failure_fails_the_commit_and_the_client_rolls_back(tmp_path: Path) -> None:
    oracle = FakeOracle()
    with serve(tmp_path / "data", oracle=oracle) as served, \
            NodeClient(served.address, timeout=WAIT) as node, connect(node) as client:
        txn = client.begin()
        txn.set(b"a", b"c", b"v")
        txn.set(b"b", b"c", b"v")
        oracle.error = OracleExhausted("no timestamps left (test)")
        with pytest.raises(OracleExhausted):
            txn.commit()
        oracle.error = None
        assert locks_left(node) == [], "the failed commit's locks are rolled back"
        assert client.begin().get(b"a", b"c") is None
        with client.transaction() as again:
            again.set(b"a", b"c", b"w")
        assert client.begin().get(b"a", b"c") == b"w"


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_a_malformed_commit_fails_alone_with_invalid_argument(tmp_path: Path,
                                                              transport: str) -> None:
    good = CommitRequest(TABLE, 5, b"c", ((b"a", ((b"c", records.PUT, b"v"),)),))
    bad = [
        CommitRequest(TABLE, 5, b"c", ()),                                  # no rows
        CommitRequest(TABLE, 0, b"c", good.rows),                           # start_ts 0
        CommitRequest(TABLE, 5, b"other", good.rows),                       # primary not there
        CommitRequest(TABLE, 5, b"c", ((b"a", ()),)),                       # a row without cells
        CommitRequest(b"", 5, b"c", good.rows),                             # no table
    ]
    with serve(tmp_path / "data") as served, grpc.insecure_channel(served.address) as channel:
        commands = [node_pb2.Command(commit=commit_request_to_pb(r)) for r in bad]
        reply = send(channel, transport, node_pb2.BatchRequest(
            commands=[*commands, read_command(TABLE, b"a"),
                      node_pb2.Command(commit=commit_request_to_pb(good))]))
        for result in reply.results[:len(bad)]:
            must_fail(result, grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument")
        assert reply.results[len(bad)].WhichOneof("kind") == "read_rows"
        # The well-formed one ran: nothing was locked at start_ts 5, so it did not commit.
        last = reply.results[len(bad) + 1]
        assert last.WhichOneof("kind") == "commit" and not last.commit.committed


def test_a_commit_row_is_refused_past_three_store_items_per_cell() -> None:
    """A secondary's cell costs its commit three items of a row mutation (the write record,
    the lock erased, the check of its slot): a row part must stay within the limit."""
    limits = Limits(max_items_per_row=30)
    cells = tuple((b"c%02d" % i, records.PUT, b"v") for i in range(10))
    check_commit_request(CommitRequest(TABLE, 5, b"c00", ((b"a", cells),)), limits)
    with pytest.raises(LimitExceeded, match="the limit is 10"):
        check_commit_request(CommitRequest(TABLE, 5, b"c00", (
            (b"a", cells + ((b"c10", records.PUT, b"v"),)),)), limits)


def test_a_node_before_the_commit_command_is_committed_to_step_by_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(tmp_path / "data") as served, NodeClient(served.address, timeout=WAIT) as node, \
            connect(node) as client:
        execute = served.service.execute

        def before_commits(request: node_pb2.BatchRequest) -> bytes:
            """As a node that predates the command: it finds no kind it knows in one."""
            for command in request.commands:
                if command.WhichOneof("kind") == "commit":
                    command.ClearField("commit")
            return execute(request)

        monkeypatch.setattr(served.service, "execute", before_commits)
        for value in (b"one", b"two"):
            with client.transaction() as txn:
                txn.set(b"a", b"c", value)
                txn.set(b"b", b"c", value)
        kinds = [kind for batch in served.service.batches for kind in batch]
        # Recorded after the node dropped what it does not know: a command of no kind.
        assert kinds.count("None") == 1, "tried once, then the steps are sent one by one"
        assert client.begin().get_many([(b"a", b"c"), (b"b", b"c")]) == {
            (b"a", b"c"): b"two", (b"b", b"c"): b"two"}
        assert locks_left(node) == []

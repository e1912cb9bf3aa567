"""Reads at a fresh timestamp (percolator.fresh_read): one command takes a timestamp and
reads at it, at the node; in-process and against older nodes, two steps.

Servers are real (127.0.0.1 port 0); where commands must meet in one batch, the node's
first read is held until the others are queued (see test_node_batch).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc
import pytest
from percolator.fresh_read import LocalFreshReads
from percolator.node_client import NodeClient

from bigtable_lite import Cell, InvalidArgument, Put, RowMutation, RowRead, TimeRange, wire
from percolator import Client
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
FAR = 10**15  # a version far above any timestamp these tests take


def seed(store: NodeClient | Client) -> None:
    mutate = store.mutate_rows if isinstance(store, NodeClient) else store.store.mutate_rows
    mutate([RowMutation(TABLE, b"r", (Put(b"c", 1, b"old"), Put(b"c", FAR, b"future")))])


def test_a_fresh_read_takes_a_new_timestamp_and_reads_at_it(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as served, NodeClient(served.address, timeout=WAIT) as node:
        seed(node)
        before = node.get_timestamp()
        ts, rows = node.read_at_fresh_timestamp([RowRead(TABLE, b"r", (b"c",))])
        assert ts > before
        assert rows == [[Cell(b"c", 1, b"old")]], "versions above the timestamp are not read"
        assert node.get_timestamp() > ts
        assert [k for b in served.service.batches for k in b].count("fresh_read") == 1


def test_a_fresh_read_keeps_a_read_fixed_at_one_timestamp(tmp_path: Path) -> None:
    """A read at one timestamp (a lock slot at [0, 0]) is read as it is, in the fresh read's
    snapshot; the unset ones at the new timestamp."""
    reads = [RowRead(TABLE, b"r", (b"c",), (), TimeRange(FAR, FAR), 1),
             RowRead(TABLE, b"r", (b"c",))]
    with serve(tmp_path / "data") as served, NodeClient(served.address, timeout=WAIT) as node:
        seed(node)
        ts, rows = node.read_at_fresh_timestamp(reads)
        assert ts < FAR and rows == [[Cell(b"c", FAR, b"future")], [Cell(b"c", 1, b"old")]]
        assert [k for b in served.service.batches for k in b].count("fresh_read") == 1
    with tempfile.TemporaryDirectory() as path, Client.embedded(path) as client:
        seed(client)
        ts, rows = LocalFreshReads(client.store, client.oracle).read_at_fresh_timestamp(reads)
        assert ts < FAR and rows == [[Cell(b"c", FAR, b"future")], [Cell(b"c", 1, b"old")]]


def test_fresh_reads_of_one_batch_take_distinct_timestamps_of_one_oracle_call(
        tmp_path: Path) -> None:
    oracle = FakeOracle()
    with serve(tmp_path / "data", oracle=oracle) as served, \
            NodeClient(served.address, timeout=WAIT) as node:
        seed(node)
        first = oracle.next
        results = hold_first_read_then(served, node, lambda: node.read_rows(
            [RowRead(TABLE, b"none")]), {
            "f1": lambda: node.read_at_fresh_timestamp([RowRead(TABLE, b"r", (b"c",))]),
            "f2": lambda: node.read_at_fresh_timestamp([RowRead(TABLE, b"r")]),
            "stamp": node.get_timestamp})
        assert sorted(served.service.batches[-1]) == ["fresh_read", "fresh_read",
                                                      "get_timestamps"]
        taken = sorted([results["f1"][0], results["f2"][0], results["stamp"]])
        assert taken == [first, first + 1, first + 2] and oracle.next == first + 3
        assert results["f1"][1] == results["f2"][1] == [[Cell(b"c", 1, b"old")]]


def test_an_oracle_failure_fails_only_the_fresh_reads(tmp_path: Path) -> None:
    oracle = FakeOracle()
    with serve(tmp_path / "data", oracle=oracle) as served, \
            NodeClient(served.address, timeout=WAIT) as node:
        seed(node)
        oracle.error = OracleExhausted("no timestamps left (test)")
        results = hold_first_read_then(served, node, lambda: node.read_rows(
            [RowRead(TABLE, b"none")]), {
            "fresh": lambda: node.read_at_fresh_timestamp([RowRead(TABLE, b"r")]),
            "read": lambda: node.read_rows([RowRead(TABLE, b"r", (b"c",), (),
                                                    TimeRange(0, 5), 1)])})
        assert type(results["fresh"]) is OracleExhausted
        assert results["read"] == [[Cell(b"c", 1, b"old")]]


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_a_fresh_read_with_its_own_time_range_fails_alone(tmp_path: Path, transport: str
                                                          ) -> None:
    with serve(tmp_path / "data") as served, grpc.insecure_channel(served.address) as channel:
        bad = node_pb2.Command(fresh_read=node_pb2.FreshReadRequest(read=wire.read_request_to_pb(
            [RowRead(TABLE, b"r", (), (), TimeRange(0, 7))])))
        good = node_pb2.Command(fresh_read=node_pb2.FreshReadRequest(
            read=wire.read_request_to_pb([RowRead(TABLE, b"r")])))
        reply = send(channel, transport, node_pb2.BatchRequest(
            commands=[bad, read_command(TABLE, b"r"), good]))
        must_fail(reply.results[0], grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument")
        assert reply.results[1].WhichOneof("kind") == "read_rows"
        assert reply.results[2].WhichOneof("kind") == "fresh_read"
        assert reply.results[2].fresh_read.ts > 0


def test_a_node_before_fresh_reads_is_read_in_two_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(tmp_path / "data") as served, NodeClient(served.address, timeout=WAIT) as node:
        seed(node)
        execute = served.service.execute

        def before_fresh_reads(request: node_pb2.BatchRequest) -> bytes:
            """As a node that predates the command: it finds no kind it knows in one."""
            for command in request.commands:
                if command.WhichOneof("kind") == "fresh_read":
                    command.ClearField("fresh_read")
            return execute(request)

        monkeypatch.setattr(served.service, "execute", before_fresh_reads)
        for _ in range(2):
            before = node.get_timestamp()
            ts, rows = node.read_at_fresh_timestamp([RowRead(TABLE, b"r", (b"c",))])
            assert ts > before and rows == [[Cell(b"c", 1, b"old")]]
        kinds = [k for b in served.service.batches for k in b]
        assert kinds.count("None") == 1, "tried once, then a timestamp and a read"


def test_in_process_fresh_reads_check_their_reads_first() -> None:
    with tempfile.TemporaryDirectory() as path, Client.embedded(path) as client:
        seed(client)
        fresh = LocalFreshReads(client.store, client.oracle)
        ts, rows = fresh.read_at_fresh_timestamp([RowRead(TABLE, b"r", (b"c",))])
        assert rows == [[Cell(b"c", 1, b"old")]] and ts < client.oracle.get_timestamp()
        with pytest.raises(InvalidArgument):
            fresh.read_at_fresh_timestamp([RowRead(TABLE, b"r", (), (), TimeRange(0, 3))])

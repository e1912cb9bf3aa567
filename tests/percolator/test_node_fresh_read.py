"""Fresh reads: a read with no start_ts (``start_ts`` 0 on the wire) takes its timestamp
at the node and reads at it, one command instead of two -- a lazy transaction's first
read (``Client.begin(lazy=True)``, ``Client.run``) is one.  Embedded, the same step
takes it from the local oracle.

Servers are real (127.0.0.1 port 0); where commands must meet in one batch, the node's
first batch is held until the others are queued (see test_node_batch).
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import grpc
import pytest

from percolator import Client
from percolator._node_client import NodeClient
from percolator.oracle import OracleExhausted
from percolator.v1 import node_pb2

from .steps import must_prewrite, new_txn
from .test_node_batch import (
    WAIT,
    FakeOracle,
    commit_values,
    hold_first_then,
    must_fail,
    send,
    serve,
    stamps_command,
    step_read_command,
)

TABLE = b"t"
KEY = (b"r", b"c")


def test_a_fresh_read_takes_a_new_timestamp_at_the_node_and_reads_at_it(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as served, NodeClient(served.address, timeout=WAIT) as node:
        first = commit_values(node, TABLE, {KEY: b"old"})
        before = node.timestamps(1)
        served_before = node.stats().timestamps_served
        kinds = len(served.service.kinds())
        result = node.read(TABLE, None, [KEY])
        assert served.service.kinds()[kinds:] == ["read"], "one command, no timestamp command"
        assert result.start_ts > before > first
        assert result.values == {KEY: b"old"} and result.locked == []
        assert node.stats().timestamps_served == served_before + 1
        later = commit_values(node, TABLE, {KEY: b"new"})
        assert later > result.start_ts
        assert node.read(TABLE, result.start_ts, [KEY]).values == {KEY: b"old"}, \
            "a read at the fresh read's timestamp is its snapshot"
        assert node.read(TABLE, None, [KEY]).values == {KEY: b"new"}


def test_a_lazy_transactions_first_read_takes_its_snapshot(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as served, \
            Client(NodeClient(served.address, timeout=WAIT), table=TABLE) as client:
        with client.transaction() as txn:
            txn.set(*KEY, b"v")
        kinds = len(served.service.kinds())
        lazy = client.begin(lazy=True)
        assert lazy.get(*KEY) == b"v"
        assert served.service.kinds()[kinds:] == ["read"]
        assert lazy.start_ts > 0
        lazy.set(*KEY, b"w")
        assert lazy.commit() > lazy.start_ts
        # Client.run begins its attempts so: two commands for a read-modify-write.
        kinds = len(served.service.kinds())
        client.run(lambda t: t.set(*KEY, (t.get(*KEY) or b"") + b"!"))
        assert served.service.kinds()[kinds:] == ["read", "one_phase"]
        assert client.begin().get(*KEY) == b"w!"


def test_a_fresh_read_sees_every_commit_acknowledged_before_it(tmp_path: Path) -> None:
    """Linearizable: a commit acknowledged to one thread is seen by the fresh read another
    thread starts afterwards, while both clients keep batching."""
    with serve(tmp_path / "data") as served, \
            NodeClient(served.address, timeout=WAIT) as writer, \
            NodeClient(served.address, timeout=WAIT) as reader:
        stop = threading.Event()
        failures: list[str] = []

        def load() -> None:  # keeps the reader's batches shared
            while not stop.is_set():
                reader.read(TABLE, None, [(b"other", b"c")])

        loaders = [threading.Thread(target=load) for _ in range(3)]
        for t in loaders:
            t.start()
        try:
            for n in range(60):
                value = b"%d" % n
                commit_ts = commit_values(writer, TABLE, {KEY: value})
                result = reader.read(TABLE, None, [KEY])
                if result.start_ts <= commit_ts or result.values[KEY] != value:
                    failures.append(f"read at {result.start_ts} saw {result.values[KEY]!r}"
                                    f" after {value!r} committed at {commit_ts}")
        finally:
            stop.set()
            for t in loaders:
                t.join(timeout=WAIT)
        assert not failures, failures[:3]


def test_fresh_reads_of_one_batch_take_distinct_timestamps_after_it_arrived(
        tmp_path: Path) -> None:
    oracle = FakeOracle()
    with serve(tmp_path / "data", oracle=oracle) as served, \
            NodeClient(served.address, timeout=WAIT) as node:
        commit_values(node, TABLE, {KEY: b"old"})
        first = oracle.next
        results = hold_first_then(served, node, node.timestamps, {
            "f1": lambda: node.read(TABLE, None, [KEY]),
            "f2": lambda: node.read(TABLE, None, [KEY, (b"none", b"c")]),
            "stamp": node.timestamps})
        assert sorted(served.service.batches[-1]) == ["get_timestamps", "read", "read"]
        taken = sorted([results["f1"].start_ts, results["f2"].start_ts, results["stamp"]])
        assert len(set(taken)) == 3 and taken[0] > results["first"] >= first
        assert taken[-1] < oracle.next
        assert results["f1"].values == {KEY: b"old"}
        assert results["f2"].values == {KEY: b"old", (b"none", b"c"): None}


def test_an_oracle_failure_fails_only_the_fresh_reads(tmp_path: Path) -> None:
    oracle = FakeOracle()
    with serve(tmp_path / "data", oracle=oracle) as served, \
            NodeClient(served.address, timeout=WAIT) as node:
        at = commit_values(node, TABLE, {KEY: b"old"})
        oracle.error = OracleExhausted("no timestamps left (test)")
        results = hold_first_then(served, node, lambda: node.read(TABLE, at, [KEY]), {
            "fresh": lambda: node.read(TABLE, None, [KEY]),
            "read": lambda: node.read(TABLE, at, [KEY])})
        assert type(results["fresh"]) is OracleExhausted
        assert results["read"].values == {KEY: b"old"}


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_raw_fresh_reads_in_a_batch(tmp_path: Path, transport: str) -> None:
    """As a foreign client sends them: ReadRequest.start_ts 0 is a fresh read; a lock of a
    transaction that started below it is reported, not read through."""
    with serve(tmp_path / "data") as served, NodeClient(served.address) as node, \
            grpc.insecure_channel(served.address) as channel:
        at = commit_values(node, TABLE, {KEY: b"old"})
        owner = new_txn(node, TABLE, [(b"held", b"c")])
        must_prewrite(node, owner, ttl_ms=60_000)
        reply = send(channel, transport, node_pb2.BatchRequest(commands=[
            step_read_command(TABLE, 0, [KEY, (b"held", b"c")]),
            stamps_command(1),
            step_read_command(TABLE, at, [KEY]),
            step_read_command(TABLE, 0, [(b"", b"c")]),  # a bad one fails alone
        ]))
        fresh = reply.results[0].read
        assert fresh.start_ts > owner.start_ts
        assert [v.value for v in fresh.values] == [b"old"]
        assert [(c.row, c.start_ts) for c in fresh.locked] == [(b"held", owner.start_ts)]
        assert reply.results[1].get_timestamps.first not in (0, fresh.start_ts)
        assert reply.results[2].read.start_ts == at
        must_fail(reply.results[3], grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument")


def test_embedded_fresh_reads_take_the_local_oracles_timestamp() -> None:
    with tempfile.TemporaryDirectory() as path, Client.embedded(path, table=TABLE) as client:
        with client.transaction() as txn:
            txn.set(*KEY, b"old")
        before = client.timestamp()
        result = client.backend.read(TABLE, None, [KEY])
        assert before < result.start_ts < client.timestamp()
        assert result.values == {KEY: b"old"}
        lazy = client.begin(lazy=True)
        with pytest.raises(ValueError):  # checked in the transaction, before any I/O
            lazy.get(b"", b"c")
        assert lazy.get(*KEY) == b"old" and lazy.start_ts > result.start_ts

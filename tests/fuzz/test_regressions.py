"""What the node fuzz (test_fuzz_node.py) found, each as a short test of its own."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from bigtable_lite import DEFAULT_LIMITS, LimitExceeded, Limits
from bigtable_lite import status as store_status
from percolator import _node_codec as codec
from percolator.node import Node
from percolator.v1 import node_pb2

BATCH = "/percolator.v1.Node/Batch"
BATCH_STREAM = "/percolator.v1.Node/BatchStream"
WAIT = 60.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with Node(tmp_path_factory.mktemp("node") / "data", "127.0.0.1:0") as n:
        yield n


@pytest.fixture
def channel(node: Node) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(node.address, options=[
            ("grpc.max_send_message_length", 128 << 20)]) as ch:
        yield ch


def _batch(commands: int) -> bytes:
    one = node_pb2.Command(observed_columns=node_pb2.ObservedColumnsRequest(table=b"t"))
    return node_pb2.BatchRequest(commands=[one]).SerializeToString() * commands


@pytest.mark.parametrize("transport", ["unary", "stream"])
def test_a_batch_of_more_commands_than_the_limit_is_refused_before_any_runs(
        channel: grpc.Channel, transport: str) -> None:
    """A 60 MiB Batch of a million one-cell reads held a server thread past a minute
    (the fuzz's call timed out): the node now refuses a batch beyond its command limit
    at once, and serves one at the limit."""
    limit = DEFAULT_LIMITS.max_batch_rows
    with pytest.raises(grpc.RpcError) as info:
        if transport == "unary":
            channel.unary_unary(BATCH)(_batch(limit + 1), timeout=WAIT)
        else:
            list(channel.stream_stream(BATCH_STREAM)(iter([_batch(limit + 1)]), timeout=WAIT))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value
    trailers = dict(info.value.trailing_metadata() or ())
    assert trailers.get(store_status.ERROR_KEY) == "LimitExceeded", trailers
    reply = node_pb2.BatchResponse.FromString(
        channel.unary_unary(BATCH)(_batch(limit), timeout=WAIT))
    assert len(reply.results) == limit
    assert {r.WhichOneof("kind") for r in reply.results} == {"observed_columns"}



HUGE = 100_000
"""Entries of one repeated field: far past the limit (10,000), few enough to build fast."""
KEY = node_pb2.Key(row=b"r", column=b"c")


def _cols() -> node_pb2.RowColumns:
    return node_pb2.RowColumns(row=b"r", columns=[b"c"] * HUGE)


def _writes() -> node_pb2.RowWrites:
    return node_pb2.RowWrites(row=b"r", cells=[node_pb2.CellWrite(column=b"c", value=b"v")]
                              * HUGE)


HUGE_COMMANDS: dict[str, tuple[Callable[[Any, Limits], Any], Callable[[], Any]]] = {
    "read": (codec.parse_read,
             lambda: node_pb2.ReadRequest(table=b"t", start_ts=5, rows=[_cols()])),
    "read rows": (codec.parse_read, lambda: node_pb2.ReadRequest(
        table=b"t", rows=[node_pb2.RowColumns(row=b"r")] * HUGE)),
    "resolve": (codec.parse_resolve,
                lambda: node_pb2.ResolveRequest(table=b"t", start_ts=5, cells=[_cols()])),
    "rollback": (codec.parse_rollback, lambda: node_pb2.RollbackRequest(
        table=b"t", start_ts=5, primary=KEY, cells=[_cols()])),
    "commit": (codec.parse_commit, lambda: node_pb2.CommitRequest(
        table=b"t", start_ts=5, primary=KEY, secondaries=[_cols()])),
    "commit weak": (codec.parse_commit, lambda: node_pb2.CommitRequest(
        table=b"t", start_ts=5, primary=KEY, weak=[_cols()])),
    "prewrite": (codec.parse_prewrite, lambda: node_pb2.PrewriteRequest(
        table=b"t", start_ts=5, primary=KEY, ttl_ms=10, rows=[_writes()])),
    "one_phase": (codec.parse_one_phase,
                  lambda: node_pb2.OnePhaseRequest(table=b"t", start_ts=5, rows=[_writes()])),
    "scan": (codec.parse_scan, lambda: node_pb2.ScanRequest(
        table=b"t", start_ts=5, limit=1, columns=[b"c"] * HUGE)),
    "register": (codec.parse_register, lambda: node_pb2.RegisterObservedRequest(
        table=b"t", columns=[b"c"] * HUGE)),
}


@pytest.mark.parametrize("kind", list(HUGE_COMMANDS))
def test_a_command_over_a_count_limit_is_refused_before_its_entries_are_read(
        kind: str) -> None:
    """One resolve naming 9 million cells (a 60 MiB batch) held the node for 10 s while
    the node built every key only to refuse them all: counts are checked first, so a
    refusal allocates nothing in proportion to the entries."""
    parse, build = HUGE_COMMANDS[kind]
    msg = build()
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded):
            parse(msg, DEFAULT_LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"refusing {kind} allocated {peak >> 20} MiB"

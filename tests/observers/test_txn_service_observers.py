"""A write through the Transactions service to an observed column fires a Python observer:
the node writes the notification with the commit (from Node.js, and from Python through
the service's contract, over gRPC and in native TXN frames)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from observers import Worker, observer
from percolator import Client, Transaction
from percolator.node import Node
from tests.percolator.test_txn_service_clients import WAIT, scenario
from tests.percolator.txn_service_client import ServiceClient


@observer("doc:text")
def count_words(txn: Transaction, row: bytes, column: bytes) -> None:
    text = txn.get(row, column) or b""
    txn.set(row, "doc:words", str(len(text.split())))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with Node(tmp_path / "node", "127.0.0.1:0") as n:
        yield n


@pytest.mark.parametrize("runner", ["python", "python-native", "node"])
def test_a_service_write_to_an_observed_column_fires_a_python_observer(
        node: Node, runner: str) -> None:
    with Client.connect(node.address) as client:
        worker = Worker(client, [count_words], threads=2)  # registers doc:text as observed
        try:
            if runner == "python":
                with ServiceClient(node.address) as svc:
                    txn = svc.begin()
                    txn.set(b"d1", b"doc:text", b"hello big wide world")
                    txn.commit()
            else:  # another process: Node.js, or Python in native TXN frames
                writer = scenario(runner, "write", node.address, "d1", "doc:text",
                                  "hello big wide world")
                assert "committed" in writer.next(WAIT)
                assert writer.wait(WAIT) == 0
            stats = worker.run_until_idle(timeout=WAIT)
        finally:
            worker.stop()
        assert client.begin().get(b"d1", b"doc:words") == b"4", stats

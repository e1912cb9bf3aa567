"""Steps of the system's wall clock do not move lock expiry.

A node judges every lock's expiry on its own clock (``percolator.clock.SteadyClock``):
the wall clock read once, then moved by the monotonic clock.  On the wall clock itself,
a step forward (NTP, an operator, a resumed VM) made live transactions' locks look
expired, and readers rolled them back under their owners; a step back made dead
transactions' locks look alive, blocking their cells for as long as the step.

The system clock is stepped by replacing the ``time`` module ``percolator.clock`` reads
(its wall time shifted, its monotonic time untouched), under a real node served over
gRPC.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from percolator import clock as clock_module
from percolator._backend import LOCKED, ROLLED_BACK
from percolator._node_client import NodeClient
from percolator.clock import SteadyClock
from percolator.node import Node

from .steps import Txn, must_prewrite, must_status, new_txn

WAIT = 30.0
TABLE = b"t"
HOUR_NS = 3_600 * 10**9


class SteppedTime:
    """The ``time`` module, its wall clock stepped by ``step_ns``."""

    def __init__(self) -> None:
        self.step_ns = 0

    def time_ns(self) -> int:
        return time.time_ns() + self.step_ns

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@pytest.fixture
def stepped(monkeypatch: pytest.MonkeyPatch) -> SteppedTime:
    shim = SteppedTime()
    monkeypatch.setattr(clock_module, "time", shim)
    return shim


@pytest.fixture
def node(tmp_path: Path, stepped: SteppedTime) -> Iterator[Node]:
    with Node(tmp_path / "data", "127.0.0.1:0") as n:  # its default clock
        yield n


def wait_for_status(client: NodeClient, txn: Txn, state: str) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        status = client.check_txn_status(TABLE, txn.primary, txn.start_ts)
        if status.state == state:
            return
        assert time.monotonic() < deadline, f"still {status.state} after {WAIT}s"
        time.sleep(0.05)  # polling the node's verdict, bounded by the deadline


def test_a_step_forward_leaves_a_live_lock_alive(node: Node, stepped: SteppedTime) -> None:
    with NodeClient(node.address, timeout=WAIT) as client:
        txn = new_txn(client, TABLE, [(b"a", b"c"), (b"b", b"c")])
        must_prewrite(client, txn, ttl_ms=60_000)
        stepped.step_ns = HOUR_NS  # an hour ahead, a moment later
        must_status(client, txn, LOCKED)  # not rolled back under its owner


def test_a_step_back_does_not_keep_a_dead_lock_alive(node: Node, stepped: SteppedTime) -> None:
    with NodeClient(node.address, timeout=WAIT) as client:
        txn = new_txn(client, TABLE, [(b"a", b"c")])
        must_prewrite(client, txn, ttl_ms=500)  # its owner dies now
        stepped.step_ns = -HOUR_NS
        wait_for_status(client, txn, ROLLED_BACK)  # after its TTL, not an hour more


def test_a_restarted_node_does_not_take_its_clock_back(tmp_path: Path,
                                                       stepped: SteppedTime) -> None:
    """The wall clock set back while the node was down: the locks it left are judged
    from the latest time it recorded (a GC sample), not from the earlier wall time."""
    path = tmp_path / "data"
    with Node(path, "127.0.0.1:0") as node, NodeClient(node.address, timeout=WAIT) as client:
        txn = new_txn(client, TABLE, [(b"a", b"c")])
        must_prewrite(client, txn, ttl_ms=500)
        client.collect_garbage()  # records a sample of the node's clock
    stepped.step_ns = -HOUR_NS
    with Node(path, "127.0.0.1:0") as node, NodeClient(node.address, timeout=WAIT) as client:
        wait_for_status(client, txn, ROLLED_BACK)


def test_the_steady_clock_follows_the_monotonic_clock_from_its_floor() -> None:
    class Base:
        wall, mono = 5_000, 100

        def now_ms(self) -> int:
            return self.wall

        def monotonic_ms(self) -> int:
            return self.mono

        def sleep(self, seconds: float) -> None:
            raise AssertionError("not called")

    base = Base()
    steady = SteadyClock(base)
    assert steady.now_ms() == 5_000
    base.wall, base.mono = 1_000, 150  # the wall clock stepped back; 50 ms passed
    assert steady.now_ms() == 5_050
    assert SteadyClock(base, floor_ms=9_000).now_ms() == 9_000
    assert SteadyClock(base, floor_ms=10).now_ms() == 1_000

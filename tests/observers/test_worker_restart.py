"""A worker is busy again within a second of its node being back (issue 16).

The node is a real ``percolator serve`` process killed with -9 and started again on
the same port and data directory; the worker is a real ``percolator worker`` process
with its default settings.  Measured: from the moment the node's port accepts
connections again to the moment a notification written after the restart has been
processed.  Workers once sat idle 7-17 s, then 1.8-5.2 s (gRPC's reconnect back-off
and the feed's own pauses between failed pulls).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from observers._retry import reconnect_or_back_off
from percolator import Client
from tests.procs import ServerProcess

from . import sum_observers
from .observer_fixtures import eventually, write_cells
from .worker_procs import SUM_OBSERVERS, WorkerProcess

BOUND = 2.0
"""Seconds from the port accepting to the probe processed, on a loaded 2-core machine
(a quiet one: well under a second)."""


def accepting_at(port: int, timeout: float) -> float:
    """The monotonic time at which 127.0.0.1:``port`` first accepts a connection (probed
    every millisecond, bounded)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            # A connection to itself (source port == ``port``, which is in the ephemeral
            # range) is no node: TCP's simultaneous open on loopback.
            if (probe.connect_ex(("127.0.0.1", port)) == 0
                    and probe.getsockname() != probe.getpeername()):
                return time.monotonic()
        pause.wait(0.001)
    raise AssertionError(f"port {port} did not accept within {timeout}s")


def processed(client: Client, row: bytes) -> bool:
    return sum_observers.runs(client, [row])[row] == 1


@pytest.mark.parametrize("reachable", [True, False])
def test_after_a_failure_a_reachable_node_is_backed_off_and_an_unreachable_one_awaited(
        reachable: bool) -> None:
    """A node that could be reached all along refused the call: back off the delay.  One
    that could not: the wait for it to be reachable was the pause; call again at once."""
    waits: list[float] = []
    slept: list[float] = []

    def ready(timeout: float) -> bool:
        waits.append(timeout)
        return reachable

    reconnect_or_back_off(ready, 0.2, slept.append, 0.5)
    assert waits == [0.5]
    assert len(slept) == (1 if reachable else 0)
    assert all(0 < s <= 0.2 for s in slept)


@pytest.mark.slow
def test_a_worker_processes_again_within_a_second_of_the_node_back(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    worker = None
    try:
        worker = WorkerProcess("--connect", server.address, "--observers", SUM_OBSERVERS,
                               "--worker-id", "rider")
        worker.wait_for("running as rider")
        with Client.connect(server.address) as client:
            write_cells(client, {(b"before", sum_observers.VALUE): b"1"})
            eventually(lambda: processed(client, b"before"), "the worker runs", timeout=60)
        server.kill()
        back: list[float] = []
        prober = threading.Thread(target=lambda: back.append(accepting_at(server.port, 60)))
        prober.start()
        server.start(same_port=True)
        prober.join(60)
        assert back, "the node's port accepts again"
        with Client.connect(server.address) as client:
            write_cells(client, {(b"after", sum_observers.VALUE): b"2"})
            written = time.monotonic() - back[0]
            eventually(lambda: processed(client, b"after"), "the probe is processed",
                       timeout=60)
            busy = time.monotonic() - back[0]
            print(f"port accepting -> probe written {written:.2f}s -> processed {busy:.2f}s")
            assert sum_observers.total(client) == 3
        assert worker.terminate() == 0, worker.stderr()
        assert busy < BOUND, f"the worker took {busy:.2f}s after the node was back"
        assert worker.terminate() == 0, worker.stderr()
    finally:
        if worker is not None and worker.proc.poll() is None:
            worker.proc.kill()
        server.kill()

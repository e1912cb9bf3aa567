"""The oracle under several client processes and many threads, against `percolator serve`."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator

import pytest

from percolator.oracle_client import RemoteOracle
from tests.percolator.oracle_procs import WAIT, ChildProcess
from tests.procs import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("oracle-procs") / "data",
                       "--oracle-block", "1000") as proc:
        yield proc


def must_increase(values: list[int]) -> None:
    assert all(a < b for a, b in itertools.pairwise(values)), "a thread's timestamps went backwards"


def test_threads_and_processes_get_unique_increasing_timestamps(server: ServerProcess) -> None:
    children = [ChildProcess("take", server.address, "8", "800") for _ in range(3)]
    local: list[list[int]] = [[] for _ in range(16)]
    children_done = threading.Event()
    try:
        with RemoteOracle(server.address, timeout=WAIT) as client:
            def take(i: int) -> None:  # runs for as long as the children do
                while not children_done.is_set() or len(local[i]) < 100:
                    local[i].append(client.get_timestamp())

            threads = [threading.Thread(target=take, args=(i,)) for i in range(16)]
            for t in threads:
                t.start()
            try:
                outputs = [c.finish() for c in children]
            finally:
                children_done.set()
                for t in threads:
                    t.join(timeout=WAIT)
            assert not any(t.is_alive() for t in threads)
            assert client.stats().mean_batch_size > 1
    finally:
        for c in children:
            c.kill()
    sequences = local + [json.loads(line) for out in outputs for line in out]
    assert len(sequences) == 16 + 3 * 8
    everything = [ts for seq in sequences for ts in seq]
    assert len(everything) >= 3 * 8 * 800
    assert len(set(everything)) == len(everything), "a timestamp was handed out twice"
    for seq in sequences:
        must_increase(seq)


def test_timestamp_passed_to_another_process_is_exceeded(server: ServerProcess) -> None:
    """Linearizability across processes: the pipe is the out-of-band channel."""
    other = ChildProcess("echo", server.address)
    stop = threading.Event()
    try:
        assert other.next_line().strip() == "ready"
        with RemoteOracle(server.address, timeout=WAIT) as mine, \
                RemoteOracle(server.address, timeout=WAIT) as busy:
            def load() -> None:
                while not stop.is_set():
                    busy.get_timestamp()

            loaders = [threading.Thread(target=load) for _ in range(4)]
            for t in loaders:
                t.start()
            try:
                for _ in range(200):
                    seen = mine.get_timestamp()
                    other.send(str(seen))
                    echoed, theirs = map(int, other.next_line().split())
                    assert echoed == seen
                    assert theirs > seen, f"{theirs} handed out after {seen} was seen"
            finally:
                stop.set()
                for t in loaders:
                    t.join(timeout=WAIT)
        other.finish()
    finally:
        other.kill()

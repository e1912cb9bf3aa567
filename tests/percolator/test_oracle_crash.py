"""Crash: `kill -9` the oracle's server while clients take timestamps, then restart.

Every timestamp from a restarted server must exceed every timestamp handed out before
the crash, and no timestamp may ever be handed out twice.  A small ``--oracle-block``
makes the server persist its high-water mark many times during the test, so a kill
lands among the persists.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import pytest

from bigtable_lite import Unavailable
from percolator.failpoints import FAILPOINT_EXIT_CODE
from percolator.oracle_client import RemoteOracle
from tests.percolator.oracle_procs import WAIT, ChildProcess
from tests.procs import ServerProcess

CLIENTS = 2
THREADS = 4
CRASHES = 2
LINES_PER_ROUND = 400
BLOCK = 200


def read_stream(children: list[ChildProcess], lines: int) -> None:
    """Wait (bounded) until the children have printed ``lines`` more timestamps each."""
    for child in children:
        for _ in range(lines):
            child.next_line()


def test_kill_9_while_clients_take_timestamps(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", "--oracle-block", str(BLOCK)).start()
    children = [ChildProcess("stream", server.address, str(THREADS)) for _ in range(CLIENTS)]
    probes: list[tuple[int, int]] = []  # (incarnation, timestamp) taken by this test
    try:
        for incarnation in range(1, CRASHES + 1):
            read_stream(children, LINES_PER_ROUND)  # clients are busy taking timestamps
            server.kill()
            server.start()
            with RemoteOracle(server.address, timeout=WAIT) as probe:
                probes.append((incarnation, probe.get_timestamp()))
            for child in children:
                child.send(server.address)
        read_stream(children, LINES_PER_ROUND)  # and busy again after the last restart
        for child in children:
            child.send("stop")
        outputs = [child.finish() for child in children]
        assert server.terminate() == 0
    finally:
        for child in children:
            child.kill()
        server.kill()

    by_incarnation: dict[int, list[int]] = defaultdict(list)
    by_thread: dict[tuple[int, int], list[int]] = defaultdict(list)
    for c, out in enumerate(outputs):
        assert out[-1].strip() == "done"
        for line in out[:-1]:
            thread, incarnation, ts = map(int, line.split())
            by_incarnation[incarnation].append(ts)
            by_thread[(c, thread)].append(ts)
    for incarnation, ts in probes:
        by_incarnation[incarnation].append(ts)

    everything = [ts for values in by_incarnation.values() for ts in values]
    assert len(set(everything)) == len(everything), "a timestamp was handed out twice"
    assert sorted(by_incarnation) == list(range(CRASHES + 1))
    for k in range(CRASHES):
        assert min(by_incarnation[k + 1]) > max(by_incarnation[k]), \
            f"restart {k + 1} handed out a timestamp at or below one from before the crash"
    for seq in by_thread.values():
        assert all(a < b for a, b in itertools.pairwise(seq)), \
            "a thread's timestamps went backwards"


@pytest.mark.parametrize("failpoint,first_after_restart", [
    ("oracle.before_persist_mark", 1),      # nothing persisted, nothing handed out
    ("oracle.after_persist_mark", BLOCK + 2),  # mark 1 + BLOCK on disk: start above it
])
def test_crash_at_the_persist_of_a_block(tmp_path: Path, failpoint: str,
                                         first_after_restart: int) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, "--oracle-block", str(BLOCK),
                           env={"PERCOLATOR_FAILPOINTS": f"{failpoint}=exit"}).start()
    try:
        with RemoteOracle(server.address, timeout=WAIT) as client, pytest.raises(Unavailable):
            client.get_timestamp()  # the server dies at the failpoint, before answering
        assert server.proc is not None
        assert server.proc.wait(timeout=WAIT) == FAILPOINT_EXIT_CODE
    finally:
        server.kill()
    with ServerProcess(data, "--oracle-block", str(BLOCK)) as restarted, \
            RemoteOracle(restarted.address, timeout=WAIT) as client:
        assert client.get_timestamp() == first_after_restart

"""Crash recovery: a client killed at each commit phase, and a server killed mid-stream.

A new client must see all of the crashed transaction or none of it -- none when the
crash came before the commit point (the primary's commit), all when after -- within a
time bounded by the lock TTL, and must be able to write those cells again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from percolator import Client
from percolator.clock import FakeClock, SystemClock
from percolator.failpoints import FAILPOINT_EXIT_CODE
from tests.procs import ServerProcess

CHILD = Path(__file__).with_name("crash_child.py")
ROWS = (b"crash-a", b"crash-b", b"crash-c")
LOCK_TTL = 1.0
REPO = Path(__file__).resolve().parents[2]

# failpoint -> does the transaction survive?
PHASES = [
    ("commit.after_prewrite_primary", False),
    ("commit.after_prewrite", False),
    ("commit.after_commit_primary", True),
    ("commit.after_commit_secondary", True),
]


def run_child(target: str, failpoint: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PERCOLATOR_FAILPOINTS", None)
    if failpoint:
        env["PERCOLATOR_FAILPOINTS"] = f"{failpoint}=exit"
    return subprocess.run([sys.executable, str(CHILD), *args[:1], target, *args[1:]],
                          env=env, capture_output=True, text=True, timeout=60)


def must_see_all_or_none(client: Client, survives: bool) -> None:
    txn = client.begin()
    values = txn.get_many([(r, c) for r in ROWS for c in (b"v", b"big")])
    if survives:
        assert values == {**{(r, b"v"): b"new-" + r for r in ROWS},
                          **{(r, b"big"): b"x" * 1000 for r in ROWS}}
    else:
        assert set(values.values()) == {None}, values


def must_write_again(client: Client) -> None:
    with client.transaction() as txn:
        for row in ROWS:
            txn.set(row, b"v", b"again")
    txn = client.begin()
    assert [txn.get(r, b"v") for r in ROWS] == [b"again"] * 3


@pytest.mark.parametrize("failpoint,survives", PHASES)
def test_embedded_client_killed_at_failpoint(tmp_path: Path, failpoint: str, survives: bool
                                             ) -> None:
    data = str(tmp_path / "data")
    done = run_child(data, failpoint, "once", str(LOCK_TTL))
    assert done.returncode == FAILPOINT_EXIT_CODE, done.stderr
    assert "committed" not in done.stdout
    # A fake clock far past the TTL: the stranded locks are expired without waiting.
    clock = FakeClock(start_ms=SystemClock().now_ms() + 3_600_000)
    with Client.embedded(data, lock_ttl=LOCK_TTL, clock=clock) as client:
        must_see_all_or_none(client, survives)
        must_write_again(client)


@pytest.mark.parametrize("failpoint,survives", PHASES[:3])
def test_remote_client_killed_at_failpoint_resolved_within_ttl(tmp_path: Path, failpoint: str,
                                                               survives: bool) -> None:
    with ServerProcess(tmp_path / "data") as server:
        done = run_child("tcp:" + server.address, failpoint, "once", str(LOCK_TTL))
        assert done.returncode == FAILPOINT_EXIT_CODE, done.stderr
        with Client.connect(server.address, lock_ttl=LOCK_TTL) as client:
            began = time.monotonic()
            must_see_all_or_none(client, survives)
            waited = time.monotonic() - began
            # Real clock this time: the reader waits at most about one TTL for the dead lock.
            assert waited < LOCK_TTL + 2.0, f"resolution took {waited:.2f}s"
            must_write_again(client)


def test_node_killed_between_the_primary_and_the_secondaries_commits(tmp_path: Path) -> None:
    """The commit step runs in the node: a node that dies right after the commit point
    leaves the secondaries locked; after its restart, readers roll them forward."""
    data = tmp_path / "data"
    with ServerProcess(data, env={"PERCOLATOR_FAILPOINTS": "commit.after_commit_primary=exit"}
                       ) as server:
        done = run_child("tcp:" + server.address, None, "once", str(LOCK_TTL))
        assert server.proc is not None and server.proc.wait(timeout=30) == FAILPOINT_EXIT_CODE
    # The client could not learn the outcome from a dead node: neither done nor failed.
    assert done.returncode != 0 and "committed" not in done.stdout
    assert "CommitUndetermined" in done.stderr, done.stderr
    with ServerProcess(data) as server, Client.connect(server.address,
                                                       lock_ttl=LOCK_TTL) as client:
        must_see_all_or_none(client, survives=True)
        must_write_again(client)


def test_server_killed_mid_stream_loses_no_acknowledged_commit(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, str(CHILD), "stream", "tcp:" + server.address,
                              "100000"], env=env, stdout=subprocess.PIPE, text=True)
    acked = -1
    assert child.stdout is not None
    try:
        for line in child.stdout:
            acked = int(line.split()[1])
            if acked >= 300:
                server.kill()  # kill -9 while the client keeps committing
                break
        rest, _ = child.communicate(timeout=120)  # the client fails once the server is gone
        for line in rest.splitlines():  # acknowledged between the kill and the client noticing
            if line.startswith("acked "):
                acked = max(acked, int(line.split()[1]))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert acked >= 300
    with ServerProcess(data) as server2, Client.connect(server2.address) as client:
        txn = client.begin()
        rows = {r: v for r, _, v in txn.scan(b"stream-", b"stream-\xff", columns=[b"v"])}
        for i in range(acked + 1):
            assert rows.get(b"stream-%06d" % i) == b"%d" % i, f"acknowledged commit {i} lost"
        mirror = {c: v for _, c, v in txn.scan(b"stream-mirror", b"stream-mirror\x00")}
        # All or nothing per transaction: each stream row has its mirror cell and vice versa.
        for row, value in rows.items():
            assert mirror.get(b"v" + row[len(b"stream-"):]) == value
        assert len(mirror) == len(rows)

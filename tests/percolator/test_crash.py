"""Crash recovery: clients and nodes killed at each commit phase, one-phase and two-phase.

Where each failpoint fires:

* ``commit.after_prewrite_primary``, ``commit.after_prewrite``: in the client's commit
  driver, after its prewrite calls, before the commit step -- two-phase commit only;
* ``commit.before_commit_primary`` (every lock in place, commit_ts taken),
  ``commit.after_commit_primary``, ``commit.after_commit_secondary``: in the commit step,
  which one-phase commit runs too, wherever the step runs -- the embedded client's
  process, or the node's for a remote client.

A new client must see all of the crashed transaction or none of it -- none when the
crash came before the commit point (the primary's commit), all when after -- within a
time bounded by the lock TTL (a one-phase commit's locks carry the step's own,
``LOCK_TTL_MS``), and must be able to write those cells again.  Clients and nodes
killed with ``kill -9`` mid-stream must lose no acknowledged commit and tear no
transaction.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from percolator import Client
from percolator._steps.one_phase import LOCK_TTL_MS
from percolator.clock import FakeClock, SystemClock
from percolator.failpoints import FAILPOINT_EXIT_CODE
from tests.procs import LineProcess, ServerProcess

from .txn_fixtures import lock_cells

CHILD = str(Path(__file__).with_name("crash_child.py"))
ROWS = (b"crash-a", b"crash-b", b"crash-c")
LOCK_TTL = 1.0
WAIT = 60.0  # bound on every wait for a process
MODES = {"one-phase": [], "two-phase": ["--two-phase"]}

CLIENT_FAILPOINTS = [  # failpoint -> does the transaction survive?
    ("commit.after_prewrite_primary", False),
    ("commit.after_prewrite", False),
]
STEP_FAILPOINTS = [
    ("commit.before_commit_primary", False),
    ("commit.after_commit_primary", True),
    ("commit.after_commit_secondary", True),
]
EMBEDDED_CASES = [("two-phase", fp, survives) for fp, survives in CLIENT_FAILPOINTS] + [
    (mode, fp, survives) for mode in MODES for fp, survives in STEP_FAILPOINTS]
STEP_CASES = [(mode, fp, survives) for mode in MODES for fp, survives in STEP_FAILPOINTS]


def lock_ttl(mode: str) -> float:
    """The TTL of the locks a commit in ``mode`` leaves when it dies (by the step's clock)."""
    return LOCK_TTL_MS / 1000 if mode == "one-phase" else LOCK_TTL


def child(*args: str, failpoints: str | None = None) -> LineProcess:
    return LineProcess([CHILD, *args], failpoints=failpoints)


def once(target: str, mode: str, failpoint: str | None = None) -> LineProcess:
    """The child committing one 3-row transaction, dying at ``failpoint``; waited for."""
    proc = child("once", target, "--lock-ttl", str(LOCK_TTL), *MODES[mode],
                 failpoints=f"{failpoint}=exit" if failpoint else None)
    proc.wait(WAIT)
    return proc


def must_see_all_or_none(client: Client, survives: bool) -> None:
    txn = client.begin()
    values = txn.get_many([(r, c) for r in ROWS for c in (b"v", b"big")])
    if survives:
        assert values == {**{(r, b"v"): b"new-" + r for r in ROWS},
                          **{(r, b"big"): b"x" * 1000 for r in ROWS}}
    else:
        assert set(values.values()) == {None}, values
    assert lock_cells(client) == [], "the reader left locks behind"


def must_write_again(client: Client) -> None:
    with client.transaction() as txn:
        for row in ROWS:
            txn.set(row, b"v", b"again")
    txn = client.begin()
    assert [txn.get(r, b"v") for r in ROWS] == [b"again"] * 3


def must_have_left_locks(client: Client, survives: bool, mode: str = "two-phase") -> None:
    """A two-phase crash before the commit point strands locks: else the test proves
    nothing.  A one-phase commit writes no lock: dead before its one write, it leaves
    nothing at all."""
    if survives:
        return
    if mode == "two-phase":
        assert lock_cells(client), "the crash left no lock behind"
    else:
        assert lock_cells(client) == [], "a one-phase commit never writes a lock"


# --- one transaction, killed at each failpoint -------------------------------------------------


@pytest.mark.parametrize("mode,failpoint,survives", EMBEDDED_CASES)
def test_embedded_client_killed_at_failpoint(tmp_path: Path, mode: str, failpoint: str,
                                             survives: bool) -> None:
    data = str(tmp_path / "data")
    done = once(data, mode, failpoint)
    assert done.proc.returncode == FAILPOINT_EXIT_CODE, done.stderr_text()
    assert not any("committed" in line for line in done.stdout)
    # A fake clock far past the TTL: the stranded locks are expired without waiting.
    clock = FakeClock(start_ms=SystemClock().now_ms() + 3_600_000)
    with Client.embedded(data, lock_ttl=LOCK_TTL, clock=clock) as client:
        must_have_left_locks(client, survives, mode)
        must_see_all_or_none(client, survives)
        must_write_again(client)


@pytest.mark.parametrize("failpoint,survives", CLIENT_FAILPOINTS)
def test_remote_client_killed_at_failpoint_resolved_within_ttl(tmp_path: Path, failpoint: str,
                                                               survives: bool) -> None:
    with ServerProcess(tmp_path / "data") as server:
        done = once("tcp:" + server.address, "two-phase", failpoint)
        assert done.proc.returncode == FAILPOINT_EXIT_CODE, done.stderr_text()
        with Client.connect(server.address, lock_ttl=LOCK_TTL) as client:
            must_have_left_locks(client, survives)
            began = time.monotonic()
            must_see_all_or_none(client, survives)
            waited = time.monotonic() - began
            # Real clock this time: the reader waits at most about one TTL for the dead lock.
            assert waited < LOCK_TTL + 2.0, f"resolution took {waited:.2f}s"
            must_write_again(client)


@pytest.mark.parametrize("mode,failpoint,survives", STEP_CASES)
def test_node_killed_at_commit_step_failpoint(tmp_path: Path, mode: str, failpoint: str,
                                              survives: bool) -> None:
    """A remote client's commit step runs in the node: the node dies there (the client
    cannot learn the outcome: neither done nor failed), then restarts, and readers find
    the transaction whole or gone."""
    data = tmp_path / "data"
    with ServerProcess(data, env={"PERCOLATOR_FAILPOINTS": f"{failpoint}=exit"}) as server:
        done = once("tcp:" + server.address, mode)
        assert server.proc is not None and server.proc.wait(timeout=WAIT) == FAILPOINT_EXIT_CODE
    assert done.proc.returncode != 0 and not any("committed" in x for x in done.stdout)
    assert "CommitUndetermined" in done.stderr_text()
    with ServerProcess(data) as server, Client.connect(server.address,
                                                       lock_ttl=LOCK_TTL) as client:
        must_have_left_locks(client, survives, mode)
        began = time.monotonic()
        must_see_all_or_none(client, survives)
        waited = time.monotonic() - began
        assert waited < lock_ttl(mode) + 2.0, f"resolution took {waited:.2f}s"
        must_write_again(client)


@pytest.mark.parametrize("mode", MODES)
def test_node_syncing_every_commit_killed_before_the_fsync_of_its_write(
        tmp_path: Path, mode: str) -> None:
    """Under ``--sync always`` the node's event loop writes without its own fsync and
    answers once a pass over the log has covered the write: killed just before that
    pass, the node has acknowledged nothing (the client cannot learn the outcome), and
    after a restart readers find the transaction whole or gone."""
    data = tmp_path / "data"
    with ServerProcess(data, "--sync", "always", env={
            "PERCOLATOR_FAILPOINTS": "log_sync.before_fsync=exit"}) as server:
        done = once("tcp:" + server.address, mode)
        assert server.proc is not None and server.proc.wait(timeout=WAIT) == FAILPOINT_EXIT_CODE
    assert done.proc.returncode != 0 and not any("committed" in x for x in done.stdout)
    with ServerProcess(data, "--sync", "always") as server, Client.connect(
            server.address, lock_ttl=LOCK_TTL) as client:
        txn = client.begin()
        values = set(txn.get_many([(r, b"v") for r in ROWS]).values())
        assert values in ({None}, {b"new-" + r for r in ROWS}), values
        must_write_again(client)


# --- streams of transactions, killed mid-way -------------------------------------------------


Acked = set[tuple[int, int]]


def acked_of(proc: LineProcess) -> Acked:
    """(thread, number) of every transaction the child reported committed."""
    out = set()
    for line in proc.stdout:
        if line.startswith("acked "):
            _, thread, i = line.split()
            out.add((int(thread), int(i)))
    return out


def wait_for_acks(proc: LineProcess, count: int) -> None:
    """Until the child acknowledged ``count`` commits (bounded)."""
    seen = 0
    deadline = time.monotonic() + WAIT
    while seen < count:
        line = proc.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        assert line is not None, f"the child ended after {seen} commits: {proc.stderr_text()}"
        seen += line.startswith("acked ")


def stream(target: str, mode: str, prefix: str, *args: str) -> LineProcess:
    return child("stream", target, "--prefix", prefix, "--lock-ttl", str(LOCK_TTL),
                 *MODES[mode], *args)


def must_hold_stream(client: Client, prefix: str, acked: Acked) -> set[bytes]:
    """Every acknowledged transaction of the stream is there, and every transaction is
    whole (its row and its mirror cell, or neither); returns the committed ones."""
    txn = client.begin()
    p = prefix.encode()
    rows = {row[len(p) + 1:]: value for row, _, value in txn.scan(p + b"/", p + b"0", [b"v"])}
    mirror = {column: value for _, column, value in txn.scan(p + b"-mirror", p + b"-mirror\x00")}
    txn.commit()
    for thread, i in sorted(acked):
        name = b"%d/%06d" % (thread, i)
        assert rows.get(name) == name, f"acknowledged commit {name!r} lost"
    assert rows == mirror, f"torn transactions: {set(rows) ^ set(mirror)}"
    assert all(name == value for name, value in rows.items())
    assert [row for _, row, _ in lock_cells(client) if row.startswith(p)] == [], \
        "the readers left locks behind"
    return set(rows)


def write_again(client: Client, prefix: str) -> None:
    with client.transaction() as txn:
        txn.set(prefix + "/again", "v", "again")
        txn.set(prefix + "-mirror", "again", "again")
    assert client.begin().get(prefix + "-mirror", "again") == b"again"


@pytest.mark.parametrize("mode", MODES)
def test_node_killed_at_a_commit_step_under_load(tmp_path: Path, mode: str) -> None:
    """Acknowledged commits, then a node armed to die in its first commit step while four
    threads of a client commit at once (their steps share the node's batches): after the
    restart nothing acknowledged is lost, every transaction is whole or gone, and the one
    whose commit point the node passed is whole."""
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        before = stream("tcp:" + server.address, mode, "before", "--count", "25",
                        "--threads", "2")
        assert before.wait(WAIT) == 0, before.stderr_text()
    acked = acked_of(before)
    assert len(acked) == 50
    armed = {"PERCOLATOR_FAILPOINTS": "commit.after_commit_primary=exit"}
    with ServerProcess(data, env=armed) as server:
        during = stream("tcp:" + server.address, mode, "during", "--threads", "4")
        assert server.proc is not None and server.proc.wait(timeout=WAIT) == FAILPOINT_EXIT_CODE
        assert during.wait(WAIT) == 1, during.stderr_text()
    with ServerProcess(data) as server, Client.connect(server.address) as client:
        must_hold_stream(client, "before", acked)
        committed = must_hold_stream(client, "during", acked_of(during))
        assert committed, "the transaction past its commit point is gone"
        write_again(client, "during")


@pytest.mark.parametrize("mode", MODES)
def test_server_killed_mid_stream_loses_no_acknowledged_commit(tmp_path: Path,
                                                               mode: str) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    try:
        writer = stream("tcp:" + server.address, mode, "stream", "--threads", "2")
        wait_for_acks(writer, 200)
        server.kill()  # kill -9 while the client keeps committing
        assert writer.wait(WAIT) == 1, writer.stderr_text()  # it fails once the node is gone
    finally:
        server.kill()
    acked = acked_of(writer)  # every line, those printed after the kill too
    assert len(acked) >= 200
    with ServerProcess(data) as server2, Client.connect(server2.address) as client:
        began = time.monotonic()
        must_hold_stream(client, "stream", acked)
        waited = time.monotonic() - began
        assert waited < lock_ttl(mode) + 2.0, f"resolution took {waited:.2f}s"
        write_again(client, "stream")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["embedded", "remote"])
def test_client_killed_mid_stream_loses_no_acknowledged_commit(tmp_path: Path, kind: str,
                                                               mode: str) -> None:
    """kill -9 of a client while its threads commit: its locks are resolved by readers
    (within the TTL), and everything it acknowledged is there."""
    data = tmp_path / "data"
    server = ServerProcess(data).start() if kind == "remote" else None
    try:
        target = "tcp:" + server.address if server is not None else str(data)
        writer = stream(target, mode, "stream", "--threads", "2")
        wait_for_acks(writer, 100)
        writer.kill()
        acked = acked_of(writer)
        if server is None:
            clock = FakeClock(start_ms=SystemClock().now_ms() + 3_600_000)
            with Client.embedded(data, clock=clock) as client:
                must_hold_stream(client, "stream", acked)
                write_again(client, "stream")
            return
        with Client.connect(server.address) as client:
            began = time.monotonic()
            must_hold_stream(client, "stream", acked)
            waited = time.monotonic() - began
            assert waited < lock_ttl(mode) + 2.0, f"resolution took {waited:.2f}s"
            write_again(client, "stream")
    finally:
        if server is not None:
            server.terminate()


def test_node_syncing_every_commit_killed_while_group_commits_are_in_flight(
        tmp_path: Path) -> None:
    """A node with ``--sync always`` and three client processes of three threads each
    committing at once, so their synced writes are written in groups (one fsync for
    several transactions): kill -9 of the node mid-stream loses no acknowledged commit
    and tears no transaction, in any of the streams."""
    data = tmp_path / "data"
    server = ServerProcess(data, "--sync", "always").start()
    prefixes = ("group0", "group1", "group2")
    try:
        writers = [stream("tcp:" + server.address, "one-phase", p, "--threads", "3")
                   for p in prefixes]
        for writer in writers:
            wait_for_acks(writer, 60)
        server.kill()  # kill -9 while every writer keeps committing
        for writer in writers:
            assert writer.wait(WAIT) == 1, writer.stderr_text()
    finally:
        server.kill()
    with ServerProcess(data, "--sync", "always") as server2, \
            Client.connect(server2.address) as client:
        for prefix, writer in zip(prefixes, writers):
            acked = acked_of(writer)
            assert len(acked) >= 60
            must_hold_stream(client, prefix, acked)
        write_again(client, "group0")

"""Crashes around garbage collection: clients killed with live locks or a running reader,
and a node killed in the middle of a pass.

After each: nothing committed is lost, every snapshot at or above the safe point reads
as before, and a transaction cut off by the crash is settled all or nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bigtable_lite import Unavailable
from percolator import Client, SnapshotTooOld, Transaction
from percolator.failpoints import FAILPOINT_EXIT_CODE
from tests.procs import LineProcess, ServerProcess

from .gc_child import ROWS
from .gc_helpers import eventually, garbage, settle_reports
from .steps import lock_versions
from .test_crash import must_see_all_or_none, must_write_again

CHILD = Path(__file__).with_name("gc_child.py")
REPO = Path(__file__).resolve().parents[2]
HOUR = "3600"  # a lock TTL no test waits out: GC rolls such locks back itself
PHASES = [  # failpoint -> does the transaction survive?
    ("commit.after_prewrite_primary", False),
    ("commit.after_prewrite", False),
    ("commit.after_commit_primary", True),
]
GC_NOW = ("--gc-life-time", "0", "--gc-interval", HOUR)  # passes when the test asks


def run_child(failpoint: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PERCOLATOR_FAILPOINTS", None)
    if failpoint:
        env["PERCOLATOR_FAILPOINTS"] = f"{failpoint}=exit"
    return subprocess.run([sys.executable, str(CHILD), *args], env=env, capture_output=True,
                          text=True, timeout=60)


def must_have_no_locks(client: Client) -> None:
    assert lock_versions(client.backend, client.table) == []


@pytest.mark.parametrize("failpoint,survives", PHASES)
def test_embedded_client_killed_with_live_locks_gc_settles_then_collects(
        tmp_path: Path, failpoint: str, survives: bool) -> None:
    data = str(tmp_path / "data")
    done = run_child(failpoint, "once", data, HOUR)
    assert done.returncode == FAILPOINT_EXIT_CODE, done.stderr
    with Client.embedded(data, gc_life_time=0, gc_interval=None) as client:
        collected = client.collect_garbage()  # before any reader: GC alone settles them
        assert collected.locks_resolved == (0 if survives else 2 * len(ROWS)), collected
        must_have_no_locks(client)
        assert garbage(client, collected.safe_point) == []
        must_see_all_or_none(client, survives)
        must_write_again(client)


@pytest.mark.parametrize("failpoint,survives", PHASES[:2])
def test_remote_client_killed_with_live_locks_gc_settles_them_after_its_lease(
        tmp_path: Path, failpoint: str, survives: bool) -> None:
    with ServerProcess(tmp_path / "data", *GC_NOW, "--gc-client-lease", "1") as server:
        done = run_child(failpoint, "once", "tcp:" + server.address, HOUR)
        assert done.returncode == FAILPOINT_EXIT_CODE, done.stderr
        with Client.connect(server.address) as client:
            resolved = [0]

            def settled() -> bool:
                resolved[0] += client.collect_garbage().locks_resolved
                return resolved[0] > 0

            # The dead client's timestamps hold the safe point for one lease (1 s).
            eventually(settled, "GC settled the dead client's locks", timeout=30)
            assert resolved[0] == 2 * len(ROWS)
            must_have_no_locks(client)
            must_see_all_or_none(client, survives)
            must_write_again(client)
            settle_reports(client)
            assert garbage(client, client.collect_garbage().safe_point) == []


def test_a_killed_readers_snapshot_is_held_for_its_lease_only(tmp_path: Path) -> None:
    lease = 2.0
    with ServerProcess(tmp_path / "data", *GC_NOW, "--gc-client-lease", str(lease)) as server, \
            Client.connect(server.address) as client:
        with client.transaction() as txn:
            txn.set(ROWS[0], b"v", b"old")
        child = LineProcess([str(CHILD), "hold", "tcp:" + server.address], stdin=True)
        try:
            line = child.lines.get(timeout=30)
            assert line is not None and line.startswith("reader "), child.stderr_text()
            reader_ts = int(line.split()[1])
            with client.transaction() as txn:
                txn.set(ROWS[0], b"v", b"new")
            # Alive for three leases: its reports keep holding the safe point.
            threading.Event().wait(3 * lease)
            assert client.collect_garbage().safe_point <= reader_ts
        finally:
            child.kill()  # kill -9: no final report
        eventually(lambda: client.collect_garbage().safe_point > reader_ts,
                   "the killed reader's lease passed", timeout=30)
        assert client.run(lambda txn: txn.get(ROWS[0], b"v")) == b"new"


def test_node_killed_mid_pass_loses_nothing_and_changes_nothing_readable(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    rows = [b"row%04d" % i for i in range(600)]  # three chunks of a pass
    with ServerProcess(data, *GC_NOW,
                       env={"PERCOLATOR_FAILPOINTS": "gc.after_collect_chunk=exit"}) as server, \
            Client.connect(server.address) as client:
        for version in (b"1", b"2" * 400):
            for i in range(0, len(rows), 100):
                with client.transaction() as txn:
                    for row in rows[i:i + 100]:
                        txn.set(row, b"v", version + row)
        reader = client.begin()  # holds its snapshot through the pass
        held = {r: v for r, _, v in reader.scan(columns=[b"v"])}
        for i in range(0, len(rows), 100):
            with client.transaction() as txn:
                for row in rows[i:i + 100]:
                    txn.set(row, b"v", b"3" + row)
                    if row.endswith(b"7"):
                        txn.delete(row, b"v")
        latest = {r: v for r, _, v in client.begin().scan(columns=[b"v"])}
        settle_reports(client)
        with pytest.raises(Unavailable):
            client.collect_garbage()  # the node dies after its first chunk
        assert server.proc is not None
        assert server.proc.wait(timeout=30) == FAILPOINT_EXIT_CODE
    with ServerProcess(data, *GC_NOW) as server, Client.connect(server.address) as client:
        status = client.gc_status()
        assert status.safe_point == reader.start_ts  # persisted before collecting
        again = Transaction(client.ctx, reader.start_ts)
        assert {r: v for r, _, v in again.scan(columns=[b"v"])} == held
        assert {r: v for r, _, v in client.begin().scan(columns=[b"v"])} == latest
        with pytest.raises(SnapshotTooOld):
            Transaction(client.ctx, reader.start_ts - 1).get(rows[0], b"v")
        settle_reports(client)
        done = client.collect_garbage()  # the whole pass this time
        assert done.safe_point == reader.start_ts and done.removed > 0, done
        assert garbage(client, done.safe_point) == []
        assert {r: v for r, _, v in again.scan(columns=[b"v"])} == held
        assert {r: v for r, _, v in client.begin().scan(columns=[b"v"])} == latest
        again.rollback()

"""The citation example on a cluster: `percolator serve`, `percolator citations load`, worker
processes of which one crashes at the failpoint after its first observer commit and one is
killed with kill -9 mid-work, a third that finishes, and `percolator citations verify`."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from observers.citations import FOLD, REFS, edit_stream, generate_graph, stored_counts
from observers.citations.edits import ExpectedCounts, commit_edit
from observers.citations.recount import diff_counts, expected_counts
from percolator import Client
from percolator.failpoints import FAILPOINT_EXIT_CODE
from tests.procs import ServerProcess

from .observer_fixtures import REPO, draw_seed, eventually
from .worker_procs import WorkerProcess

pytestmark = pytest.mark.slow

CITATIONS = "observers.citations:OBSERVERS"
SMALL_BATCHES = "tests.observers.plugin_fixtures:small_batch_citations"
FAST = ("--threads", "2", "--lease-ttl", "1.5", "--heartbeat", "0.1", "--lock-ttl", "1")


def cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PERCOLATOR_FAILPOINTS", None)
    return subprocess.run([sys.executable, "-m", "percolator", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def pending(client: Client) -> int:
    return client.notifications.pending(client.table, [REFS, FOLD], 10**7)


def test_cluster_load_crashes_and_verify(tmp_path: Path) -> None:
    rng = random.Random(draw_seed("citations cluster"))
    seed = rng.randrange(2**31)
    n = 250
    with ServerProcess(tmp_path / "data") as server:
        loaded = cli("citations", "load", "--generate", str(n), "--seed", str(seed),
                     "--batch", "50", "--no-progress", "--connect", server.address)
        assert loaded.returncode == 0, loaded.stderr
        assert f"loaded {n} papers in 5 transactions" in loaded.stdout
        papers = generate_graph(n, seed)
        expected = ExpectedCounts(papers, expected_counts(papers))
        with Client.connect(server.address, lock_ttl=1.0) as client:
            assert pending(client) == n
            target = ("--connect", server.address, "--observers", CITATIONS, *FAST)
            with WorkerProcess(*target, "--worker-id", "w-crash",
                               failpoints="worker.after_observer=exit") as crashed:
                assert crashed.wait() == FAILPOINT_EXIT_CODE, crashed.stderr()
            # Batches of 8 papers, so the kill lands between many small commits (the
            # default batches would finish 250 papers in one or two).
            small = ("--connect", server.address, "--observers", SMALL_BATCHES, *FAST)
            with WorkerProcess(*small, "--worker-id", "w-killed") as victim:
                victim.wait_for("running as w-killed")
                for edit in edit_stream(papers, 40, seed + 1):
                    expected.apply(edit)
                    commit_edit(client, edit)
                eventually(lambda: pending(client) <= n // 2, "some progress", timeout=60)
                victim.kill()
            left = pending(client)
            print(f"killed a worker with {left} notifications pending")
            with WorkerProcess(*target, "--worker-id", "w-last", "--until-idle",
                               "--timeout", "120") as last:
                assert last.wait(timeout=150) == 0, last.stderr()
            with client.transaction() as txn:
                diff = diff_counts(stored_counts(txn), expected.counts(), ("stored", "model"))
            assert not diff, "\n".join(diff[:20])
        checked = cli("citations", "verify", "--connect", server.address, "--wait", "30")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.startswith("verified:"), checked.stdout
        assert "batch recount" in checked.stdout


def test_cli_snap_load_worker_until_idle_and_verify_embedded(tmp_path: Path) -> None:
    sample = REPO / "tests" / "observers" / "data" / "cit-sample.txt"
    data = str(tmp_path / "data")
    loaded = cli("citations", "load", "--snap", str(sample), "--no-progress", "--data-dir", data)
    assert loaded.returncode == 0, loaded.stderr
    assert "percolator citations: loaded" in loaded.stdout
    worked = cli("worker", "--data-dir", data, "--observers", CITATIONS, "--until-idle",
                 "--timeout", "60")
    assert worked.returncode == 0, worked.stderr
    checked = cli("citations", "verify", "--data-dir", data)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("verified:")


def test_verify_fails_with_a_diff_or_on_pending_work(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        with Client.connect(server.address) as client:
            with client.transaction() as txn:  # no observed columns yet: never counted
                txn.set(b"p1", b"paper:refs", b'["p2"]')
            checked = cli("citations", "verify", "--connect", server.address, "--wait", "5")
            assert checked.returncode == 1
            assert checked.stdout.startswith("MISMATCH: 2 counts differ"), checked.stdout
            assert "backward['p2']: stored=0 recount=1" in checked.stdout
            client.register_observed_columns([b"paper:refs"])
            with client.transaction() as txn:  # notified, but no worker runs
                txn.set(b"p3", b"paper:refs", b'["p2"]')
        checked = cli("citations", "verify", "--connect", server.address, "--wait", "0.5")
        assert checked.returncode == 1
        assert "notifications still pending after 0.5s" in checked.stderr

"""The Hermitage, bank and crash suites with garbage collection running aggressively beside them.

GC here keeps nothing for time's sake (life time 0): a pass every 20 ms in the
background, remote clients' reports under a 2 s lease, and for Hermitage a whole pass before
every single step a transaction takes (``CollectingBackend``).  Only the running
transactions' snapshots hold the safe point, which is what these suites then test: no
anomaly appears, no money is created or lost, no commit vanishes, and a crashed
transaction is still all or nothing.

The suites' own modules are imported as they stand (test_isolation.py's Hermitage
cases, test_bank.py's transfer loop and checks, test_crash.py's checks); the clients
and nodes are built here.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from percolator import Client
from percolator._local import LocalBackend
from percolator._node_client import NodeClient
from percolator.clock import FakeClock, SystemClock
from percolator.failpoints import FAILPOINT_EXIT_CODE
from percolator.node import Node
from tests.procs import ServerProcess

from . import test_bank as bank
from .gc_helpers import AGGRESSIVE, CollectingBackend
from .test_crash import (
    WAIT,
    acked_of,
    must_hold_stream,
    must_see_all_or_none,
    must_write_again,
    stream,
    wait_for_acks,
    write_again,
)
from .test_isolation import (  # noqa: F401 - the Hermitage cases, collected here too
    db,
    test_g0_conflict_on_a_secondary_undoes_the_locked_primary,
    test_g0_dirty_write_second_committer_conflicts,
    test_g0_three_writers_only_the_first_committer_wins,
    test_g1a_aborted_read_after_failed_commit,
    test_g1a_aborted_read_rolled_back,
    test_g1b_intermediate_read,
    test_g1c_circular_information_flow,
    test_g2_item_write_skew_is_allowed,
    test_g2_predicate_anti_dependency_is_allowed,
    test_g2_write_skew_prevented_by_a_common_write,
    test_g_single_read_skew,
    test_g_single_read_skew_predicate,
    test_g_single_read_skew_write_1,
    test_g_single_read_skew_write_2,
    test_otv_observed_transaction_vanishes,
    test_p4_lost_update,
    test_p4_lost_update_by_delete,
    test_pmp_predicate_read,
    test_pmp_write_predicate,
)
from .txn_fixtures import draw_seed, unique_table

REPO = Path(__file__).resolve().parents[2]
GC_CHILD = Path(__file__).with_name("gc_child.py")
CRASH_CHILD = Path(__file__).with_name("crash_child.py")
LEASE = 2.0  # remote clients report every 0.67 s
SERVE_AGGRESSIVE = ("--gc-life-time", "0", "--gc-interval", "0.02", "--gc-client-lease",
                    str(LEASE))


@pytest.fixture(scope="module", name="gc_server")
def gc_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """An in-process node collecting aggressively, shared by the module (tests use separate
    tables); its paced passes do not pause (duty 1)."""
    with Node(tmp_path_factory.mktemp("gc-node"), "127.0.0.1:0", gc_client_lease=LEASE,
              **AGGRESSIVE) as node:
        node.backend.collector.duty = 1.0
        yield node


@pytest.fixture(params=("embedded", "remote"), name="client_kind")
def client_kind_fixture(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="client")
def client_fixture(client_kind: str, request: pytest.FixtureRequest, tmp_path: Path
                   ) -> Iterator[Client]:
    """A client whose every step follows a whole GC pass, beside the background passes."""
    if client_kind == "embedded":
        backend = LocalBackend.open(str(tmp_path / "data"), **AGGRESSIVE)
        backend.collector.duty = 1.0
        collector = backend.collector
        inner: object = backend
    else:
        node: Node = request.getfixturevalue("gc_server")
        collector = node.backend.collector
        inner = NodeClient(node.address)
    before = collector.passes
    proxy = CollectingBackend(inner, lambda: collector.run_pass(paced=True))
    table = unique_table(request) if client_kind == "remote" else b"percolator"
    with Client(proxy, table=table) as c:  # type: ignore[arg-type]
        yield c
    assert proxy.passes > 0 and collector.passes > before, "no GC pass ran beside the test"


# --- bank -----------------------------------------------------------------------------------


def test_bank_threads_with_gc_beside(client_kind: str, tmp_path: Path,
                                     request: pytest.FixtureRequest) -> None:
    """The bank's threads and its snapshot reader, GC passing every 20 ms behind them."""
    seed = draw_seed(f"test_bank_threads_with_gc_beside[{client_kind}]")
    if client_kind == "embedded":
        client = Client.embedded(tmp_path / "data", **AGGRESSIVE)
        collector = client.backend.collector  # type: ignore[attr-defined]
        collector.duty = 1.0  # no pauses: as aggressive as the node's below
    else:
        node: Node = request.getfixturevalue("gc_server")
        client = Client.connect(node.address, table=unique_table(request))
        collector = node.backend.collector
    with client:
        passes, removed = collector.passes, collector.removed
        bank.open_accounts(client)
        started = time.monotonic()
        tally, reader = bank.run_threads(client, seed, bank.DURATION)
        bank.report(f"bank threads with GC [{client_kind}]", seed, tally, reader,
                    time.monotonic() - started)
        bank.check_final(client, tally)
        print(f"GC: {collector.passes - passes} passes removed"
              f" {collector.removed - removed} versions")
        assert collector.passes - passes > 10 and collector.removed - removed > 0


def test_bank_processes_with_gc_beside(tmp_path: Path) -> None:
    """Client processes against a `percolator serve` collecting aggressively."""
    seed = draw_seed("test_bank_processes_with_gc_beside")
    table = b"bank_gc_%d" % seed
    with ServerProcess(tmp_path / "data", *SERVE_AGGRESSIVE) as server, \
            Client.connect(server.address, table=table) as client:
        bank.open_accounts(client)
        began_at = client.timestamp()
        reader = bank.Reader(client)
        started = time.monotonic()
        reader.start()
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(bank.PROCESSES) as pool:
            pending = [pool.apply_async(bank.process_main,
                                        (server.address, table, seed, i, bank.DURATION,
                                         True))
                       for i in range(bank.PROCESSES)]
            tally = bank.Tally()
            try:
                for p in pending:
                    tally.add(p.get(timeout=bank.JOIN_TIMEOUT + 30.0))
            finally:
                reader.stop.set()
        bank.finish(reader, tally)
        bank.report("bank processes with GC [remote]", seed, tally, reader,
                    time.monotonic() - started)
        bank.check_final(client, tally)
        status = client.gc_status()
        assert status.safe_point > began_at and status.last_pass is not None, status


# --- crash ----------------------------------------------------------------------------------

PHASES = [  # failpoint -> does the transaction survive?
    ("commit.after_prewrite_primary", False),
    ("commit.after_prewrite", False),
    ("commit.after_commit_primary", True),
]
LOCK_TTL = 1.0


def run_child(child: Path, failpoint: str | None, *args: str
              ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PERCOLATOR_FAILPOINTS", None)
    if failpoint:
        env["PERCOLATOR_FAILPOINTS"] = f"{failpoint}=exit"
    return subprocess.run([sys.executable, str(child), *args], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("failpoint,survives", PHASES)
def test_embedded_client_killed_at_failpoint_with_gc_beside(
        tmp_path: Path, failpoint: str, survives: bool) -> None:
    data = str(tmp_path / "data")
    done = run_child(GC_CHILD, failpoint, "once", data, str(LOCK_TTL))
    assert done.returncode == FAILPOINT_EXIT_CODE, done.stderr
    # A fake clock far past the TTL: the stranded locks are expired without waiting.
    clock = FakeClock(start_ms=SystemClock().now_ms() + 3_600_000)
    with Client.embedded(data, lock_ttl=LOCK_TTL, clock=clock, **AGGRESSIVE) as client:
        must_see_all_or_none(client, survives)
        must_write_again(client)
        collector = client.backend.collector  # type: ignore[attr-defined]
        passes = collector.passes
        deadline = time.monotonic() + 30
        while collector.passes < passes + 2 and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert collector.passes >= passes + 2
        txn = client.begin()
        assert txn.get(b"crash-a", b"v") == b"again"


@pytest.mark.parametrize("failpoint,survives", PHASES[:2])  # the commit step runs at the node
def test_remote_client_killed_at_failpoint_with_gc_beside(
        tmp_path: Path, failpoint: str, survives: bool) -> None:
    with ServerProcess(tmp_path / "data", *SERVE_AGGRESSIVE) as server:
        done = run_child(GC_CHILD, failpoint, "once", "tcp:" + server.address, str(LOCK_TTL))
        assert done.returncode == FAILPOINT_EXIT_CODE, done.stderr
        with Client.connect(server.address, lock_ttl=LOCK_TTL) as client:
            began = time.monotonic()
            must_see_all_or_none(client, survives)
            waited = time.monotonic() - began
            assert waited < LOCK_TTL + 2.0, f"resolution took {waited:.2f}s"
            must_write_again(client)


def test_node_killed_after_the_commit_point_with_gc_beside(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, *SERVE_AGGRESSIVE,
                       env={"PERCOLATOR_FAILPOINTS": "commit.after_commit_primary=exit"}
                       ) as server:
        done = run_child(GC_CHILD, None, "once", "tcp:" + server.address, str(LOCK_TTL))
        assert server.proc is not None and server.proc.wait(timeout=30) == FAILPOINT_EXIT_CODE
    assert done.returncode != 0 and "committed" not in done.stdout
    assert "CommitUndetermined" in done.stderr, done.stderr
    with ServerProcess(data, *SERVE_AGGRESSIVE) as server, \
            Client.connect(server.address, lock_ttl=LOCK_TTL) as client:
        must_see_all_or_none(client, survives=True)
        must_write_again(client)


def test_node_killed_mid_stream_with_gc_beside_loses_no_acknowledged_commit(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, *SERVE_AGGRESSIVE).start()
    try:
        writer = stream("tcp:" + server.address, "one-phase", "stream", "--threads", "2")
        wait_for_acks(writer, 300)
        server.kill()  # kill -9 while the client keeps committing and GC collects
        assert writer.wait(WAIT) == 1, writer.stderr_text()  # it fails once the node is gone
    finally:
        server.kill()
    acked = acked_of(writer)  # every line, those printed after the kill too
    assert len(acked) >= 300
    with ServerProcess(data, *SERVE_AGGRESSIVE) as server2, \
            Client.connect(server2.address) as client:
        must_hold_stream(client, "stream", acked)
        write_again(client, "stream")
        assert client.gc_status().last_pass is not None

"""Worker processes on one `percolator serve` server: two share the work and the exact sum;
a worker killed at the failpoint after its observer's commit, or by kill -9 at any moment,
loses nothing and doubles nothing once a new worker finishes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from observers import Worker
from percolator import Client
from percolator.failpoints import FAILPOINT_EXIT_CODE
from tests.procs import ServerProcess

from . import sum_observers
from .observer_fixtures import draw_seed, eventually, write_cells
from .worker_procs import SUM_OBSERVERS, WorkerProcess

pytestmark = pytest.mark.slow

# Short lease and lock TTLs, so a dead worker's share and locks are taken over quickly.
FAST = ("--threads", "2", "--lease-ttl", "1.5", "--heartbeat", "0.1", "--lock-ttl", "1")


def load_values(client: Client, n: int, label: str) -> tuple[list[bytes], int]:
    rng = random.Random(draw_seed(label))
    rows = [b"s%05d" % i for i in range(n)]
    values = {r: rng.randrange(1, 1000) for r in rows}
    write_cells(client, {(r, sum_observers.VALUE): b"%d" % v for r, v in values.items()},
                per_txn=100)
    return rows, sum(values.values())


def must_be_exact(client: Client, rows: list[bytes], expected: int) -> None:
    assert sum_observers.total(client) == expected, "the sum must be exact"
    runs = sum_observers.runs(client, rows)
    assert {r: n for r, n in runs.items() if n != 1} == {}, "each row observed exactly once"


def pending(client: Client) -> int:
    return client.notifications.pending(client.table, [sum_observers.VALUE], 10**7)


def alive(client: Client) -> set[str]:
    return {m.worker for m in client.notifications.members(client.table) if m.alive}


def test_two_worker_processes_share_the_work_and_the_sum_is_exact(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server, Client.connect(server.address) as client:
        with WorkerProcess("--connect", server.address, "--observers", SUM_OBSERVERS,
                           "--worker-id", "w1", *FAST) as w1, \
             WorkerProcess("--connect", server.address, "--observers", SUM_OBSERVERS,
                           "--worker-id", "w2", *FAST) as w2:
            w1.wait_for("running as w1")
            w2.wait_for("running as w2")
            # Both are members; their buckets are split once each pulled again.
            eventually(lambda: alive(client) == {"w1", "w2"}, "both are members")
            eventually(lambda: all(m.owned for m in client.notifications.members(
                client.table)), "each owns buckets")
            rows, expected = load_values(client, 600, "two processes")
            eventually(lambda: pending(client) == 0 and sum_observers.total(client) == expected,
                       "all processed", timeout=90)
            assert w1.terminate() == 0 and w2.terminate() == 0
            s1, s2 = w1.stats(), w2.stats()
        must_be_exact(client, rows, expected)
    print(f"w1 processed {s1['processed']}, w2 {s2['processed']};"
          f" conflicts {s1['conflicts']}+{s2['conflicts']}")
    assert s1["processed"] + s2["processed"] == len(rows)
    assert 0.35 * len(rows) <= s1["processed"] <= 0.65 * len(rows)


@pytest.mark.parametrize("kind", ["embedded", "remote"])
def test_worker_killed_after_observer_commit_loses_and_doubles_nothing(tmp_path: Path,
                                                                       kind: str) -> None:
    data = tmp_path / "data"
    if kind == "embedded":
        with Client.embedded(data) as client:
            client.register_observed_columns([sum_observers.VALUE])
            rows, expected = load_values(client, 50, "failpoint embedded")
        target = ("--data-dir", str(data))
    server = ServerProcess(data).start() if kind == "remote" else None
    try:
        if server is not None:
            with Client.connect(server.address) as client:
                client.register_observed_columns([sum_observers.VALUE])
                rows, expected = load_values(client, 50, "failpoint remote")
            target = ("--connect", server.address)
        with WorkerProcess(*target, "--observers", SUM_OBSERVERS, *FAST, "--until-idle",
                           failpoints="worker.after_observer=exit") as crashed:
            assert crashed.wait() == FAILPOINT_EXIT_CODE, crashed.stderr()
        client = (Client.connect(server.address, lock_ttl=1.0) if server is not None
                  else Client.embedded(data, lock_ttl=1.0))
        with client:
            assert pending(client) == len(rows), "the committed cell's notification survived"
            stats = Worker(client, sum_observers.OBSERVERS, threads=2,
                           heartbeat=0.1).run_until_idle(timeout=60)
            assert stats.skipped >= 1, "the re-delivered cell was recognised by its ack"
            must_be_exact(client, rows, expected)
            assert pending(client) == 0
    finally:
        if server is not None:
            server.terminate()


def test_worker_killed_by_sigkill_mid_work_loses_and_doubles_nothing(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        with Client.connect(server.address, lock_ttl=1.0) as client:
            client.register_observed_columns([sum_observers.VALUE])
            rows, expected = load_values(client, 1500, "kill -9")
            with WorkerProcess("--connect", server.address, "--observers", SUM_OBSERVERS,
                               *FAST) as victim:
                victim.wait_for("running as")
                eventually(lambda: pending(client) <= len(rows) - 150, "some progress")
                victim.kill()
            left = pending(client)
            print(f"killed with {left} of {len(rows)} cells pending")
            assert 0 < left < len(rows)
            stats = Worker(client, sum_observers.OBSERVERS, threads=4,
                           heartbeat=0.1).run_until_idle(timeout=90)
            must_be_exact(client, rows, expected)
            assert pending(client) == 0
            print(f"the new worker processed {stats.processed}, skipped {stats.skipped}")
            assert alive(client) == set(), "the dead worker's lease expired; the new one left"

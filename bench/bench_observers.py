"""Observers: notifications processed per second, trigger-to-observer latency, notify-scan cost
after churn.

Prints:
  * trivial observer runs/s with 1 and 4 worker threads, embedded and remote (a bulk
    writer loaded the notifications first; the worker has its own client, so it learns
    every writer's fate through the store, as a separate process would);
  * latency from a writer's commit returning to the observer's commit, p50 and p99,
    under a steady trickle of single-row writes while idle workers wait;
  * time to scan the (empty) notify table after N notifications came and went, without
    and with compaction of the notify table.
Targets (issue "Notifications, observers and workers"):
  embedded trivial observer runs     >= 2,000/s
  trigger-to-observer latency p50    <  50 ms with idle workers waiting

Usage: python bench/bench_observers.py [--notifications N] [--churn N] [--skip-remote]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigtable_lite import DeleteVersion, LocalStore, Put, RowMutation, ScanRequest  # noqa: E402
from observers import Observer, Worker, compact_notifications  # noqa: E402
from observers._stats import percentile  # noqa: E402
from percolator import Client, Transaction, layout  # noqa: E402
from percolator.notifications import BUCKETS  # noqa: E402
from tests.procs import ServerProcess  # noqa: E402

COLUMN = b"bench:in"
TARGET_RUNS = 2000.0
TARGET_P50_MS = 50.0


class Trivial(Observer):
    """Does nothing but get acknowledged: the cost of the machinery itself."""

    column = COLUMN

    def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
        pass


class Timed(Observer):
    """Records when its transaction for each row committed."""

    column = COLUMN

    def __init__(self) -> None:
        super().__init__()
        self.done: dict[bytes, float] = {}
        self.arrived = threading.Condition()

    def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
        pass

    def committed(self, row: bytes, column: bytes, commit_ts: int) -> None:
        with self.arrived:
            self.done[row] = time.time()  # wall clock: comparable with a writer process
            self.arrived.notify_all()


@contextmanager
def clients(mode: str) -> Iterator[tuple[Client, Callable[[], Client], str]]:
    """(writer client, factory of further clients on the same cluster, server address)."""
    path = tempfile.mkdtemp(prefix=f"bench-obs-{mode}-")
    try:
        if mode == "embedded":
            writer = Client.embedded(path)
            try:
                yield writer, lambda: Client(writer.backend), ""  # the same steps, not owned
            finally:
                writer.close()
        else:
            with ServerProcess(path) as server:
                writer = Client.connect(server.address)
                try:
                    yield writer, lambda: Client.connect(server.address), server.address
                finally:
                    writer.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)


def load(client: Client, n: int, prefix: bytes, per_txn: int = 100) -> None:
    for i in range(0, n, per_txn):
        with client.transaction() as txn:
            for j in range(i, min(n, i + per_txn)):
                txn.set(prefix + b"%07d" % j, COLUMN, b"x")


def throughput(mode: str, threads: int, n: int) -> tuple[float, float, float]:
    """(runs/s, observer p50 ms, p99 ms) for n preloaded notifications."""
    with clients(mode) as (writer, another, _):
        writer.register_observed_columns([COLUMN])
        load(writer, n, b"t")
        client = another()
        try:
            worker = Worker(client, [Trivial()], threads=threads)
            began = time.perf_counter()
            stats = worker.run_until_idle(timeout=600)
            elapsed = time.perf_counter() - began
        finally:
            client.close()
    assert stats.processed == n, stats
    return n / elapsed, stats.latency_p50_ms, stats.latency_p99_ms


def trickle(client: Client, writes: int, interval: float,
            sent: Callable[[bytes, float], None]) -> None:
    """One single-row write every ``interval`` seconds; ``sent(row, wall time of its commit)``."""
    for i in range(writes):
        row = b"l%06d" % i
        with client.transaction() as txn:
            txn.set(row, COLUMN, b"x")
        sent(row, time.time())
        time.sleep(interval)  # the trickle's pace (load generation, not synchronisation)


def owns_all(worker: Worker, timeout: float = 30.0) -> None:
    """Wait until ``worker`` owns every bucket of its column: the latency is of idle
    workers, not of one still being granted its first assignment (the node holds it
    a moment for others to join; the first writes waited that out, ~200 ms)."""
    deadline = time.monotonic() + timeout
    while worker.stats().buckets < BUCKETS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker owns {worker.stats().buckets} of {BUCKETS}"
                               f" buckets after {timeout}s")
        time.sleep(0.01)  # polling a figure the worker exposes; bounded above


def latency(mode: str, writes: int, interval: float) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, max ms) from a writer's commit to its observer's commit, idle workers.

    Remote, the writer is a process of its own, as writers are in a deployment (sharing
    the worker's interpreter, its client threads compete for the GIL and the p99
    triples); embedded, it cannot be (one process owns the data directory).
    """
    with clients(mode) as (writer, another, address):
        timed = Timed()
        client = another()
        worker = Worker(client, [timed], threads=4)
        worker.start()
        owns_all(worker)
        committed: dict[bytes, float] = {}
        try:
            if mode == "embedded":
                trickle(writer, writes, interval, committed.__setitem__)
            else:
                out = subprocess.run(
                    [sys.executable, __file__, "--trickle-writer", address, str(writes),
                     str(interval)], capture_output=True, text=True, timeout=600, check=True)
                for line in out.stdout.splitlines():
                    row, at = line.split()
                    committed[row.encode()] = float(at)
            with timed.arrived:
                timed.arrived.wait_for(lambda: len(timed.done) >= writes, timeout=60)
        finally:
            worker.stop()
            client.close()
    samples = [(timed.done[r] - t) * 1000 for r, t in committed.items() if r in timed.done]
    assert len(samples) == writes, f"{writes - len(samples)} writes never observed"
    return percentile(samples, 50), percentile(samples, 99), max(samples)


def scan_seconds(store: object, table: bytes, repeat: int = 5) -> float:
    """Best-of time to scan the whole notify table (as an idle worker's probe does)."""
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        for _row in store.scan(ScanRequest(table)):  # type: ignore[attr-defined]
            pass
        best = min(best, time.perf_counter() - began)
    return best


def churn(store: object, table: bytes, n: int, batch: int = 1000) -> None:
    """n notifications written then deleted version by version, as writers and workers do."""
    for i in range(0, n, batch):
        rows = [b"c%09d" % j for j in range(i, min(n, i + batch))]
        store.mutate_rows([RowMutation(table, r, (Put(COLUMN, 1000 + i, b"\x00" * 9),))  # type: ignore[attr-defined]
                           for r in rows])
        store.mutate_rows([RowMutation(table, r, (DeleteVersion(COLUMN, 1000 + i),))  # type: ignore[attr-defined]
                           for r in rows])


def churn_embedded(n: int) -> tuple[float, float, float, float]:
    """Scan times: before churn, after, after LevelDB's plain CompactRange, after compact_table."""
    path = tempfile.mkdtemp(prefix="bench-churn-")
    try:
        with LocalStore(path) as store:
            table = layout.notify_table(layout.DEFAULT_TABLE)
            before = scan_seconds(store, table)
            churn(store, table, n)
            after = scan_seconds(store, table)
            store.engine.compact_range(None, None)
            plain = scan_seconds(store, table)
            store.compact_table(table)
            compacted = scan_seconds(store, table)
        return before, after, plain, compacted
    finally:
        shutil.rmtree(path, ignore_errors=True)


def churn_remote(n: int) -> tuple[float, float, float]:
    """Scan times over gRPC: before churn, after, after compact_notifications (the node
    compacts the notify table, as compact_table does in-process)."""
    path = tempfile.mkdtemp(prefix="bench-churn-remote-")
    try:
        with ServerProcess(path) as server, Client.connect(server.address) as client:
            table = layout.notify_table(client.table)
            before = scan_seconds(client.store, table)
            churn(client.store, table, n)
            after = scan_seconds(client.store, table)
            compact_notifications(client)
            return before, after, scan_seconds(client.store, table)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notifications", type=int, default=5000,
                        help="notifications per throughput run, embedded (remote: 2/5 of it)")
    parser.add_argument("--churn", type=int, default=200_000,
                        help="notifications that come and go before the scan measurement")
    parser.add_argument("--trickle", type=int, default=300, help="writes in the latency run")
    parser.add_argument("--skip-remote", action="store_true")
    parser.add_argument("--trickle-writer", nargs=3, metavar=("ADDR", "N", "INTERVAL"),
                        help=argparse.SUPPRESS)  # the latency run's writer process
    args = parser.parse_args()
    if args.trickle_writer:
        address, n, interval = args.trickle_writer
        with Client.connect(address) as client:
            trickle(client, int(n), float(interval),
                    lambda row, at: print(row.decode(), repr(at), flush=True))
        return 0
    modes = ["embedded"] if args.skip_remote else ["embedded", "remote"]

    print("== trivial observer runs/s (preloaded notifications; observer p50/p99 = run+commit)")
    for mode in modes:
        n = args.notifications if mode == "embedded" else max(200, args.notifications * 2 // 5)
        for threads in (1, 4):
            rate, p50, p99 = throughput(mode, threads, n)
            target = f"   target >= {TARGET_RUNS:,.0f}/s" if mode == "embedded" else ""
            ok = "" if mode != "embedded" else ("  OK" if rate >= TARGET_RUNS else "  MISSED")
            print(f"{mode:8s} threads={threads}  {rate:8,.0f} runs/s   observer p50"
                  f" {p50:6.2f} ms  p99 {p99:6.2f} ms{target}{ok}", flush=True)

    print(f"\n== trigger-to-observer latency, {args.trickle} writes at 50/s, idle workers"
          " (4 threads)")
    for mode in modes:
        p50, p99, worst = latency(mode, args.trickle, 0.02)
        ok = "OK" if p50 < TARGET_P50_MS else "MISSED"
        print(f"{mode:8s} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  max {worst:6.2f} ms"
              f"   target p50 < {TARGET_P50_MS:.0f} ms  {ok}", flush=True)

    print(f"\n== scan of the empty notify table after {args.churn:,} notifications came and went")
    before, after, plain, compacted = churn_embedded(args.churn)
    print(f"embedded  before churn {before * 1000:8.2f} ms   after churn {after * 1000:8.2f} ms"
          f"   after plain CompactRange {plain * 1000:8.2f} ms   after compact_table"
          f" {compacted * 1000:8.2f} ms", flush=True)
    if not args.skip_remote:
        before, after, compacted = churn_remote(args.churn)
        print(f"remote    before churn {before * 1000:8.2f} ms   after churn {after * 1000:8.2f}"
              f" ms   after compact_notifications {compacted * 1000:8.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

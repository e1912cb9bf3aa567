"""Transaction throughput, embedded and remote, against raw plyvel measured in the same run.

Prints, for each mode: single-row write transactions/s, two-row transfers/s (read two,
write two) with 1 and 8 threads, read-only snapshot reads/s, abort rates, and the
ratio to the raw engine.  Targets (issue "Percolator transactions"):
  embedded single-row write txns  >= 1/12 of raw plyvel puts/s
  embedded two-row transfers      >= 1/15 of raw plyvel two-key read-modify-writes/s
  remote two-row transfers        >= 2,000/s with 8 threads from one client process

Usage: python bench/bench_txn.py [--seconds S] [--skip-remote]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigtable_lite._leveldb import plyvel  # noqa: E402
from percolator import Client, CommitConflict, Transaction  # noqa: E402
from tests.procs import ServerProcess  # noqa: E402

ACCOUNTS = 1000


def rate(fn: Callable[[int], None], seconds: float) -> float:
    """Calls of fn per second over about ``seconds``."""
    n = 0
    began = time.perf_counter()
    deadline = began + seconds
    while True:
        for _ in range(100):
            fn(n)
            n += 1
        if time.perf_counter() >= deadline:
            return n / (time.perf_counter() - began)


def raw_plyvel(seconds: float) -> tuple[float, float]:
    """(puts/s, two-key read-modify-writes/s) on a bare plyvel database."""
    path = tempfile.mkdtemp(prefix="bench-raw-")
    try:
        db = plyvel.DB(path, create_if_missing=True)
        puts = rate(lambda i: db.put(b"k%09d" % i, b"v" * 16), seconds)
        for i in range(ACCOUNTS):
            db.put(b"acct%06d" % i, b"1000")
        rng = random.Random(1)

        def rmw(_: int) -> None:
            a, b = rng.sample(range(ACCOUNTS), 2)
            ka, kb = b"acct%06d" % a, b"acct%06d" % b
            va, vb = int(db.get(ka)), int(db.get(kb))
            wb = db.write_batch()
            wb.put(ka, b"%d" % (va - 1))
            wb.put(kb, b"%d" % (vb + 1))
            wb.write()

        rmws = rate(rmw, seconds)
        db.close()
        return puts, rmws
    finally:
        shutil.rmtree(path, ignore_errors=True)


def transfer(rng: random.Random) -> Callable[[Transaction], None]:
    def fn(txn: Transaction) -> None:
        a, b = rng.sample(range(ACCOUNTS), 2)
        ka, kb = b"acct%06d" % a, b"acct%06d" % b
        values = txn.get_many([(ka, b"bal"), (kb, b"bal")])
        txn.set(ka, b"bal", b"%d" % (int(values[(ka, b"bal")] or 0) - 1))
        txn.set(kb, b"bal", b"%d" % (int(values[(kb, b"bal")] or 0) + 1))
    return fn


def threaded(client: Client, threads: int, seconds: float, seed: int) -> tuple[float, float]:
    """(transfers/s, abort rate) with ``threads`` threads running client.run(transfer).

    ``client.run`` is how users run such transactions: each attempt's snapshot is taken
    by its first read (lazy), and a conflict re-runs the transfer after a short backoff.
    The abort rate is the share of attempts that ended in a conflict.
    """
    done = [0] * threads
    attempts = [0] * threads
    stop = threading.Event()

    def worker(i: int) -> None:
        rng = random.Random(seed + i)
        fn = transfer(rng)

        def counted(txn: Transaction) -> None:
            attempts[i] += 1
            fn(txn)

        while not stop.is_set():
            try:
                client.run(counted)
                done[i] += 1
            except CommitConflict:
                pass  # max_attempts conflicts in a row: counted as aborts above

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    began = time.perf_counter()
    for w in workers:
        w.start()
    stop.wait(seconds)
    stop.set()
    for w in workers:
        w.join(timeout=60)
    elapsed = time.perf_counter() - began
    total = sum(attempts)
    return sum(done) / elapsed, ((total - sum(done)) / total if total else 0.0)


def measure(client: Client, seconds: float) -> dict[str, float]:
    out: dict[str, float] = {}
    counter = iter(range(10**9))

    def one_row(_: int) -> None:
        txn = client.begin()
        txn.set(b"single%09d" % next(counter), b"c", b"v" * 16)
        txn.commit()

    out["single-row write txns/s (1 thread)"] = rate(one_row, seconds)
    with client.transaction() as txn:
        for i in range(ACCOUNTS):
            txn.set(b"acct%06d" % i, b"bal", b"1000")
    for threads in (1, 8):
        tps, abort_rate = threaded(client, threads, seconds, seed=threads)
        out[f"two-row transfers/s ({threads} threads)"] = tps
        out[f"  abort rate ({threads} threads)"] = abort_rate
    rng = random.Random(7)

    def snapshot_read(_: int) -> None:
        txn = client.begin()
        txn.get(b"acct%06d" % rng.randrange(ACCOUNTS), b"bal")
        txn.commit()

    out["read-only snapshot reads/s (1 thread)"] = rate(snapshot_read, seconds)
    return out


def report(mode: str, figures: dict[str, float], puts: float, rmws: float) -> None:
    print(f"\n== {mode} ==")
    for name, value in figures.items():
        if name.strip().startswith("abort"):
            print(f"  {name:42s} {value:10.1%}")
            continue
        base = puts if "single" in name or "read-only" in name else rmws
        print(f"  {name:42s} {value:10.0f}/s   = 1/{base / value:5.1f} of raw")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--skip-remote", action="store_true")
    args = parser.parse_args()
    puts, rmws = raw_plyvel(args.seconds)
    print(f"raw plyvel: {puts:,.0f} puts/s, {rmws:,.0f} two-key read-modify-writes/s")
    tmp = Path(tempfile.mkdtemp(prefix="bench-txn-"))
    try:
        with Client.embedded(tmp / "embedded") as client:
            embedded = measure(client, args.seconds)
        report("embedded", embedded, puts, rmws)
        single = embedded["single-row write txns/s (1 thread)"]
        best = max(embedded["two-row transfers/s (1 threads)"],
                   embedded["two-row transfers/s (8 threads)"])
        print(f"  target single-row >= 1/12 raw puts: {'met' if single >= puts / 12 else 'MISSED'}")
        print(f"  target transfers  >= 1/15 raw RMW:  {'met' if best >= rmws / 15 else 'MISSED'}")
        if not args.skip_remote:
            with ServerProcess(tmp / "remote") as server, Client.connect(server.address) as client:
                remote = measure(client, args.seconds)
                batching: dict[str, float] = getattr(client.backend, "batch_stats", lambda: {})()
            report("remote (loopback, server in its own process)", remote, puts, rmws)
            print(f"  batched commands: {batching}")
            r8 = remote["two-row transfers/s (8 threads)"]
            print(f"  target remote transfers >= 2,000/s (8 threads): "
                  f"{'met' if r8 >= 2000 else 'MISSED'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

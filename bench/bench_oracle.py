"""Benchmark of the timestamp oracle: in-process, and over gRPC on loopback with batching.

Usage: python bench/bench_oracle.py [--seconds S] [--process-threads N] [--no-calls]

Rows "native": the timestamps a remote ``Client`` takes, ``get_timestamps`` commands of
the node client's batches over the node's native transport (percolator/_transport/).

Prints timestamps per second, requests per timestamp and the mean batch size (timestamps
per request) for: the in-process oracle; 1, 16 and 64 requesting threads in one client
process; 4 client processes; each over one ``StreamTimestamps`` stream per client (the
default) and, unless --no-calls, over ``GetTimestamps`` calls (``streams=False``).  The
server is a `percolator serve` subprocess (as in production), so client and server do
not share a GIL; the CPU of the client process(es) and of the server is shown, because
on a small machine the CPU, not the network, is the limit.

Beside them, measured in the same run: the in-process oracle (the raw engine), and a
ring of 64 threads passing a lock from one to the next, nothing else: each timestamp
a blocked requester receives costs one such wake-up of a Python thread, so this is the
most one client process's requesters could receive on this machine; the ring again with
each thread yielding the CPU once after it is woken, as the client's requesters do (see
``percolator/oracle_client.py``), is that most for this client.  Targets from the
issue are printed beside the figures.  Not a test: figures depend on the machine.
"""

from __future__ import annotations

import _thread
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc

from bigtable_lite import LocalStore
from percolator._node_client import NodeClient
from percolator.oracle import Oracle, OracleStats
from percolator.oracle_client import RemoteOracle

TARGET_GRPC_64 = 100_000
TARGET_IN_PROCESS = 1_000_000
ROUNDS = 3
LISTENING = re.compile(r"listening on (\S+:\d+)")


@dataclass
class Figure:
    timestamps: int
    rpcs: int
    seconds: float
    cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.timestamps / self.seconds

    @property
    def batch(self) -> float:
        return self.timestamps / self.rpcs if self.rpcs else 0.0

    def __add__(self, other: Figure) -> Figure:  # processes measured side by side
        seconds = max(self.seconds, other.seconds)
        return Figure(self.timestamps + other.timestamps, self.rpcs + other.rpcs, seconds,
                      self.cpu_seconds + other.cpu_seconds)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of another process (Linux /proc); 0.0 where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- in-process -------------------------------------------------------------------------


def bench_in_process(seconds: float) -> Figure:
    """One thread calling get_timestamp() in a loop; best of ROUNDS rounds."""
    with tempfile.TemporaryDirectory() as tmp, LocalStore(tmp) as store:
        oracle = Oracle(store)
        get = oracle.get_timestamp
        best = Figure(0, 1, 1.0)
        for _ in range(ROUNDS):
            n = 0
            start = time.perf_counter()
            deadline = start + seconds / ROUNDS
            while time.perf_counter() < deadline:
                for _ in range(10_000):
                    get()
                n += 10_000
            figure = Figure(n, n, time.perf_counter() - start)
            if figure.rate > best.rate:
                best = figure
        return best


def bench_wake_ring(threads: int, seconds: float, yielding: bool = False) -> Figure:
    """``threads`` threads in a ring, each waiting on its lock and releasing the next's:
    wake-ups of blocked Python threads per second, with no other work.  ``yielding``: each
    calls ``sched_yield()`` once it is woken, as the oracle client's requesters do."""
    after_wake = getattr(os, "sched_yield", None) if yielding else None
    locks = [_thread.allocate_lock() for _ in range(threads)]
    for lock in locks:
        lock.acquire()
    passes = [0]
    stop = threading.Event()

    def run(i: int) -> None:
        mine, nxt = locks[i], locks[(i + 1) % threads]
        while not stop.is_set():
            if mine.acquire(True, 1.0):
                if after_wake is not None:
                    after_wake()
                passes[0] += 1  # one thread runs at a time: the ring serializes
                nxt.release()

    ring = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for t in ring:
        t.start()
    locks[0].release()
    stop.wait(min(0.5, seconds / 4))  # warm-up
    n0, cpu0, t0 = passes[0], cpu_seconds(), time.perf_counter()
    stop.wait(seconds)
    n1, cpu1, t1 = passes[0], cpu_seconds(), time.perf_counter()
    stop.set()
    for t in ring:
        t.join(timeout=30)
    return Figure(n1 - n0, n1 - n0, t1 - t0, cpu1 - cpu0)


# --- gRPC, threads in this process ------------------------------------------------------


class NativeSource:
    """Timestamps as ``Client.connect`` takes them: ``get_timestamps`` commands of the node
    client's batches, over the node's native transport.  ``stats()``: (timestamps,
    batches), like RemoteOracle's (timestamps, requests)."""

    def __init__(self, address: str) -> None:
        self._client = NodeClient(address, transport="native")

    def get_timestamp(self) -> int:
        return self._client.timestamps(1)

    def stats(self) -> OracleStats:
        return OracleStats(self._client.stats().timestamps_served,
                           int(self._client.batch_stats()["batches"]))

    def __enter__(self) -> NativeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()


def open_source(address: str, how: str) -> RemoteOracle | NativeSource:
    """``how``: "stream" or "calls" (the oracle's gRPC client), "native"."""
    if how == "native":
        return NativeSource(address)
    return RemoteOracle(address, streams=how == "stream")


def bench_threads(address: str, threads: int, seconds: float, how: str,
                  server_cpu: Callable[[], float] = lambda: 0.0) -> Figure:
    """``threads`` threads calling get_timestamp() on one client; counted after a warm-up."""
    stop = threading.Event()
    with open_source(address, how) as client:
        client.get_timestamp()

        def run() -> None:
            get = client.get_timestamp
            while not stop.is_set():
                get()

        workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
        for w in workers:
            w.start()
        try:
            stop.wait(min(0.5, seconds / 4))  # warm-up
            before, cpu0, srv0, t0 = client.stats(), cpu_seconds(), server_cpu(), \
                time.perf_counter()
            stop.wait(seconds)
            after, cpu1, srv1, t1 = client.stats(), cpu_seconds(), server_cpu(), \
                time.perf_counter()
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=30)
    return Figure(after.timestamps_served - before.timestamps_served,
                  after.requests - before.requests, t1 - t0, cpu1 - cpu0, srv1 - srv0)


def client_process_main(address: str, threads: int, seconds: float, how: str) -> None:
    """Child mode: wait for "go" on stdin, measure, print one JSON line."""
    with open_source(address, how) as client:  # import and connect before the start signal
        client.get_timestamp()
    print("ready", flush=True)
    sys.stdin.readline()
    f = bench_threads(address, threads, seconds, how)
    print(json.dumps({"timestamps": f.timestamps, "rpcs": f.rpcs, "seconds": f.seconds,
                      "cpu": f.cpu_seconds}), flush=True)


def bench_processes(address: str, processes: int, threads: int, seconds: float, how: str,
                    server_cpu: Callable[[], float]) -> Figure:
    """``processes`` client processes, started together; each measures as bench_threads
    does, and the server's CPU is taken over the same schedule."""
    command = [sys.executable, __file__, "--client", address, str(threads), str(seconds), how]
    children = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True) for _ in range(processes)]
    try:
        for c in children:
            assert c.stdout is not None and c.stdout.readline().strip() == "ready"
        for c in children:
            assert c.stdin is not None
            c.stdin.write("go\n")
            c.stdin.flush()
        time.sleep(min(0.5, seconds / 4))  # the children's warm-up
        srv0 = server_cpu()
        time.sleep(seconds)
        srv1 = server_cpu()
        total = Figure(0, 0, 0.0)
        for c in children:
            out, _ = c.communicate(timeout=seconds + 60)
            r = json.loads(out.strip().splitlines()[-1])
            total = total + Figure(r["timestamps"], r["rpcs"], r["seconds"], r["cpu"])
        total.server_cpu_seconds = srv1 - srv0
        return total
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()


# --- the server -------------------------------------------------------------------------


class Server:
    """`percolator serve` on 127.0.0.1 port 0, in a temporary data directory."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "percolator", "serve", "--data-dir", self.tmp.name,
             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = LISTENING.search(line)
        if not match:
            self.proc.kill()
            raise SystemExit(f"server did not start: {line!r}")
        self.address = match.group(1)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.tmp.cleanup()


# --- report -----------------------------------------------------------------------------


def row(name: str, f: Figure, target: int | None = None, grpc_figure: bool = True) -> str:
    rpcs = f"{f.rpcs / f.timestamps:16.4f}" if grpc_figure and f.timestamps else f"{'-':>16}"
    batch = f"{f.batch:12.1f}" if grpc_figure else f"{'-':>12}"
    cpu = f"{100 * f.cpu_seconds / f.seconds:11.0f}%" if f.cpu_seconds else f"{'-':>12}"
    server = f"{100 * f.server_cpu_seconds / f.seconds:11.0f}%" if f.server_cpu_seconds \
        else f"{'-':>12}"
    verdict = ""
    if target is not None:
        verdict = f"   target >= {target:,}: {'met' if f.rate >= target else 'MISSED'}"
    return f"{name:<36}{f.rate:>14,.0f}{rpcs}{batch}{cpu}{server}{verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per figure")
    parser.add_argument("--process-threads", type=int, default=16,
                        help="requesting threads in each of the 4 client processes")
    parser.add_argument("--no-calls", action="store_true",
                        help="skip the rows over GetTimestamps calls")
    parser.add_argument("--client", nargs=4, metavar=("ADDRESS", "THREADS", "SECONDS", "HOW"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_process_main(args.client[0], int(args.client[1]), float(args.client[2]),
                            args.client[3])
        return

    print(f"timestamp oracle benchmark: {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}, grpcio {grpc.__version__}, {args.seconds:g} s per figure")
    print(f"{'':<36}{'timestamps/s':>14}{'requests/ts':>16}{'mean batch':>12}"
          f"{'client CPU':>12}{'server CPU':>12}")
    print(row("in-process, 1 thread", bench_in_process(args.seconds), TARGET_IN_PROCESS,
              grpc_figure=False), flush=True)
    print(row("thread wake-ups, ring of 64", bench_wake_ring(64, args.seconds),
              grpc_figure=False), flush=True)
    print(row("  the same, yielding after each wake", bench_wake_ring(64, args.seconds, True),
              grpc_figure=False), flush=True)
    n = args.process_threads
    server = Server()
    try:
        for how in ("stream", "native") if args.no_calls else ("stream", "calls", "native"):
            name = "native" if how == "native" else f"gRPC {how}"
            for threads in (1, 16, 64):
                figure = bench_threads(server.address, threads, args.seconds, how,
                                       server.cpu_seconds)
                print(row(f"{name}, 1 process x {threads} threads", figure,
                          TARGET_GRPC_64 if threads == 64 else None), flush=True)
            figure = bench_processes(server.address, 4, n, args.seconds, how,
                                     server.cpu_seconds)
            print(row(f"{name}, 4 processes x {n} threads", figure,
                      TARGET_GRPC_64 if 4 * n >= 64 else None), flush=True)
    finally:
        server.stop()
    print("requests/ts: GetTimestamps calls, stream messages or native batches per"
          " timestamp.  CPU: CPU time of the client process(es), of the server, / wall"
          " time (100% = one core).")


if __name__ == "__main__":
    main()

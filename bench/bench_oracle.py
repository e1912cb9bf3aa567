"""Benchmark of the timestamp oracle: in-process, and over gRPC on loopback with batching.

Usage: python bench/bench_oracle.py [--seconds S] [--process-threads N]

Prints timestamps per second, RPCs per timestamp and the mean batch size (timestamps
per RPC) for: the in-process oracle; 1, 16 and 64 requesting threads in one client
process; 4 client processes.  The server is a `percolator serve` subprocess (as in
production), so client and server do not share a GIL; the client's CPU use is shown
because on a small machine it, not the server, is the limit.  Targets from the issue
are printed beside the figures.  Not a test: figures depend on the machine.
"""

from __future__ import annotations

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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc

from bigtable_lite import LocalStore
from percolator.oracle import Oracle
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


# --- gRPC, threads in this process ------------------------------------------------------


def bench_threads(address: str, threads: int, seconds: float) -> Figure:
    """``threads`` threads calling get_timestamp() on one client; counted after a warm-up."""
    stop = threading.Event()
    with RemoteOracle(address) as client:
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
            before, cpu0, t0 = client.stats(), cpu_seconds(), time.perf_counter()
            stop.wait(seconds)
            after, cpu1, t1 = client.stats(), cpu_seconds(), time.perf_counter()
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=30)
    return Figure(after.timestamps_served - before.timestamps_served,
                  after.requests - before.requests, t1 - t0, cpu1 - cpu0)


def client_process_main(address: str, threads: int, seconds: float) -> None:
    """Child mode: wait for "go" on stdin, measure, print one JSON line."""
    RemoteOracle(address).close()  # import and connect before the start signal
    print("ready", flush=True)
    sys.stdin.readline()
    f = bench_threads(address, threads, seconds)
    print(json.dumps({"timestamps": f.timestamps, "rpcs": f.rpcs, "seconds": f.seconds,
                      "cpu": f.cpu_seconds}), flush=True)


def bench_processes(address: str, processes: int, threads: int, seconds: float) -> Figure:
    children = [subprocess.Popen(
        [sys.executable, __file__, "--client", address, str(threads), str(seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    try:
        for c in children:
            assert c.stdout is not None and c.stdout.readline().strip() == "ready"
        for c in children:
            assert c.stdin is not None
            c.stdin.write("go\n")
            c.stdin.flush()
        total = Figure(0, 0, 0.0)
        for c in children:
            out, _ = c.communicate(timeout=seconds + 60)
            r = json.loads(out.strip().splitlines()[-1])
            total = total + Figure(r["timestamps"], r["rpcs"], r["seconds"], r["cpu"])
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

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.tmp.cleanup()


# --- report -----------------------------------------------------------------------------


def row(name: str, f: Figure, target: int | None = None, grpc_figure: bool = True) -> str:
    rpcs = f"{f.rpcs / f.timestamps:16.4f}" if grpc_figure and f.timestamps else f"{'-':>16}"
    cpu = f"{100 * f.cpu_seconds / f.seconds:11.0f}%" if f.cpu_seconds else f"{'-':>12}"
    verdict = ""
    if target is not None:
        verdict = f"   target >= {target:,}: {'met' if f.rate >= target else 'NOT met'}"
    return f"{name:<34}{f.rate:>14,.0f}{rpcs}{f.batch:>12.1f}{cpu}{verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per figure")
    parser.add_argument("--process-threads", type=int, default=16,
                        help="requesting threads in each of the 4 client processes")
    parser.add_argument("--client", nargs=3, metavar=("ADDRESS", "THREADS", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_process_main(args.client[0], int(args.client[1]), float(args.client[2]))
        return

    print(f"timestamp oracle benchmark: {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}, grpcio {grpc.__version__}, {args.seconds:g} s per figure")
    print(f"{'':<34}{'timestamps/s':>14}{'RPCs/timestamp':>16}{'mean batch':>12}"
          f"{'client CPU':>12}")
    print(row("in-process, 1 thread", bench_in_process(args.seconds), TARGET_IN_PROCESS,
              grpc_figure=False), flush=True)
    server = Server()
    try:
        for threads in (1, 16, 64):
            figure = bench_threads(server.address, threads, args.seconds)
            print(row(f"gRPC, 1 process x {threads} threads", figure,
                      TARGET_GRPC_64 if threads == 64 else None), flush=True)
        n = args.process_threads
        figure = bench_processes(server.address, 4, n, args.seconds)
        print(row(f"gRPC, 4 processes x {n} threads", figure,
                  TARGET_GRPC_64 if 4 * n >= 64 else None), flush=True)
    finally:
        server.stop()
    print("client CPU: CPU time of the client process(es) / wall time (100% = one core).")


if __name__ == "__main__":
    main()

"""What the metrics cost: a node's throughput, and a transaction's CPU, with metrics counted
and with them turned off, in alternating rounds of one run.

The reference is the same code with every metric update a no-op: the counters',
gauges' and histograms' update methods replaced (in a reference node process and in
this process, for its clients) and the node's RPC interceptor passing calls straight
through -- what a build without metrics would run, but for a few clock reads.

Two nodes run side by side for the whole run, one counting and one the reference; the
rounds alternate between them (on, off, off, on, ...), short, so the machine's load
drifts over both alike.  (Driving both at once from two client processes was tried:
on a loaded machine the scheduler favoured one pair by up to 8x with both counting.)
It prints, as medians of the rounds with the ratio on/off, and beside each the ratio of
the reference's odd rounds to its even ones -- the noise floor of that figure:

* remote: transactions per second against each node (its throughput: single-row
  writes from 1 thread, two-row transfers from 8), and CPU per transaction of the
  node process and of this (client) process;
* embedded: CPU per transaction of this process;
* ``--callgrind``: instructions per single-row write, embedded and at a node (the
  node process under callgrind), which do not move with the machine's load (valgrind
  must be installed; it takes minutes).

Usage: python bench/bench_metrics.py [--seconds S] [--rounds N] [--skip-remote] [--callgrind]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_txn import ACCOUNTS, transfer
from percolator import Client
from percolator._metrics_rpc import RpcMetrics
from percolator.metric_types import CounterChild, GaugeChild, HistogramChild
from tests import procs
from tests.procs import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
_PATCHED: list[tuple[Any, str]] = [(CounterChild, "inc"), (GaugeChild, "inc"),
                                   (GaugeChild, "dec"), (GaugeChild, "set"),
                                   (HistogramChild, "observe")]


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def _through(self: Any, continuation: Callable[[Any], Any], details: Any) -> Any:
    return continuation(details)


@contextmanager
def metrics_off() -> Iterator[None]:
    """Every metric update of this process a no-op, the RPC interceptor a pass-through."""
    saved = [(cls, name, getattr(cls, name)) for cls, name in _PATCHED]
    saved.append((RpcMetrics, "intercept_service", RpcMetrics.intercept_service))
    for cls, name, _ in saved:
        setattr(cls, name, _through if name == "intercept_service" else _nothing)
    try:
        yield
    finally:
        for cls, name, original in saved:
            setattr(cls, name, original)


def serve_without_metrics(argv: list[str]) -> int:
    """``percolator serve`` with metrics off (the reference node)."""
    from percolator import cli

    with metrics_off():
        return cli.main(["serve", *argv])


def node_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Sample = tuple[int, float, float]  # (transactions, wall seconds, this process's CPU seconds)


def single_rows(client: Client, seconds: float) -> Sample:
    """One thread of single-row writes for about ``seconds``."""
    n = 0
    cpu, began = time.process_time(), time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            txn = client.begin()
            txn.set(b"single%09d" % random.getrandbits(30), b"c", b"v" * 16)
            txn.commit()
            n += 1
    return n, time.perf_counter() - began, time.process_time() - cpu


def transfers(client: Client, seconds: float, threads: int) -> Sample:
    """``threads`` threads running client.run(transfer) for about ``seconds``."""
    done = [0] * threads
    stop = threading.Event()

    def work(i: int) -> None:
        fn = transfer(random.Random(i))
        while not stop.is_set():
            client.run(fn)
            done[i] += 1

    cpu, began = time.process_time(), time.perf_counter()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    stop.wait(seconds)
    stop.set()
    for w in workers:
        w.join(timeout=60)
    return sum(done), time.perf_counter() - began, time.process_time() - cpu


def _accounts(client: Client) -> None:
    with client.transaction() as txn:
        for i in range(ACCOUNTS):
            txn.set(b"acct%06d" % i, b"bal", b"1000")


class Figures:
    """Samples by figure and mode (on/off); a figure is higher-is-better or a cost."""

    def __init__(self) -> None:
        self.samples: dict[str, dict[str, list[float]]] = {}

    def add(self, name: str, mode: str, value: float) -> None:
        self.samples.setdefault(name, {}).setdefault(mode, []).append(value)

    def report(self, rounds: int) -> None:
        print(f"median of {rounds} alternating rounds; on = metrics counted,"
              " off = every update a no-op (the reference)")
        for name, modes in self.samples.items():
            on, off = statistics.median(modes["on"]), statistics.median(modes["off"])
            ref = modes["off"]
            floor = statistics.median(ref[1::2]) / statistics.median(ref[0::2]) \
                if len(ref) > 1 else float("nan")
            print(f"  {name:52s} on {on:9.1f}  off {off:9.1f}  on/off {on / off:5.3f}"
                  f"  (off/off {floor:5.3f}; on {_spread(modes['on'])},"
                  f" off {_spread(ref)})")


def _spread(samples: list[float]) -> str:
    """The middle half of the samples: how much the machine moved them."""
    if len(samples) < 4:
        return f"{min(samples):.1f}-{max(samples):.1f}"
    q1, _, q3 = statistics.quantiles(samples, n=4)
    return f"IQR {q1:.1f}-{q3:.1f}"


def _rounds(rounds: int) -> Iterator[tuple[int, str]]:
    """(round, mode): on, off, off, on, on, off, ..."""
    for r in range(rounds):
        yield from ((r, m) for m in (("on", "off") if r % 2 == 0 else ("off", "on")))


def _switch(mode: str) -> AbstractContextManager[None]:
    return metrics_off() if mode == "off" else nullcontext()


def embedded(tmp: Path, seconds: float, rounds: int, figures: Figures) -> None:
    with Client.embedded(tmp / "embedded") as client:
        _accounts(client)
        single_rows(client, seconds / 2)  # warm up
        for _, mode in _rounds(rounds):
            with _switch(mode):
                n, _, cpu = single_rows(client, seconds)
                figures.add("embedded single-row write, CPU us/txn", mode, cpu / n * 1e6)
                n, _, cpu = transfers(client, seconds, 1)
                figures.add("embedded transfer (1 thread), CPU us/txn", mode, cpu / n * 1e6)


def remote(tmp: Path, seconds: float, rounds: int, figures: Figures) -> None:
    """Both nodes up for the whole run; each round runs the loads against one of them
    (their clients in this process, counting or not with their node)."""
    nodes = {mode: _node(tmp / f"node-{mode}", mode) for mode in ("on", "off")}
    try:
        clients = {mode: Client.connect(node.address) for mode, node in nodes.items()}
        for mode, client in clients.items():
            with _switch(mode):
                _accounts(client)
                single_rows(client, seconds / 2)  # warm up
        for _, mode in _rounds(rounds):
            proc = nodes[mode].proc
            assert proc is not None
            with _switch(mode):
                loads: list[tuple[str, Callable[[], Sample]]] = [
                    ("single-row write (1 thread)",
                     lambda: single_rows(clients[mode], seconds)),
                    ("transfer (8 threads)", lambda: transfers(clients[mode], seconds, 8))]
                for name, run in loads:
                    before = node_cpu(proc.pid)
                    n, wall, cpu = run()
                    used = node_cpu(proc.pid) - before
                    figures.add(f"remote {name}, txn/s", mode, n / wall)
                    figures.add(f"remote {name}, node CPU us/txn", mode, used / n * 1e6)
                    figures.add(f"remote {name}, client CPU us/txn", mode, cpu / n * 1e6)
        for client in clients.values():
            client.close()
    finally:
        for node in nodes.values():
            node.terminate()


def _node(data: Path, mode: str, trace: Path | None = None) -> ServerProcess:
    """A node counting metrics (``percolator serve``), or the reference node: this file's
    serve_without_metrics in its place; under callgrind if ``trace`` is given."""
    prefix = [] if trace is None else [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={trace}"]
    if mode == "on":
        command = [*prefix, sys.executable, "-m", "percolator"]
    else:
        command = [*prefix, sys.executable, "-c", "import sys; from bench.bench_metrics"
                   " import serve_without_metrics as s; sys.exit(s(sys.argv[2:]))"]

    def started(*args: str) -> list[str]:
        return [*command, *args]

    node = ServerProcess(data, env={"PYTHONPATH": str(ROOT)})
    with mock.patch.object(procs, "percolator_command", started):
        return node.start(timeout=30.0 if trace is None else 900.0)


def node_callgrind(tmp: Path, n: int = 400) -> dict[str, float]:
    """Instructions of the node per remote single-row write: a node under callgrind
    serving 100 + N and 100 + 0 transactions, (difference) / N, each mode."""
    out: dict[str, float] = {}
    for mode in ("on", "off"):
        totals = []
        for count in (0, n):
            trace = tmp / f"node-callgrind-{mode}-{count}.out"
            node = _node(tmp / f"node-cg-{mode}-{count}", mode, trace)
            try:
                with _switch(mode), Client.connect(node.address) as client:
                    single_rows_counted(client, 100)  # warm: caches, first-use paths
                    single_rows_counted(client, count)
            finally:
                node.terminate(timeout=900.0)
            totals.append(_total(trace))
        out[mode] = (totals[1] - totals[0]) / n
    return out


def callgrind(tmp: Path) -> dict[str, float]:
    """Instructions per embedded single-row write: (N - 0 transactions) / N, each mode."""
    out: dict[str, float] = {}
    n = 2000
    for mode in ("on", "off"):
        totals = []
        for count in (0, n):
            trace = tmp / f"callgrind-{mode}-{count}.out"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={trace}",
                            sys.executable, __file__, "--callgrind-child", mode, str(count),
                            str(tmp / f"cg-{mode}-{count}")],
                           check=True, capture_output=True, cwd=ROOT)
            totals.append(_total(trace))
        out[mode] = (totals[1] - totals[0]) / n
    return out


def _total(trace: Path) -> int:
    for line in trace.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"no totals in {trace}")


def single_rows_counted(client: Client, count: int) -> None:
    for i in range(count):
        txn = client.begin()
        txn.set(b"single%09d" % i, b"c", b"v" * 16)
        txn.commit()


def _callgrind_child(mode: str, count: int, data: str) -> None:
    with Client.embedded(data) as client:
        single_rows_counted(client, 200)  # warm: caches, first-use paths
        with _switch(mode):
            single_rows_counted(client, count)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--callgrind-child":
        _callgrind_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per load and round")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--skip-remote", action="store_true")
    parser.add_argument("--callgrind", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    figures = Figures()
    try:
        if not args.skip_remote:
            remote(tmp, args.seconds, args.rounds, figures)
        embedded(tmp, args.seconds, args.rounds, figures)
        print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
        figures.report(args.rounds)
        if args.callgrind:
            for name, counts in (
                    ("embedded single-row write, instructions/txn", callgrind(tmp)),
                    ("remote single-row write, node instructions/txn", node_callgrind(tmp))):
                print(f"  {name:52s} on {counts['on']:9,.0f}  off {counts['off']:9,.0f}"
                      f"  on/off {counts['on'] / counts['off']:5.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

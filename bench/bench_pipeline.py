"""The citations pipeline as it is deployed: embedded, and as a node with 1, 2 and 4 workers.

For each size N (``--papers``, default 20,000) and each topology, a fresh data
directory gets N generated papers loaded with no worker running (the notifications
wait in the notify table, as after a bulk load), then the workers start and the
clock runs until no citation notification is pending; every run ends with
``percolator citations verify`` (the batch recount of the same snapshot) and the
bench fails loudly if any count is wrong.

What a run's time includes, as a user sees a cluster work off its backlog: from
spawning the worker processes (their start-up: imports, connecting, registering; the
node's held first assignment) until the node reports nothing pending (probed every
0.1 s); embedded, from spawning the process until it exits idle (opening the store
included).  The load before it is not counted.

Topologies, all through the command line, as a user runs them:
  embedded   one ``percolator worker --data-dir D --until-idle`` process (store,
             oracle and observers in one process, no gRPC)
  K workers  one ``percolator serve`` node and K ``percolator worker --connect``
             processes (the topology of docker-compose.yml and `percolator cluster`
             is 2 workers)

Printed per run: papers counted per second; observer transactions (committed ones,
counted by distinct commit_ts through the observers' ``committed`` hook, plus the
ones that lost a conflict) and conflicts, as a share of them; CPU per paper of the
node and of the workers (utime + stime from /proc/<pid>/stat); the refs observer's
counter updates (distinct targets of its runs) per paper and the counters written (by
refs runs and folds, which gather the mail of many refs batches: docs/citations.md)
per paper, so the growth is also printed per paper or counter write; then each figure
beside its reference measured in the same run, as a ratio, against the targets of
the issue "Observers: every committed write is seen, and more workers are never
slower":
  2 workers >= 1 worker, 4 workers >= 1 worker          (papers/s)
  2 workers >= 50% of embedded                           (papers/s)
  observer conflicts < 2% of observer transactions
  CPU per paper at the largest N within 1.2x of the smallest (no growth with backlog)
  idle cluster (no writes, 2 workers running ~10 s): node CPU < 2% of a core; idle
  means settled, which the bench waits for (bounded) and prints how long it took:
  nothing pending, every bucket owned by a live worker, each worker reporting nothing
  queued, in flight or backing off

Usage: python bench/bench_pipeline.py [--papers N [N ...]] [--topologies embedded 1 2 4]
           [--threads T] [--hot N] [--observers SPEC] [--idle-seconds S] [--timeout S]
           [--profile DIR] [--keep]

Current figures and their history: bench/README.md ("bench_pipeline.py").  The first
measurement (main at 9054f06, 2 cores shared with other jobs, load average 9-38, so rates
vary by 2x between runs; CPU per paper is steadier; every run verified):

  20,000 papers        papers/s  observer txns  conflicts      CPU/paper node + workers
  embedded               1,157         8          0            0.34 ms (one process)
  node + 1 worker          806         5          0            0.36 + 0.47 ms
  node + 2 workers          67     9,566      1,659 (17.3%)    8.20 + 6.90 ms
  node + 4 workers          30    19,939      4,417 (22.2%)   17.10 + 15.48 ms
  2 workers / 1 worker 0.08x, 4 / 1 0.04x, 2 workers / embedded 0.06x (targets 1, 1, 0.5);
  idle, 2 workers: node 21.2% of a core (target < 2%).

  100,000 papers (another run): embedded 471 papers/s, 0.62 ms per paper (20,000 in the
  same run: 0.40 ms, 1.56x); 1 worker 202 papers/s, 0.68 + 0.78 ms (20,000: 0.30 + 0.39
  ms, 2.13x, 1.37x relative to embedded's growth; target 1.2x).  Embedded grows because
  the work per paper does: batches of 8,192 papers of the larger corpus cite more
  distinct papers (2.1 counter updates per paper at 20,000, 4.8 at 100,000; py-spy:
  commit and counter reads per paper 2.3x).  2 and 4 workers at 100,000 were not run
  (20,000 took 5-11 minutes).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

if TYPE_CHECKING:  # annotations only: the functions import what they run, where they run it
    from observers import Observer
    from observers.citations import CombiningCounter
    from percolator import Client, Transaction

PROBE_ENV = "PERCOLATOR_PIPELINE_PROBE"  # where a worker process writes its probe counts
HOT_ENV = "PERCOLATOR_PIPELINE_HOT"      # --hot, for the worker processes
UPDATES_KEY = "counter updates"          # in a probe's counts: the refs runs' counter updates
WRITES_KEY = "counter writes"            # in a probe's counts: counters written (refs, folds)
PROBE_SPEC = "bench_pipeline:probe_observers"
TICKS = os.sysconf("SC_CLK_TCK")
LISTENING = re.compile(r"listening on (\S+:\d+)")
FIRST = re.compile(r"first assignment of column (.*)")
STOPPED = re.compile(r"percolator worker: (?:stopped|idle); (\{.*\})")
START_TIMEOUT = 60.0
POLL = 0.1  # seconds between probes of the pending count (as `citations verify` waits)

TARGET_SCALE = 1.0        # K workers / 1 worker, papers/s
TARGET_VS_EMBEDDED = 0.5  # 2 workers / embedded, papers/s
TARGET_CONFLICTS = 0.02   # of observer transactions
TARGET_GROWTH = 1.2       # CPU per paper, largest N / smallest N
TARGET_IDLE = 0.02        # node CPU, fraction of a core


class RunFailed(Exception):
    """A run that did not finish, or whose counts are wrong: reported, and the bench exits 1."""


# --- the probe: loaded by the worker processes as their observers ---------------------------

class _Tally:
    """Distinct commit_ts of observer transactions, per observed column (this process),
    and the counter updates of the refs observer's runs (``updates``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.commits: dict[bytes, set[int]] = {}
        self.updates = 0
        self.writes = 0

    def __call__(self, row: bytes, column: bytes, commit_ts: int) -> None:
        with self.lock:
            self.commits.setdefault(column, set()).add(commit_ts)

    def dump(self, path: str) -> None:
        with self.lock:
            out: dict[str, int] = {c.decode(): len(ts) for c, ts in self.commits.items()}
            out[UPDATES_KEY] = self.updates
            out[WRITES_KEY] = self.writes
        Path(path).write_text(json.dumps(out))


def probe_hook() -> _Tally:
    """A commit hook counting this process's observer transactions, written to
    $PERCOLATOR_PIPELINE_PROBE at exit (for observers given with ``--observers``)."""
    tally = _Tally()
    path = os.environ.get(PROBE_ENV)
    if path:
        atexit.register(tally.dump, path)
    return tally


def probe_observers() -> list[Observer]:
    """The citation observers (``observers.citations.make_observers()``, as OBSERVERS) with
    :func:`probe_hook` as their commit hook, counting the counter updates of the refs
    observer's runs: the distinct targets of each run (a batch sums its papers' deltas
    per target), the work per paper that grows with the corpus (docs/citations.md)."""
    from observers.citations import RefsObserver, combine, make_observers

    tally = probe_hook()
    set_count = combine._set_count

    def counted(txn: Transaction, row: bytes, column: bytes, n: int) -> None:
        with tally.lock:
            tally.writes += 1
        set_count(txn, row, column, n)

    combine._set_count = counted
    hot = os.environ.get(HOT_ENV)
    observers = list(make_observers(on_commit=tally, hot=int(hot)) if hot else
                     make_observers(on_commit=tally))
    for refs in observers:
        if isinstance(refs, RefsObserver):
            # a stand-in forwarding every attribute to the CombiningCounter it wraps
            refs.counter = _CountingCounter(refs.counter, tally)  # type: ignore[assignment]
    return observers


class _CountingCounter:
    """A refs observer's counter, counting the (target, delta) pairs it is given."""

    def __init__(self, counter: CombiningCounter, tally: _Tally) -> None:
        self._counter = counter
        self._tally = tally

    def add_many(self, txn: Transaction, deltas: Sequence[tuple[bytes, int]], source: bytes
                 ) -> None:
        with self._tally.lock:
            self._tally.updates += len(deltas)
        self._counter.add_many(txn, deltas, source)

    def __getattr__(self, name: str) -> object:
        return getattr(self._counter, name)

    def __setattr__(self, name: str, value: object) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._counter, name, value)


# --- processes -------------------------------------------------------------------------------

def percolator(*args: str) -> list[str]:
    return [sys.executable, "-m", "percolator", *args]


def child_env(probe: Path | None = None, hot: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if hot is not None:
        env[HOT_ENV] = str(hot)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if probe is not None:
        env[PROBE_ENV] = str(probe)
    return env


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Proc:
    """A child process whose stdout lines are collected by a thread (and matched on demand)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RunFailed(f"{self.name} printed no {pattern.pattern!r} in"
                                 f" {timeout}s:\n{self.output()}") from None
            if line is None:
                raise RunFailed(f"{self.name} exited ({self.proc.wait()}):\n"
                                 f"{self.output()}")
            match = pattern.search(line)
            if match:
                return match

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise RunFailed(f"{self.name} did not stop in {timeout}s:\n"
                             f"{self.output()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def output(self, last: int = 40) -> str:
        return "".join(self.lines[-last:])


def run_checked(argv: list[str], what: str, timeout: float, env: dict[str, str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise RunFailed(f"{what} still running after {timeout}s") from exc
    if done.returncode != 0:
        raise RunFailed(f"{what} exited with {done.returncode}:\n{done.stdout}"
                         f"{done.stderr}")
    return done.stdout


def wait4(proc: subprocess.Popen[str], timeout: float) -> tuple[int, float]:
    """Reap ``proc``; (exit status, its CPU seconds) from the kernel's rusage."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            raise RunFailed(f"{proc.args!r} still running after {timeout}s")
        time.sleep(0.05)  # polling a child's exit (os.wait4 with a deadline)


class Profiler:
    """py-spy record attached to processes (``--profile``): one flame graph each."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen[bytes]] = []
        if directory is not None:
            exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            if not Path(exe).exists():
                raise SystemExit("--profile needs py-spy (pip install py-spy)")
            self.exe = exe
            directory.mkdir(parents=True, exist_ok=True)

    def attach(self, pid: int, name: str) -> None:
        if self.directory is None:
            return
        out = self.directory / f"{name}.svg"
        self.procs.append(subprocess.Popen(
            [self.exe, "record", "--pid", str(pid), "--rate", "100", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def finish(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(30)
        self.procs = []


# --- one run ---------------------------------------------------------------------------------

@dataclass(slots=True)
class Run:
    papers: int
    topology: str            # "embedded" or the number of workers
    load_s: float = 0.0
    count_s: float = 0.0
    startup_s: float = 0.0   # spawn until the (last) worker said it runs
    node_cpu: float = 0.0    # seconds, while counting
    worker_cpu: float = 0.0  # seconds, all workers, while counting (embedded: the process)
    committed: dict[str, int] = field(default_factory=dict)  # observer txns per column
    conflicts: int = 0
    retries: int = 0
    processed: int = 0
    found: int = 0
    batches: int = 0
    first_assignments: list[str] = field(default_factory=list)  # the node's log lines
    settle_s: float = 0.0             # counting done until settled (idle measurement)
    updates: int = 0         # counter updates of the refs observer's runs (distinct targets)
    writes: int = 0          # counters written, by refs runs and folds
    idle_node: float | None = None    # fraction of a core
    idle_workers: float | None = None
    verified: str = ""

    @property
    def rate(self) -> float:
        return self.papers / self.count_s if self.count_s else 0.0

    @property
    def transactions(self) -> int:
        return sum(self.committed.values()) + self.conflicts

    @property
    def conflict_share(self) -> float:
        return self.conflicts / self.transactions if self.transactions else 0.0

    def per_paper_ms(self, seconds: float) -> float:
        return seconds / self.papers * 1000

    def add_stats(self, stats: dict[str, int]) -> None:
        self.conflicts += stats["conflicts"]
        self.retries += stats["retries"]
        self.processed += stats["processed"]
        self.found += stats["found"]
        self.batches += stats["batches"]

    def add_probe(self, path: Path) -> None:
        if not path.exists():
            raise RunFailed(f"a worker wrote no probe counts ({path})")
        for column, n in json.loads(path.read_text()).items():
            if column == UPDATES_KEY:
                self.updates += n
            elif column == WRITES_KEY:
                self.writes += n
            else:
                self.committed[column] = self.committed.get(column, 0) + n


def verify(target: list[str], env: dict[str, str]) -> str:
    out = run_checked(percolator("citations", "verify", *target, "--wait", "120"),
                      "percolator citations verify", 900, env)
    first = out.splitlines()[0] if out else ""
    if not first.startswith("verified"):
        raise RunFailed(f"counts differ from the batch recount:\n{out}")
    return first


def load(target: list[str], papers: int, seed: int, env: dict[str, str], timeout: float
         ) -> float:
    began = time.perf_counter()
    run_checked(percolator("citations", "load", "--generate", str(papers), "--seed", str(seed),
                           "--no-progress", *target), "percolator citations load", timeout, env)
    return time.perf_counter() - began


def run_embedded(root: Path, papers: int, args: argparse.Namespace) -> Run:
    data = root / "data"
    target = ["--data-dir", str(data)]
    env = child_env()
    run = Run(papers, "embedded", load_s=load(target, papers, args.seed, env, args.timeout))
    probe = root / "probe-embedded.json"
    worker_env = child_env(probe, args.hot)
    began = time.perf_counter()
    proc = subprocess.Popen(
        percolator("worker", *target, "--observers", args.observers, "--threads", str(args.threads),
                   "--until-idle", "--timeout", str(args.timeout)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=worker_env)
    profiler = Profiler(args.profile / f"{papers}-embedded" if args.profile else None)
    profiler.attach(proc.pid, "embedded-worker")
    assert proc.stdout is not None
    lines: list[str] = []
    pump = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    pump.start()
    code, cpu = wait4(proc, args.timeout + 60)
    run.count_s = time.perf_counter() - began
    profiler.finish()
    pump.join(30)
    if code != 0:
        raise RunFailed(f"embedded worker exited with {code}:\n{''.join(lines)}")
    run.worker_cpu = cpu
    stats = [STOPPED.search(line) for line in lines]
    found = [m for m in stats if m]
    if not found:
        raise RunFailed(f"the embedded worker printed no stats:\n{''.join(lines)}")
    run.add_stats(json.loads(found[-1].group(1)))
    run.add_probe(probe)
    run.verified = verify(target, env)
    return run


def pending(client: Client) -> bool:
    """Whether a citation notification is pending (or a backfill of their columns runs):
    the node's count, stopped at the first."""
    from observers.citations import FOLD, REFS

    return client.notifications.pending(client.table, [REFS, FOLD], 1) > 0


def settled(client: Client, workers: int) -> bool:
    """Whether the cluster is idle as a user would find it: nothing pending (no backfill
    either), every bucket of the citation columns owned by one of the ``workers`` live
    workers, and each of them reporting nothing queued, in flight or backing off (the
    counters it last handed to the node)."""
    from observers import WorkerStats
    from observers.citations import FOLD, REFS
    from percolator.notifications import BUCKETS

    n = client.notifications
    table = client.table
    if n.pending(table, [REFS, FOLD], 1) > 0:
        return False
    members = [m for m in n.members(table) if m.alive]
    if len(members) != workers or sum(m.owned for m in members) != BUCKETS * 2:
        return False
    for m in members:
        if not m.stats:
            return False
        stats = WorkerStats.from_json(m.stats)
        if stats.backlog or stats.queued or stats.in_flight or stats.backing_off:
            return False
    return True


def settle(client: Client, workers: int, timeout: float) -> float:
    """Wait (bounded) until :func:`settled`; seconds it took."""
    began = time.perf_counter()
    while not settled(client, workers):
        if time.perf_counter() - began > timeout:
            raise RunFailed(f"the cluster did not settle in {timeout:.0f}s")
        time.sleep(POLL)  # polling the node's status, as `percolator status` is read
    return time.perf_counter() - began


def run_cluster(root: Path, papers: int, workers: int, args: argparse.Namespace,
                idle: bool) -> Run:
    from percolator import Client

    env = child_env()
    node = Proc("node", percolator("serve", "--data-dir", str(root / "node"),
                                   "--listen", "127.0.0.1:0", "--log-level", "info"), env)
    procs: list[Proc] = []
    profiler = Profiler(args.profile / f"{papers}-{workers}w" if args.profile else None)
    try:
        address = node.wait_for(LISTENING, START_TIMEOUT).group(1)
        target = ["--connect", address]
        run = Run(papers, str(workers),
                  load_s=load(target, papers, args.seed, env, args.timeout))
        client = Client.connect(address)
        try:
            node_before = node.cpu()
            began = time.perf_counter()
            probes = [root / f"probe-{i}.json" for i in range(workers)]
            procs = [Proc(f"worker {i + 1}",
                          percolator("worker", *target, "--observers", args.observers,
                                     "--threads", str(args.threads)),
                          child_env(probes[i], args.hot)) for i in range(workers)]
            profiler.attach(node.pid, "node")
            for i, p in enumerate(procs):
                profiler.attach(p.pid, f"worker-{i + 1}")
            for p in procs:
                p.wait_for(re.compile(r"percolator worker: running as"), START_TIMEOUT)
            run.startup_s = time.perf_counter() - began
            deadline = began + args.timeout
            while pending(client):
                if time.perf_counter() > deadline:
                    raise RunFailed(f"{workers} workers did not count {papers:,}"
                                     f" papers in {args.timeout:.0f}s")
                for p in procs:
                    if p.proc.poll() is not None:
                        raise RunFailed(f"{p.name} exited:\n{p.output()}")
                time.sleep(POLL)  # polling the node's pending count, as `citations verify` waits
            run.count_s = time.perf_counter() - began
            run.node_cpu = node.cpu() - node_before
            worker_cpu = [p.cpu() for p in procs]
            run.worker_cpu = sum(worker_cpu)
            profiler.finish()
            run.first_assignments = [m.group(1) for m in map(FIRST.search, node.lines) if m]
            if idle:
                run.settle_s = settle(client, workers, args.timeout)
                node_before, workers_before = node.cpu(), sum(p.cpu() for p in procs)
                began = time.perf_counter()
                time.sleep(args.idle_seconds)  # the measurement window: nothing happens in it
                wall = time.perf_counter() - began
                run.idle_node = (node.cpu() - node_before) / wall
                run.idle_workers = (sum(p.cpu() for p in procs) - workers_before) / wall
        finally:
            client.close()
        for p in procs:
            code = p.stop()
            if code != 0:
                raise RunFailed(f"{p.name} exited with {code}:\n{p.output()}")
            m = [STOPPED.search(line) for line in p.lines]
            stats = [x for x in m if x]
            if not stats:
                raise RunFailed(f"{p.name} printed no stats:\n{p.output()}")
            run.add_stats(json.loads(stats[-1].group(1)))
        for probe in probes:
            run.add_probe(probe)
        run.verified = verify(target, env)
        return run
    finally:
        profiler.finish()
        for p in procs:
            p.kill()
        node.stop()


# --- report ----------------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def print_run(r: Run) -> None:
    name = "embedded" if r.topology == "embedded" else f"{r.topology} worker" + (
        "s" if r.topology != "1" else "")
    txns = ", ".join(f"{c.split(':')[-1]} {n:,}" for c, n in sorted(r.committed.items()))
    cpu = (f"process {r.per_paper_ms(r.worker_cpu):.2f} ms" if r.topology == "embedded" else
           f"node {r.per_paper_ms(r.node_cpu):.2f} ms + workers {r.per_paper_ms(r.worker_cpu):.2f}"
           f" ms = {r.per_paper_ms(r.node_cpu + r.worker_cpu):.2f} ms")
    print(f"  {name:<10} {r.rate:9,.0f} papers/s  ({r.count_s:6.1f} s; load {r.load_s:.1f} s,"
          f" start-up {r.startup_s:.1f} s)", flush=True)
    print(f"             observer transactions {r.transactions:,} (committed: {txns};"
          f" lost a conflict: {r.conflicts:,} = {r.conflict_share:.1%}; other retries"
          f" {r.retries:,}); cells found {r.found:,}, processed {r.processed:,}", flush=True)
    print(f"             CPU per paper: {cpu}", flush=True)
    for line in r.first_assignments:
        print(f"             first assignment of {line}", flush=True)
    print(f"             counter updates of the refs runs: {r.updates:,} ="
          f" {r.updates / r.papers:.2f} per paper; counters written (refs runs and"
          f" folds): {r.writes:,} = {r.writes / r.papers:.2f} per paper", flush=True)
    if r.idle_node is not None:
        print(f"             idle (no writes, workers running; settled {r.settle_s:.1f} s after"
              f" counting): node {r.idle_node:.1%} of a core, workers {r.idle_workers or 0:.1%}",
              flush=True)
    print(f"             {r.verified}", flush=True)


def summary(size: int, runs: dict[str, Run]) -> list[bool]:
    oks: list[bool] = []
    print(f"\n== {size:,} papers: figures beside their references (same run) ==")
    one = runs.get("1")
    for k in ("2", "4"):
        if k in runs and one is not None:
            ratio = runs[k].rate / one.rate
            ok = ratio >= TARGET_SCALE
            oks.append(ok)
            print(f"  {k} workers / 1 worker       {runs[k].rate:9,.0f} / {one.rate:,.0f} papers/s"
                  f" = {ratio:5.2f}x   target >= {TARGET_SCALE:.1f}x  {verdict(ok)}")
    emb = runs.get("embedded")
    if "2" in runs and emb is not None:
        ratio = runs["2"].rate / emb.rate
        ok = ratio >= TARGET_VS_EMBEDDED
        oks.append(ok)
        print(f"  2 workers / embedded       {runs['2'].rate:9,.0f} / {emb.rate:,.0f} papers/s"
              f" = {ratio:5.2f}x   target >= {TARGET_VS_EMBEDDED:.1f}x  {verdict(ok)}")
        cpu2 = runs["2"].node_cpu + runs["2"].worker_cpu
        print(f"  CPU per paper, 2 workers / embedded  {runs['2'].per_paper_ms(cpu2):.2f} /"
              f" {emb.per_paper_ms(emb.worker_cpu):.2f} ms = {cpu2 / emb.worker_cpu:5.2f}x")
    for key, r in runs.items():
        ok = r.conflict_share < TARGET_CONFLICTS
        oks.append(ok)
        print(f"  conflicts, {key:<8}         {r.conflicts:6,} of {r.transactions:,} observer"
              f" transactions = {r.conflict_share:5.1%}   target < {TARGET_CONFLICTS:.0%}"
              f"  {verdict(ok)}")
    for key, r in runs.items():
        if r.idle_node is not None:
            ok = r.idle_node < TARGET_IDLE
            oks.append(ok)
            print(f"  idle node CPU, {key} workers   {r.idle_node:6.1%} of a core"
                  f"   target < {TARGET_IDLE:.0%}  {verdict(ok)}")
    return oks


def growth(small: int, large: int, all_runs: dict[int, dict[str, Run]]) -> list[bool]:
    oks: list[bool] = []
    print(f"\n== CPU per paper, {large:,} papers / {small:,} papers (no growth with backlog) ==")
    for key, r in all_runs[large].items():
        base = all_runs[small].get(key)
        if base is None:
            continue
        a = r.per_paper_ms(r.node_cpu + r.worker_cpu)
        b = base.per_paper_ms(base.node_cpu + base.worker_cpu)
        ok = a / b <= TARGET_GROWTH
        oks.append(ok)
        print(f"  {key:<8}  {a:.2f} / {b:.2f} ms = {a / b:5.2f}x   target <="
              f" {TARGET_GROWTH:.1f}x  {verdict(ok)}")
        if r.writes and base.writes:
            # The workload's share of the growth: a counter write costs about as much as
            # a paper's own cells (docs/citations.md), and how many counters a paper's
            # citations write depends on how many papers share a transaction.  Per unit
            # of work, a paper or a counter write, the growth left is what the system adds.
            cpu_a, cpu_b = r.node_cpu + r.worker_cpu, base.node_cpu + base.worker_cpu
            ua = cpu_a / (r.papers + r.writes) * 1000
            ub = cpu_b / (base.papers + base.writes) * 1000
            print(f"            counters written per paper {r.writes / r.papers:.2f} /"
                  f" {base.writes / base.papers:.2f} ="
                  f" {r.writes / r.papers / (base.writes / base.papers):.2f}x; CPU per"
                  f" paper or counter write {ua:.3f} / {ub:.3f} ms = {ua / ub:5.2f}x")
    # Embedded's own growth (a larger store costs more per read; counters written per
    # paper, printed above, differ between the sizes) is not the cluster's: beside the
    # raw figure, each topology's growth relative to embedded's, what the cluster adds.
    big, small_emb = all_runs[large].get("embedded"), all_runs[small].get("embedded")
    if big is not None and small_emb is not None:
        e = big.per_paper_ms(big.worker_cpu) / small_emb.per_paper_ms(small_emb.worker_cpu)
        for key, r in all_runs[large].items():
            base = all_runs[small].get(key)
            if base is None or key == "embedded":
                continue
            g = (r.node_cpu + r.worker_cpu) / r.papers / (
                (base.node_cpu + base.worker_cpu) / base.papers)
            print(f"  {key:<8}  relative to embedded's growth ({e:.2f}x): {g / e:5.2f}x")
    return oks


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--papers", type=int, nargs="+", default=[20_000])
    ap.add_argument("--topologies", nargs="+", default=["embedded", "1", "2", "4"],
                    help="'embedded' and/or numbers of worker processes")
    ap.add_argument("--threads", type=int, default=4,
                    help="observer threads per worker (the cluster's default)")
    ap.add_argument("--idle-seconds", type=float, default=10.0,
                    help="idle measurement after the 2-worker run (0: none)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run, at most")
    ap.add_argument("--hot", type=int, default=None,
                    help="the citation counters' combining threshold (default: the library's;"
                    " 0 combines every update)")
    ap.add_argument("--observers", default=PROBE_SPEC, metavar="SPEC",
                    help="the workers' observers, pkg.module:name on PYTHONPATH (default: the"
                    " citation observers; others count their transactions with"
                    " bench_pipeline.probe_hook() as commit hook)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="py-spy flame graphs of every process while counting")
    ap.add_argument("--keep", action="store_true", help="keep the data directories")
    args = ap.parse_args(argv)
    for t in args.topologies:
        if t != "embedded" and not (t.isdigit() and int(t) >= 1):
            ap.error(f"topology {t!r}: 'embedded' or a number of workers")
    if any(n < 1 for n in args.papers):
        ap.error("--papers must be positive")

    print(f"pipeline bench: citations, papers {', '.join(f'{n:,}' for n in args.papers)},"
          f" topologies {' '.join(args.topologies)}, {args.threads} observer threads per"
          f" worker, seed {args.seed}"
          f"{'' if args.hot is None else f', combining threshold {args.hot}'};"
          f" {os.cpu_count()} cores, load average"
          f" {os.getloadavg()[0]:.1f}", flush=True)
    all_runs: dict[int, dict[str, Run]] = {}
    failed: list[str] = []
    for papers in args.papers:
        print(f"\n== {papers:,} papers, loaded before the workers start ==", flush=True)
        runs: dict[str, Run] = {}
        for t in args.topologies:
            root = Path(tempfile.mkdtemp(prefix=f"bench-pipeline-{t}-"))
            try:
                if t == "embedded":
                    r = run_embedded(root, papers, args)
                else:
                    r = run_cluster(root, papers, int(t), args,
                                    idle=t == "2" and args.idle_seconds > 0)
            except RunFailed as exc:
                failed.append(f"{papers:,} papers, {t}: {exc}")
                print(f"  {t:<10} FAILED: {exc}", flush=True)
                continue
            finally:
                if args.keep:
                    print(f"  (data kept in {root})")
                else:
                    shutil.rmtree(root, ignore_errors=True)
            runs[t] = r
            print_run(r)
        all_runs[papers] = runs
    oks: list[bool] = []
    for papers, runs in all_runs.items():
        oks += summary(papers, runs)
    sizes = sorted(all_runs)
    if len(sizes) > 1:
        oks += growth(sizes[0], sizes[-1], all_runs)
    if failed:
        print(f"\nFAILED: {len(failed)} runs (figures above are of the others):")
        for line in failed:
            print("  " + line.splitlines()[0])
        return 1
    print(f"\nverified: every run's counts equal the batch recount; targets met"
          f" {sum(oks)} of {len(oks)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Bank transfers from client processes: `percolator serve` against a private PostgreSQL.

The same workload on both: 1,000 accounts of 1,000 units; a transaction picks two distinct
accounts, reads both and, if the first has enough, moves 1..10 units (two writes).  Each
client is its own OS process running one transaction at a time; conflicts are retried
(ours: ``client.run``; PostgreSQL: REPEATABLE READ, retried on serialization failure).
Durability is matched: ``--sync always`` with ``synchronous_commit=on``, ``--sync none``
with ``off``.  Runs alternate ours / PostgreSQL for ``--reps`` repetitions, so noise on
the shared machine hits both alike; after every run both totals must be conserved.

Prints per configuration transfers/s (median and range), the ratio ours/PostgreSQL beside
the targets (issue "Remote transactions at least as fast as PostgreSQL": >= 1.0x at 4 and
16 processes, >= 0.8x at 1), failed attempts, and CPU per transaction on each side (server:
the node process, or the postmaster with its backends; clients: the client processes).

``--service`` adds clients of the node's Transactions service (``percolator.v1.Transactions``),
interleaved with the others: the same transfers (Begin reading both accounts, then Commit
the two writes; retried on ABORTED), by the small Python client of the service in
tests/percolator/txn_service_client.py, as a service in another language would call it,
over each transport asked for: TXN frames of the native transport ("native"), one gRPC
Stream per client ("stream"), or unary gRPC calls ("unary"); default native and stream.
Each one's transfers/s is printed as a ratio to the Python client's (its first
transport; target: within 1.2x, i.e. >= 0.83x, issue 17).

The node runs in a session of its own (``setsid``), as under a service manager; so do
PostgreSQL's backends, each of which calls ``setsid``.  With the kernel's autogroup
scheduling (``/proc/sys/kernel/sched_autogroup_enabled``) a session is a scheduling
group: the clients' processes then share the CPU with each server's group, not with the
single thread of the node's event loop one-to-one.  ``--shared-session`` starts the node
in the bench's session instead, as every run before 2026-12-07 did.

``--secure`` runs the node as a production deployment does (docker-compose.yml): TLS and
tokens (``percolator dev-secrets``), every client with a ``write`` token and the CA, over
either transport (the native port is guarded as the gRPC port is, docs/security.md);
PostgreSQL then serves TLS too (the same certificate, ``sslmode=require``).
Set-up and options: bench/README.md.
"""

from __future__ import annotations

import argparse
import glob
import math
import multiprocessing as mp
import os
import pwd
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from percolator import Client, CommitConflict, Transaction
from percolator._node_client import Transport
from tests.percolator.txn_service_client import ServiceClient, ServiceTxn
from tests.procs import ServerProcess

ACCOUNTS = 1000
INITIAL = 1000
TOTAL = ACCOUNTS * INITIAL
COLUMN = b"balance"
PG_SYNC = {"always": "on", "none": "off"}
TICK = os.sysconf("SC_CLK_TCK")
SHAPES = {
    "transfer": "read two accounts, move 1..10 units (two writes) - the default",
    "read": "read two accounts (a read-only transaction)",
    "single": "read one account and write its balance back (a single-row transaction)",
}
METRICS_LINE = re.compile(r"metrics on (http://\S+)")  # the node's, when it serves them
OWN_SESSION = True  # the node in a session of its own (``--shared-session``: not)
WAIT = 180.0  # bound on every wait for a process (16 spawned clients start slowly on 2 cores)


# --- CPU accounting -------------------------------------------------------------------------

def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its descendants, with the children they have reaped.

    A backend that exits and is reaped moves its time into its parent's cutime/cstime,
    so the sum stays right across connections that end during a run.
    """
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # exited meanwhile
            stats[int(entry)] = text[text.rindex(")") + 2:].split()
    tree, frontier = set(), [root]
    while frontier:
        pid = frontier.pop()
        tree.add(pid)
        frontier += [p for p, f in stats.items() if int(f[1]) == pid and p not in tree]
    return sum(sum(int(x) for x in stats[p][11:15]) for p in tree if p in stats) / TICK


# --- servers --------------------------------------------------------------------------------

@dataclass
class Postgres:
    root: Path
    port: int
    bindir: Path
    user: str | None  # run the server as this user (we are root), else as ourselves
    tls: bool = False  # clients require TLS (the server has a certificate)

    @property
    def pid(self) -> int:
        return int((self.root / "data" / "postmaster.pid").read_text().split()[0])

    def conninfo(self, sync: str = "always", dbname: str = "bench") -> dict[str, Any]:
        conninfo: dict[str, Any] = {
            "host": "127.0.0.1", "port": self.port, "user": "postgres", "dbname": dbname,
            "options": f"-c synchronous_commit={PG_SYNC[sync]}"}
        if self.tls:
            conninfo["sslmode"] = "require"
        return conninfo

    def ctl(self, *args: str) -> None:
        subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), *args],
                       check=True, capture_output=True, user=self.user, timeout=WAIT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_postgres(secrets: Path | None = None) -> Postgres | None:
    """initdb into a temporary directory and start it on a free port; None (and why) if not.
    ``secrets``: serve TLS with the node's certificate there (``--secure``)."""
    try:
        import psycopg
    except ImportError:
        print("PostgreSQL skipped: psycopg missing (pip install -e '.[bench]')")
        return None
    initdb = max(glob.glob("/usr/lib/postgresql/*/bin/initdb"), default=None)
    initdb = initdb or shutil.which("initdb")
    if initdb is None:
        print("PostgreSQL skipped: not installed (apt-get install -y postgresql)")
        return None
    bindir = Path(initdb).resolve().parent
    user = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
    try:
        pwd.getpwnam(user or "root")
    except KeyError:
        print("PostgreSQL skipped: running as root and no 'postgres' user to run it as"
              " (useradd --system postgres)")
        return None
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if user:
        shutil.chown(root, user)
    pg = Postgres(root, free_port(), bindir, user, tls=secrets is not None)
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres",
                        "--auth=trust", "--no-sync"], check=True, capture_output=True,
                       user=user, timeout=WAIT)
        tls = ""
        if secrets is not None:  # PostgreSQL wants its key private to the server's user
            for name in ("node.pem", "node.key"):
                shutil.copy(secrets / name, root / name)
                os.chmod(root / name, 0o600)
                if user:
                    shutil.chown(root / name, user)
            tls = (f" -c ssl=on -c ssl_cert_file={root / 'node.pem'}"
                   f" -c ssl_key_file={root / 'node.key'}")
        pg.ctl("-l", str(root / "log"), "-w", "-t", "60", "-o",
               f"-p {pg.port} -k {root} -c listen_addresses=127.0.0.1{tls}", "start")
        with psycopg.connect(**pg.conninfo(dbname="postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
            version = conn.execute("SHOW server_version").fetchone()
    except (OSError, subprocess.SubprocessError, psycopg.Error) as exc:
        log = root / "log"
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        print(f"PostgreSQL skipped: could not start ({exc})\n{detail}")
        stop_postgres(pg)
        return None
    print(f"PostgreSQL {version[0] if version else '?'} at 127.0.0.1:{pg.port} ({root})")
    return pg


def stop_postgres(pg: Postgres) -> None:
    try:
        if (pg.root / "data" / "postmaster.pid").exists():
            pg.ctl("-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(pg.root, ignore_errors=True)


# --- load and check -------------------------------------------------------------------------

def row(prefix: str, i: int) -> bytes:
    return f"{prefix}/acct{i:04d}".encode()


class Credentials(TypedDict, total=False):
    """Client.connect's token and tls_ca (``--secure``), or empty."""

    token: str
    tls_ca: str


def load_ours(address: str, prefix: str, credentials: Credentials) -> None:
    with Client.connect(address, **credentials) as client, client.transaction() as txn:
        for i in range(ACCOUNTS):
            txn.set(row(prefix, i), COLUMN, b"%d" % INITIAL)


def total_ours(address: str, prefix: str, credentials: Credentials) -> int:
    cells = [(row(prefix, i), COLUMN) for i in range(ACCOUNTS)]
    with Client.connect(address, **credentials) as client:
        values = client.run(lambda txn: txn.get_many(cells))
    return sum(int(v or 0) for v in values.values())


def load_postgres(pg: Postgres) -> None:
    import psycopg
    with psycopg.connect(**pg.conninfo(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS accounts")
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        conn.execute("INSERT INTO accounts SELECT g, %s FROM generate_series(0, %s) g",
                     (INITIAL, ACCOUNTS - 1))
        conn.execute("VACUUM ANALYZE accounts")
        conn.execute("CHECKPOINT")


def total_postgres(pg: Postgres) -> int:
    import psycopg
    with psycopg.connect(**pg.conninfo()) as conn:
        got = conn.execute("SELECT sum(balance), count(*) FROM accounts").fetchone()
    assert got is not None and got[1] == ACCOUNTS
    return int(got[0])


# --- client processes -----------------------------------------------------------------------

def pick(rng: random.Random) -> tuple[int, int, int]:
    a, b = rng.sample(range(ACCOUNTS), 2)
    return a, b, rng.randint(1, 10)


def ours_loop(target: tuple[str, Transport, str, Credentials], prefix: str,
              rng: random.Random, ready: Callable[[], float]) -> tuple[int, int]:
    """The shape's transactions with the public API only, over the given transport;
    returns (committed, failed attempts)."""
    attempts = 0
    address, transport, shape, credentials = target
    with Client.connect(address, transport=transport, **credentials) as client:
        def transfer(txn: Transaction, a: int, b: int, amount: int) -> None:
            nonlocal attempts
            attempts += 1
            ka, kb = row(prefix, a), row(prefix, b)
            if shape == "single":  # one row read and written back
                txn.set(ka, COLUMN, b"%d" % int(txn.get(ka, COLUMN) or 0))
                return
            got = txn.get_many([(ka, COLUMN), (kb, COLUMN)])
            va, vb = int(got[(ka, COLUMN)] or 0), int(got[(kb, COLUMN)] or 0)
            if va >= amount and shape == "transfer":
                txn.set(ka, COLUMN, b"%d" % (va - amount))
                txn.set(kb, COLUMN, b"%d" % (vb + amount))

        client.run(lambda txn: txn.get(row(prefix, 0), COLUMN))  # connected and warm
        committed, deadline = 0, ready()
        while time.perf_counter() < deadline:
            a, b, amount = pick(rng)
            try:
                client.run(lambda txn: transfer(txn, a, b, amount))
                committed += 1
            except CommitConflict:
                pass  # gave up after client.run's attempts: counted among failed attempts
    return committed, attempts - committed


def service_loop(target: tuple[str, str], prefix: str, rng: random.Random,
                 ready: Callable[[], float]) -> tuple[int, int]:
    """Transfers through the Transactions service: Begin reads both accounts, Commit writes
    them (the node runs the protocol), in native TXN frames, on one gRPC Stream or by
    unary calls; returns (committed, failed attempts)."""
    attempts = 0
    address, via = target
    with ServiceClient(address, stream=via == "stream", native=via == "native") as client:
        client.begin([(row(prefix, 0), COLUMN)]).rollback()  # connected and warm
        committed, deadline = 0, ready()
        while time.perf_counter() < deadline:
            a, b, amount = pick(rng)
            ka, kb = row(prefix, a), row(prefix, b)

            def transfer(txn: ServiceTxn) -> None:
                nonlocal attempts
                attempts += 1
                va, vb = int(txn.values[(ka, COLUMN)] or 0), int(txn.values[(kb, COLUMN)] or 0)
                if va >= amount:
                    txn.set(ka, COLUMN, b"%d" % (va - amount))
                    txn.set(kb, COLUMN, b"%d" % (vb + amount))

            client.run(transfer, reads=[(ka, COLUMN), (kb, COLUMN)], max_attempts=1000)
            committed += 1
    return committed, attempts - committed


def postgres_loop(target: tuple[dict[str, Any], str], prefix: str, rng: random.Random,
                  ready: Callable[[], float]) -> tuple[int, int]:
    """The same transactions over psycopg at REPEATABLE READ; updates in id order (no
    deadlocks)."""
    import psycopg
    from psycopg.errors import DeadlockDetected, SerializationFailure
    retries = 0
    conninfo, shape = target
    with psycopg.connect(**conninfo) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.execute("SELECT 1")
        conn.commit()
        select = "SELECT balance FROM accounts WHERE id = %s"
        update = "UPDATE accounts SET balance = %s WHERE id = %s"
        committed, deadline = 0, ready()
        while time.perf_counter() < deadline:
            a, b, amount = pick(rng)
            while True:
                try:
                    va = conn.execute(select, (a,)).fetchone()[0]  # type: ignore[index]
                    if shape == "single":
                        conn.execute(update, (va, a))
                        conn.commit()
                        committed += 1
                        break
                    vb = conn.execute(select, (b,)).fetchone()[0]  # type: ignore[index]
                    if va >= amount and shape == "transfer":
                        for key, value in sorted([(a, va - amount), (b, vb + amount)]):
                            conn.execute(update, (value, key))
                    conn.commit()
                    committed += 1
                    break
                except (SerializationFailure, DeadlockDetected):
                    conn.rollback()
                    retries += 1
    return committed, retries


LOOPS: dict[str, Callable[..., tuple[int, int]]] = {
    "ours": ours_loop, "service": service_loop, "pg": postgres_loop}


def client_process(kind: str, target: Any, prefix: str, seed: int, seconds: float,
                   ready: Any, start: Any, results: Any, release: Any) -> None:
    """One client: connect, report ready, run ``seconds`` after the start signal, report."""
    began = [0.0, 0.0]

    def wait_start() -> float:
        ready.put(seed)
        if not start.wait(WAIT):
            raise TimeoutError("no start signal")
        began[:] = [time.perf_counter(), time.process_time()]
        return began[0] + seconds

    try:
        committed, failed = LOOPS[kind](target, prefix, random.Random(seed), wait_start)
        results.put((committed, failed, time.perf_counter() - began[0],
                     time.process_time() - began[1]))
    except BaseException as exc:  # reported to the parent, which fails loudly
        results.put(f"{kind} client {seed}: {exc!r}")
        ready.put(seed)
    release.wait(WAIT)


# --- measure --------------------------------------------------------------------------------

@dataclass
class Run:
    tps: float
    failed_share: float  # failed attempts / all attempts
    server_ms: float  # server CPU per committed transaction, ms
    client_ms: float  # client processes' CPU per committed transaction, ms
    fsyncs: float = float("nan")  # the node's passes over its log per committed transaction


def measure(kind: str, target: Any, server_pid: int | None, processes: int, seconds: float,
            prefix: str, seed: int, passes: Callable[[], float] | None = None) -> Run:
    """``passes``: the node's fsync passes so far (its metrics), for ``Run.fsyncs``."""
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    start, release = ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=client_process, args=(
        kind, target, prefix, seed + i, seconds, ready, start, results, release))
        for i in range(processes)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=WAIT)
        passes0 = passes() if passes else float("nan")  # (its scrape outside the CPU)
        cpu0 = tree_cpu(server_pid) if server_pid else 0.0
        start.set()
        got = [results.get(timeout=seconds + WAIT) for _ in procs]
        cpu1 = tree_cpu(server_pid) if server_pid else 0.0
        passes1 = passes() if passes else float("nan")
    finally:
        start.set()
        release.set()
        for p in procs:
            p.join(WAIT)
    errors = [g for g in got if isinstance(g, str)]
    if errors:
        raise RuntimeError("\n".join(errors))
    committed = sum(g[0] for g in got)
    failed = sum(g[1] for g in got)
    if not committed:
        raise RuntimeError(f"{kind}: no transaction committed")
    return Run(tps=sum(g[0] / g[2] for g in got), failed_share=failed / (committed + failed),
               server_ms=1000 * (cpu1 - cpu0) / committed if server_pid else float("nan"),
               client_ms=1000 * sum(g[3] for g in got) / committed,
               fsyncs=(passes1 - passes0) / committed)


def log_syncs(url: str) -> Callable[[], float]:
    """The node's ``percolator_store_log_syncs_total``, read from its metrics at ``url``."""
    def read() -> float:
        with urllib.request.urlopen(url, timeout=WAIT) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith("percolator_store_log_syncs_total "):
                    return float(line.split()[1])
        return float("nan")  # not a node that defers its fsyncs (--sync none)

    return read


def run_ours(sync: str, processes: int, seconds: float, seed: int, tmp: Path,
             connect: str | None, node_pid: int | None, kind: str = "ours",
             transport: str = "native", shape: str = "transfer",
             secrets: Path | None = None) -> Run:
    """One run on a fresh node (or the running one, on rows of its own); checks the total.
    ``kind``: the Python client ("ours", its batches over ``transport``) or the
    Transactions service ("service", over ``transport``: native, stream or unary).
    ``secrets``: the node with TLS and tokens, the clients with a write token and the CA."""
    prefix = f"bank{seed}{kind}{transport}"
    credentials: Credentials = {} if secrets is None else {
        "token": (secrets / "write.token").read_text().strip(),
        "tls_ca": str(secrets / "ca.pem")}
    node_args = () if secrets is None else (
        "--tls-cert", str(secrets / "node.pem"), "--tls-key", str(secrets / "node.key"),
        "--auth-tokens", str(secrets / "tokens"))

    def target(address: str) -> Any:
        return ((address, transport) if kind == "service"
                else (address, transport, shape, credentials))

    if connect:
        load_ours(connect, prefix, credentials)
        run = measure(kind, target(connect), node_pid, processes, seconds, prefix, seed)
        check(kind, total_ours(connect, prefix, credentials))
        return run
    data = Path(tempfile.mkdtemp(prefix="node-", dir=tmp))
    try:
        metrics = ("--metrics-listen", "127.0.0.1:0") if secrets is None else ()
        with ServerProcess(data, "--sync", sync, *node_args, *metrics,
                           session=OWN_SESSION) as node:
            assert node.proc is not None
            urls = [m.group(1) for m in map(METRICS_LINE.search, node.output) if m]
            load_ours(node.address, prefix, credentials)
            run = measure(kind, target(node.address), node.proc.pid, processes, seconds,
                          prefix, seed, log_syncs(urls[0]) if urls else None)
            check(kind, total_ours(node.address, prefix, credentials))
        return run
    finally:
        shutil.rmtree(data, ignore_errors=True)


def run_postgres(pg: Postgres, sync: str, processes: int, seconds: float, seed: int,
                 shape: str = "transfer") -> Run:
    load_postgres(pg)
    run = measure("pg", (pg.conninfo(sync), shape), pg.pid, processes, seconds, "", seed)
    check("PostgreSQL", total_postgres(pg))
    return run


def check(name: str, total: int) -> None:
    if total != TOTAL:
        raise SystemExit(f"FAILED: {name} total is {total:,}, expected {TOTAL:,}")


# --- report ---------------------------------------------------------------------------------

def spread(values: list[float], fmt: str = ",.0f") -> str:
    return (f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})")


def cpu(runs: list[Run]) -> tuple[float, float]:
    """Median (server, client) CPU ms per transaction."""
    return (statistics.median(r.server_ms for r in runs),
            statistics.median(r.client_ms for r in runs))


def cpu_line(name: str, runs: list[Run]) -> str:
    server, client = cpu(runs)
    failed = statistics.median(r.failed_share for r in runs)
    fsyncs = statistics.median(r.fsyncs for r in runs)
    return (f"      {name:12s} CPU ms/txn: server {server:5.2f} + clients {client:5.2f}"
            f" = {server + client:5.2f}   failed attempts {failed:5.1%}"
            + ("" if math.isnan(fsyncs) else f"   node fsyncs/txn {fsyncs:4.2f}"))


Results = dict[int, tuple[dict[str, list[Run]], dict[str, list[Run]], list[Run]]]
"""Per process count: ours per transport, the service per transport, PostgreSQL."""


def report(label: str, results: Results) -> None:
    print(f"\n== {label} ==")
    print(f"  {'procs':>5}  {'transport':>9}  {'ours txns/s':>20}  {'PostgreSQL':>20}  "
          f"{'ours/PG (paired range)':>24}  target")
    for processes, (by_transport, service, pg) in results.items():
        ours = next(iter(by_transport.values()))
        for transport, runs in by_transport.items():
            line = f"  {processes:5d}  {transport:>9}  {spread([r.tps for r in runs]):>20}  "
            if pg:
                ratios = [o.tps / p.tps for o, p in zip(runs, pg, strict=True)]
                ratio = statistics.median(r.tps for r in runs) / statistics.median(
                    r.tps for r in pg)
                goal = 0.8 if processes == 1 else 1.0
                line += (f"{spread([r.tps for r in pg]):>20}  {ratio:9.2f}x ({min(ratios):.2f}-"
                         f"{max(ratios):.2f}x)     >= {goal:.1f}x "
                         f"{'met' if ratio >= goal else 'MISSED'}")
            print(line)
        first = next(iter(by_transport))
        for via, runs in service.items():
            ratios = [v.tps / o.tps for v, o in zip(runs, ours, strict=True)]
            ratio = statistics.median(r.tps for r in runs) / statistics.median(
                r.tps for r in ours)
            goal = 1 / 1.2
            print(f"  service {via:>7} {spread([r.tps for r in runs]):>20}  service/ours"
                  f" {first} {ratio:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}x)  >= {goal:.2f}x"
                  f" (within 1.2x) {'met' if ratio >= goal else 'MISSED'}")
        for transport, runs in by_transport.items():
            print(cpu_line(f"ours {transport}", runs))
        for via, runs in service.items():
            print(cpu_line(f"service {via}", runs))
        if pg:
            print(cpu_line("PostgreSQL", pg))
            for transport, runs in by_transport.items():
                (o_srv, o_cli), (p_srv, p_cli) = cpu(runs), cpu(pg)
                print(f"      CPU per transaction, ours {transport}/PostgreSQL: "
                      f"{(o_srv + o_cli) / (p_srv + p_cli):.1f}x (server {o_srv / p_srv:.1f}x,"
                      f" clients {o_cli / p_cli:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per run (default 10)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sync", choices=["both", "always", "none"], default="both")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--shared-session", action="store_true",
                        help="start the node in this bench's session (default: its own,"
                             " as PostgreSQL's backends run in theirs)")
    parser.add_argument("--connect", metavar="HOST:PORT",
                        help="clients only, against this running node (no PostgreSQL)")
    parser.add_argument("--node-pid", type=int, help="with --connect: the node's pid, for CPU")
    parser.add_argument("--service", nargs="*", choices=["native", "stream", "unary"],
                        help="also run the transfers through the Transactions service, over"
                             " each transport given: native TXN frames, a gRPC Stream per"
                             " client, unary gRPC calls (none given: native and stream)")
    parser.add_argument("--shape", choices=list(SHAPES), default="transfer",
                        help="; ".join(f"{k}: {v}" for k, v in SHAPES.items()))
    parser.add_argument("--secure", action="store_true",
                        help="the node with TLS and tokens, clients with a write token and"
                             " the CA; PostgreSQL with TLS (sslmode=require)")
    parser.add_argument("--transport", nargs="+", choices=["native", "grpc"],
                        default=["native", "grpc"],
                        help="the Python client's transports to measure, each on a node of"
                             " its own (default: both; the service's ratio is to the first)")
    args = parser.parse_args()
    global OWN_SESSION
    OWN_SESSION = not args.shared_session
    if args.service == []:
        args.service = ["native", "stream"]
    if args.service and args.shape != "transfer":
        parser.error("--service measures transfers only")
    if args.service and args.secure:
        parser.error("--service measures a node without tokens (its client sends none)")
    syncs = ["always", "none"] if args.sync == "both" else [args.sync]
    if args.connect:
        syncs = ["connect"]
    print(f"{args.shape} transactions; {os.cpu_count()} cores, load average"
          f" {os.getloadavg()[0]:.2f}; "
          f"{args.seconds:g} s per run, {args.reps} reps, processes {args.processes}"
          + ("; secured: TLS and tokens" if args.secure else "")
          + ("" if args.connect else "; the node in a session of its own" if OWN_SESSION
             else "; the node in the bench's session"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-bank-"))
    secrets = None
    if args.secure:
        secrets = tmp / "secrets"
        subprocess.run([sys.executable, "-m", "percolator", "dev-secrets", "--dir",
                        str(secrets)], check=True, capture_output=True, timeout=WAIT)
    pg = None if args.skip_postgres or args.connect else start_postgres(secrets)
    seed = int(time.time()) % 100_000 * 100
    try:
        for sync in syncs:
            results: Results = {}
            for processes in args.processes:
                ours, service, theirs = results.setdefault(
                    processes, ({t: [] for t in args.transport},
                                {v: [] for v in args.service or ()}, []))
                for rep in range(args.reps):
                    seed += 100
                    for transport in args.transport:
                        ours[transport].append(run_ours(
                            sync, processes, args.seconds, seed, tmp, args.connect,
                            args.node_pid, transport=transport, shape=args.shape,
                            secrets=secrets))
                    for via in args.service or ():
                        service[via].append(run_ours(sync, processes, args.seconds, seed, tmp,
                                                     args.connect, args.node_pid, "service",
                                                     via))
                    if pg is not None:
                        theirs.append(run_postgres(pg, sync, processes, args.seconds, seed,
                                                   args.shape))
                    print(f"  [{sync} x{processes} rep {rep + 1}] ours "
                          + ", ".join(f"{t} {runs[-1].tps:,.0f}/s" for t, runs in ours.items())
                          + "".join(f", service {v} {runs[-1].tps:,.0f}/s"
                                    for v, runs in service.items())
                          + (f", PostgreSQL {theirs[-1].tps:,.0f}/s" if pg else "")
                          + f"  (load average {os.getloadavg()[0]:.1f})", flush=True)
            label = (f"ours at {args.connect}" if args.connect else
                     f"ours --sync {sync} vs PostgreSQL synchronous_commit={PG_SYNC[sync]}")
            label += f"; {args.shape}: {SHAPES[args.shape]}"
            if args.secure:
                label += "; secured (TLS and tokens; PostgreSQL with TLS)"
            report(label, results)
        print(f"\nload average after: {os.getloadavg()[0]:.2f}; totals conserved in every run")
    finally:
        if pg is not None:
            stop_postgres(pg)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark of what the server's guard costs per call: a unary ReadRows round trip.

Usage: python bench/bench_security.py [--seconds S] [--rounds N]

One client thread reads one small cell with ReadRows calls, against four servers in
subprocesses (as in production; client and server do not share a GIL):

* ``unguarded``: TabletService alone on a grpc.Server, as before the guard (reference);
* ``guard``: ``build_server`` without tokens (the wrapper, budgets, decoding);
* ``guard + tokens``: with a token file; the client sends a token (loopback, no TLS);
* ``guard + tokens + TLS``: the same over TLS.

Rounds alternate between the servers and each figure is the median round, printed as
microseconds per call beside the reference's and as a ratio to it: the round trip, and
the server's CPU time per call (from /proc; steadier than wall time on a shared machine).
Then the token check alone, timed in-process.  Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bigtable_lite import DEFAULT_LIMITS, LocalStore, Put, RemoteStore, RowMutation, RowRead
from bigtable_lite._service import TabletService
from bigtable_lite.auth import Role, TokenTable, bearer
from bigtable_lite.credentials import ServerTLS, connect_channel
from bigtable_lite.remote import channel_options
from bigtable_lite.server import ServerPolicy, build_server, server_options

MODES = ("unguarded", "guard", "guard + tokens", "guard + tokens + TLS")
TOKEN = "bench-token-0123456789abcdef"


def serve(mode: str, root: Path) -> None:
    """Run one server until stdin closes; print its port first."""
    store = LocalStore(root / "data")
    store.mutate_rows([RowMutation(b"t", b"r", (Put(b"c", 1, b"v" * 32),))])
    if mode == "unguarded":
        server = grpc.server(futures.ThreadPoolExecutor(32),
                             options=server_options(store.limits))
        TabletService(store).add_to_server(server)
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        tokens = TokenTable({TOKEN: Role.ADMIN}) if "tokens" in mode else None
        tls = ServerTLS(root / "node.pem", root / "node.key") if "TLS" in mode else None
        server, port = build_server(store, "127.0.0.1:0",
                                    policy=ServerPolicy(tokens=tokens, tls=tls))
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(None)
    store.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(store: RemoteStore, pid: int, seconds: float) -> tuple[float, float]:
    """(wall, server CPU) microseconds per ReadRows call over about ``seconds``."""
    reads = [RowRead(b"t", b"r")]
    n = 0
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    while True:
        for _ in range(50):
            store.read_rows(reads)
        n += 50
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return elapsed / n * 1e6, (cpu_seconds(pid) - cpu0) / n * 1e6


def check_cost() -> tuple[float, float]:
    """(us per admission check with 3 tokens, us per decoding of the metadata alone)."""
    table = TokenTable({TOKEN: Role.ADMIN, TOKEN[::-1]: Role.READ, TOKEN.upper(): Role.WRITE})
    metadata = (("user-agent", "grpc-python/1.75.1 grpc-c/50.0.0 (linux; chttp2)"),
                ("authorization", f"Bearer {TOKEN}"))
    n = 100_000
    t0 = time.perf_counter()
    for _ in range(n):
        table.authenticate(metadata)
    check = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for _ in range(n):
        bearer(metadata)
    return check, (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per round and server")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, Path(args.root))
        return
    from percolator.commands.dev_secrets import write_secrets

    print(f"python {sys.version.split()[0]}, grpcio {grpc.__version__}; unary ReadRows of"
          f" one 32-byte cell, 1 client thread, median of {args.rounds} rounds", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        secrets = Path(tmp) / "secrets"
        write_secrets(secrets, ["localhost", "127.0.0.1"])
        servers, stores = [], {}
        try:
            for mode in MODES:
                root = Path(tmp) / mode.replace(" ", "")
                root.mkdir()
                for name in ("node.pem", "node.key"):
                    (root / name).write_bytes((secrets / name).read_bytes())
                proc = subprocess.Popen([sys.executable, __file__, "--serve", mode, "--root",
                                         str(root)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
                servers.append(proc)
                assert proc.stdout is not None
                address = f"127.0.0.1:{proc.stdout.readline().strip()}"
                channel = connect_channel(
                    address, channel_options(DEFAULT_LIMITS),
                    token=TOKEN if "tokens" in mode else None,
                    tls_ca=secrets / "ca.pem" if "TLS" in mode else None)
                stores[mode] = (RemoteStore(channel, timeout=30.0), proc.pid)
                measure(*stores[mode], 0.2)  # connect and warm up
            wall: dict[str, list[float]] = {mode: [] for mode in MODES}
            cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
            for _ in range(args.rounds):
                for mode in MODES:
                    w, c = measure(*stores[mode], args.seconds)
                    wall[mode].append(w)
                    cpu[mode].append(c)
        finally:
            for proc in servers:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(timeout=30)
    for label, figures in (("round trip", wall), ("server CPU", cpu)):
        reference = statistics.median(figures[MODES[0]])
        print(f"{label} per call (reference: {MODES[0]} {reference:.1f} us)")
        for mode in MODES:
            us = statistics.median(figures[mode])
            print(f"  {mode:<22} {us:8.1f} us   ratio {us / reference:5.2f}"
                  f"   ({us - reference:+6.1f} us)", flush=True)
    check, decode = check_cost()
    print(f"the token check alone, in-process: {check:.2f} us per call (finding the token in"
          f" the metadata: {decode:.2f} us)")


if __name__ == "__main__":
    main()

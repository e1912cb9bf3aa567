"""Benchmark of the tablet store: raw plyvel, in-process LocalStore, and gRPC on loopback.

Usage: python bench/bench_store.py [--seconds S] [--compare-servers] [--sync-cost]

Prints rates (ops/s; rows/s for batches) and each as a ratio to raw plyvel, with the
targets from the issue next to the figures.  The gRPC server runs in a subprocess (as
in production), so client and server do not share a GIL.  Not a test: figures depend
on the machine; the default run takes well under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import plyvel

from bigtable_lite import LocalStore, NoVersionIn, Put, RemoteStore, RowMutation
from bigtable_lite.encoding import cell_key
from bigtable_lite.server import build_server

VALUE = b"v" * 32
BATCH = 100
TARGET_CAM_RATIO = 0.25      # in-process check-and-mutate vs raw plyvel put
TARGET_GRPC_BATCHED = 50_000  # rows/s over gRPC, one client process


ROUNDS = 3


def measure(op: Callable[[int], object], seconds: float, block: int = 100) -> float:
    """Run op(0), op(1), ... for about ``seconds``; return calls per second.

    The time is split into ROUNDS rounds and the best round counts, so a burst of
    unrelated load on a shared machine does not decide the figure.
    """
    op(0)  # warm up
    done = 1
    best = 0.0
    for _ in range(ROUNDS):
        start = time.perf_counter()
        deadline = start + seconds / ROUNDS
        count = 0
        while True:
            for i in range(done, done + block):
                op(i)
            done += block
            count += block
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def measure_threads(op: Callable[[int, int], object], threads: int, seconds: float) -> float:
    """Like measure, with ``threads`` threads each calling op(thread, i); total calls/s."""
    counts = [0] * threads
    stop = threading.Event()

    def run(t: int) -> None:
        i = 0
        while not stop.is_set():
            op(t, i)
            i += 1
        counts[t] = i

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    stop.wait(seconds)
    stop.set()
    for w in workers:
        w.join(timeout=60)
    return sum(counts) / (time.perf_counter() - start)


class Report:
    def __init__(self) -> None:
        self.raw_put = 0.0
        self.raw_get = 0.0

    def line(self, name: str, rate: float, unit: str = "ops/s", base: float = 0.0,
             target: str = "") -> None:
        ratio = f"{rate / base:6.1%} of raw" if base else " " * 13
        print(f"  {name:<44} {rate:>10,.0f} {unit:<7} {ratio}  {target}", flush=True)


def bench_raw(root: Path, seconds: float, report: Report) -> None:
    print("raw plyvel (same key layout, no store logic)")
    db = plyvel.DB(str(root / "raw"), create_if_missing=True, write_buffer_size=16 << 20)
    keys = [cell_key(b"bench", b"row%08d" % i, b"col", 7) for i in range(200_000)]
    n = len(keys)
    report.raw_put = measure(lambda i: db.put(keys[i % n], VALUE), seconds)
    report.raw_get = measure(lambda i: db.get(keys[i % n]), seconds)
    report.line("put", report.raw_put)
    report.line("get", report.raw_get)
    db.close()


def bench_store(store: LocalStore | RemoteStore, label: str, seconds: float, report: Report,
                threads: int) -> float:
    print(label)
    counter = iter(range(1 << 62))

    def put(i: int) -> None:
        store.put(b"bench", b"p%08d" % i, b"col", 7, VALUE)

    def get(i: int) -> None:
        store.get(b"bench", b"p%08d" % (i % 1000), b"col")

    def cam(i: int) -> None:
        # The transaction layer's shape: write iff no newer version of the column exists.
        row = b"c%08d" % next(counter)
        result = store.check_and_mutate(b"bench", row, [NoVersionIn(b"lock", 0)],
                                        [Put(b"lock", 7, VALUE)])
        assert result.applied

    def batch(i: int) -> None:
        base = next(counter) * BATCH
        store.mutate_rows([RowMutation(b"bench", b"b%010d" % (base + k), (Put(b"col", 7, VALUE),))
                           for k in range(BATCH)])

    report.line("put (single row)", measure(put, seconds), base=report.raw_put)
    report.line("get (single cell, newest version)", measure(get, seconds), base=report.raw_get)
    cam_rate = measure(cam, seconds)
    target = ""
    if isinstance(store, LocalStore):
        ok = cam_rate >= TARGET_CAM_RATIO * report.raw_put
        target = f"target >= {TARGET_CAM_RATIO:.0%} of raw put: {'met' if ok else 'MISSED'}"
    report.line("check-and-mutate (single row)", cam_rate, base=report.raw_put, target=target)
    batched = measure(batch, seconds, block=5) * BATCH
    target = ""
    if isinstance(store, RemoteStore):
        ok = batched >= TARGET_GRPC_BATCHED
        target = f"target >= {TARGET_GRPC_BATCHED:,} rows/s: {'met' if ok else 'MISSED'}"
    report.line(f"batched mutate ({BATCH} rows/call)", batched, "rows/s", report.raw_put, target)
    if threads > 1:
        def batch_t(t: int, i: int) -> None:
            batch(i)

        rate = measure_threads(batch_t, threads, seconds) * BATCH
        target = ""
        if isinstance(store, RemoteStore):
            ok = rate >= TARGET_GRPC_BATCHED
            target = f"target >= {TARGET_GRPC_BATCHED:,} rows/s: {'met' if ok else 'MISSED'}"
        report.line(f"batched mutate, {threads} client threads", rate, "rows/s", report.raw_put,
                    target)
    return batched


# --- the server subprocess ------------------------------------------------------------


def serve(data_dir: str) -> None:
    """Child process: serve a LocalStore until stdin closes."""
    store = LocalStore(data_dir)
    server, port = build_server(store, "127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(1).wait(10)
    store.close()


def start_child(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"server child failed to start: {line!r}")
    return proc, int(line)


def stop_child(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)


# --- optional: sync vs aio server, per call ---------------------------------------------

ECHO = "bench.Echo"


def serve_echo(kind: str) -> None:
    handler: Callable[..., object]
    if kind == "sync":
        def handler(req: bytes, ctx: object) -> bytes:
            return req

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32),
                             options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            ECHO, {"Call": grpc.unary_unary_rpc_method_handler(handler)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(port, flush=True)
        sys.stdin.read()
        return

    async def ahandler(req: bytes, ctx: object) -> bytes:
        return req

    async def main() -> None:
        aserver = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        aserver.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            ECHO, {"Call": grpc.unary_unary_rpc_method_handler(ahandler)}),))
        port = aserver.add_insecure_port("127.0.0.1:0")
        await aserver.start()
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


def compare_servers(seconds: float) -> None:
    print("sync (thread pool) vs grpc.aio server: empty unary calls from a sync client")
    for kind in ("sync", "aio"):
        proc, port = start_child("--serve-echo", kind)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary(f"/{ECHO}/Call")

                def echo(*_: int) -> None:
                    call(b"x")  # noqa: B023 - used within this iteration only

                one = measure(echo, seconds)
                four = measure_threads(echo, 4, seconds)
        finally:
            stop_child(proc)
        print(f"  {kind:<5} 1 thread {one:>8,.0f} calls/s   4 threads {four:>8,.0f} calls/s")


# --- optional: cost of sync="always" ------------------------------------------------------


def sync_cost(root: Path, seconds: float) -> None:
    print('sync modes, in-process put (sync="always" fsyncs before acknowledging)')
    for mode in ("none", "always"):
        with LocalStore(root / f"sync-{mode}", sync=mode) as store:
            one = measure(lambda i: store.put(b"t", b"r%08d" % i, b"c", 1, VALUE), seconds, 10)
            eight = measure_threads(
                lambda t, i: store.put(b"t", b"r%02d%08d" % (t, i), b"c", 1, VALUE), 8, seconds)
        print(f"  {mode:<7} 1 thread {one:>9,.0f} puts/s   8 threads {eight:>9,.0f} puts/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="per measurement")
    parser.add_argument("--threads", type=int, default=4, help="client threads for the "
                        "concurrent batched figure (1 = skip)")
    parser.add_argument("--compare-servers", action="store_true")
    parser.add_argument("--sync-cost", action="store_true")
    parser.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--serve-echo", choices=("sync", "aio"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.serve_echo:
        return serve_echo(args.serve_echo)

    print(f"python {sys.version.split()[0]}, grpcio {grpc.__version__}, plyvel "
          f"{plyvel.__version__}, {os.cpu_count()} cpus, {args.seconds}s per figure")
    report = Report()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        root = Path(tmp)
        bench_raw(root, args.seconds, report)
        with LocalStore(root / "local") as local:
            bench_store(local, "in-process LocalStore", args.seconds, report, 1)
        proc, port = start_child("--serve", str(root / "served"))
        try:
            with RemoteStore(f"127.0.0.1:{port}") as remote:
                bench_store(remote, "gRPC RemoteStore on loopback (server in a subprocess)",
                            args.seconds, report, args.threads)
        finally:
            stop_child(proc)
        if args.sync_cost:
            sync_cost(root, args.seconds)
    if args.compare_servers:
        compare_servers(args.seconds)


if __name__ == "__main__":
    main()

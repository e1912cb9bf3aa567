"""Benchmark of the tablet store: raw plyvel, in-process LocalStore, and gRPC on loopback.

Usage: python bench/bench_store.py [--seconds S] [--compare-servers] [--sync-cost]
                                   [--log-fsync-cost] [--checksum-cost] [--skip-remote]

Prints rates (ops/s; rows/s for batches) and each as a ratio to raw plyvel, with the
targets from the issue next to the figures.  The gRPC server runs in a subprocess (as
in production), so client and server do not share a GIL.  Not a test: figures depend
on the machine; the default run takes well under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
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

from bigtable_lite import LocalStore, NoVersionIn, Put, RemoteStore, RowMutation
from bigtable_lite._encoding import cell_key
from bigtable_lite._leveldb import plyvel
from bigtable_lite.server import build_server

VALUE = b"v" * 32
BATCH = 100
ROUNDS = 5
TARGET_CAM_RATIO = 0.25      # in-process check-and-mutate vs raw plyvel put
TARGET_GRPC_BATCHED = 50_000  # rows/s over gRPC, one client process

Op = Callable[[int], object]


def timed(op: Op, seconds: float, start: int, block: int) -> tuple[float, int]:
    """Call op(start), op(start + 1), ... for about ``seconds``; (calls/s, next index)."""
    i = start
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for k in range(i, i + block):
            op(k)
        i += block
        now = time.perf_counter()
        if now >= deadline:
            return (i - start) / (now - t0), i


def timed_threads(op: Callable[[int, int], object], threads: int, seconds: float) -> float:
    """``threads`` threads each calling op(thread, i) for about ``seconds``; total calls/s."""
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


def paired(op: Callable[[float], float], base: Callable[[float], float], seconds: float
           ) -> tuple[float, float]:
    """(rate, ratio to base): medians over ROUNDS rounds, each timing base then op.

    Interleaving op with its baseline makes the ratio robust to load from other
    processes on a shared machine: a busy spell slows both halves of a round.
    """
    rates, ratios = [], []
    for _ in range(ROUNDS):
        b = base(seconds / ROUNDS)
        r = op(seconds / ROUNDS)
        rates.append(r)
        ratios.append(r / b)
    return statistics.median(rates), statistics.median(ratios)


class Raw:
    """Raw plyvel with the store's key layout and no store logic: the baseline."""

    def __init__(self, path: Path) -> None:
        self.db = plyvel.DB(str(path), create_if_missing=True, write_buffer_size=16 << 20)
        self.keys = [cell_key(b"bench", b"row%08d" % i, b"col", 7) for i in range(200_000)]
        self._next = 0
        for k in self.keys[:1000]:
            self.db.put(k, VALUE)

    def put_rate(self, seconds: float) -> float:
        db, keys, n = self.db, self.keys, len(self.keys)
        rate, self._next = timed(lambda i: db.put(keys[i % n], VALUE), seconds, self._next, 100)
        return rate

    def get_rate(self, seconds: float) -> float:
        db, keys = self.db, self.keys
        return timed(lambda i: db.get(keys[i % 1000]), seconds, 0, 100)[0]


def line(name: str, rate: float, unit: str = "ops/s", ratio: float | None = None,
         base: str = "", target: str = "") -> None:
    shown = f"{ratio:6.1%} of raw {base}" if ratio is not None else ""
    print(f"  {name:<42} {rate:>10,.0f} {unit:<7} {shown:<20} {target}", flush=True)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def bench_raw(raw: Raw, seconds: float) -> None:
    print("raw plyvel (same key layout, no store logic)")
    line("put", statistics.median(raw.put_rate(seconds / ROUNDS) for _ in range(ROUNDS)))
    line("get", statistics.median(raw.get_rate(seconds / ROUNDS) for _ in range(ROUNDS)))


def bench_store(store: LocalStore | RemoteStore, label: str, raw: Raw, seconds: float,
                threads: int) -> None:
    print(label)
    local = isinstance(store, LocalStore)
    counter = iter(range(1 << 62))
    state = {"i": 0}

    def rate_of(op: Op, block: int = 100) -> Callable[[float], float]:
        def run(secs: float) -> float:
            rate, state["i"] = timed(op, secs, state["i"], block)
            return rate
        op(0)  # warm up
        return run

    def put(i: int) -> None:
        store.put(b"bench", b"p%08d" % i, b"col", 7, VALUE)

    def get(i: int) -> None:
        store.get(b"bench", b"p%08d" % (i % 1000), b"col")

    def cam(i: int) -> None:
        # The transaction layer's shape: write iff the column has no version yet.
        row = b"c%08d" % next(counter)
        result = store.check_and_mutate(b"bench", row, [NoVersionIn(b"lock", 0)],
                                        [Put(b"lock", 7, VALUE)])
        assert result.applied

    def batch(i: int) -> None:
        base = next(counter) * BATCH
        store.mutate_rows([RowMutation(b"bench", b"b%010d" % (base + k), (Put(b"col", 7, VALUE),))
                           for k in range(BATCH)])

    rate, ratio = paired(rate_of(put), raw.put_rate, seconds)
    line("put (single row)", rate, ratio=ratio, base="put")
    rate, ratio = paired(rate_of(get), raw.get_rate, seconds)
    line("get (single cell, newest version)", rate, ratio=ratio, base="get")
    rate, ratio = paired(rate_of(cam), raw.put_rate, seconds)
    target = (f"target >= {TARGET_CAM_RATIO:.0%} of raw put: {verdict(ratio >= TARGET_CAM_RATIO)}"
              if local else "")
    line("check-and-mutate (single row)", rate, ratio=ratio, base="put", target=target)
    rate, ratio = paired(rate_of(batch, block=2), raw.put_rate, seconds)
    target = ("" if local else f"target >= {TARGET_GRPC_BATCHED:,} rows/s:"
              f" {verdict(rate * BATCH >= TARGET_GRPC_BATCHED)}")
    line(f"batched mutate ({BATCH} rows/call)", rate * BATCH, "rows/s", ratio * BATCH, "put",
         target)
    if threads > 1:
        rate, ratio = paired(lambda secs: timed_threads(lambda t, i: batch(i), threads, secs),
                             raw.put_rate, seconds)
        target = ("" if local else f"target >= {TARGET_GRPC_BATCHED:,} rows/s:"
                  f" {verdict(rate * BATCH >= TARGET_GRPC_BATCHED)}")
        line(f"batched mutate, {threads} client threads", rate * BATCH, "rows/s", ratio * BATCH,
             "put", target)


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

                one = timed(echo, seconds, 0, 100)[0]
                four = timed_threads(echo, 4, seconds)
        finally:
            stop_child(proc)
        print(f"  {kind:<5} 1 thread {one:>8,.0f} calls/s   4 threads {four:>8,.0f} calls/s")


# --- optional: cost of sync="always" ------------------------------------------------------


def sync_cost(root: Path, seconds: float) -> None:
    print('sync modes, in-process put (sync="always" fsyncs before acknowledging)')
    for mode in ("none", "always"):
        with LocalStore(root / f"sync-{mode}", sync=mode) as store:
            one = timed(lambda i: store.put(b"t", b"r%08d" % i, b"c", 1, VALUE), seconds, 0, 10)[0]
            eight = timed_threads(
                lambda t, i: store.put(b"t", b"r%02d%08d" % (t, i), b"c", 1, VALUE), 8, seconds)
        print(f"  {mode:<7} 1 thread {one:>9,.0f} puts/s   8 threads {eight:>9,.0f} puts/s")


# --- optional: what one durable write waits for -------------------------------------------

LOG_ROUNDS = 10
LOG_WRITES = 50  # per kind and round


def log_fsync_cost(root: Path) -> None:
    """The latency of one synced write of ~100 bytes, three ways, interleaved in rounds.

    A synced LevelDB put (what ``sync="always"`` does: append to its log, fdatasync); a
    plain file appended with write(2) and fdatasync'ed (the same I/O without LevelDB);
    and a file preallocated with zeros and fsynced once, then overwritten in place and
    fdatasync'ed (what PostgreSQL does with its WAL segments).  An append changes the
    file's size, which fdatasync must commit to the file system's journal too; an
    overwrite of allocated blocks does not.
    """
    print("synced ~100-byte write, one writer: latency (median / mean), interleaved rounds")
    db = plyvel.DB(str(root / "log-cost"), create_if_missing=True)
    size = LOG_ROUNDS * LOG_WRITES * 128 + 4096
    appended = os.open(root / "appended", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    overwritten = os.open(root / "overwritten", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(overwritten, bytes(size))
    os.fsync(overwritten)
    os.lseek(overwritten, 0, os.SEEK_SET)
    record = b"x" * 100

    def leveldb(i: int) -> None:
        db.put(b"k%d" % i, record, sync=True)

    def append(_: int) -> None:
        os.write(appended, record)
        os.fdatasync(appended)

    def overwrite(_: int) -> None:
        os.write(overwritten, record)
        os.fdatasync(overwritten)

    kinds = {"LevelDB synced put (appends its log)": leveldb,
             "write(2) appending + fdatasync": append,
             "write(2) over preallocated zeros + fdatasync": overwrite}
    took: dict[str, list[float]] = {name: [] for name in kinds}
    n = 0
    for _ in range(LOG_ROUNDS):
        for name, write in kinds.items():
            for _ in range(LOG_WRITES):
                began = time.perf_counter()
                write(n)
                took[name].append(time.perf_counter() - began)
                n += 1
    for name, times in took.items():
        print(f"  {name:<46} {statistics.median(times) * 1e6:>7,.0f} us"
              f" / {statistics.mean(times) * 1e6:>7,.0f} us")
    os.close(appended)
    os.close(overwritten)
    db.close()


# --- optional: cost of verifying checksums on reads ----------------------------------------


CHECKSUM_KEYS = 200_000


def checksum_cost(root: Path, seconds: float) -> None:
    """Reads of data in table files, with and without LevelDB's block checksums verified.

    The store verifies on every read (docs/storage.md); LevelDB checks a block when it
    loads it from its file, not when the block cache or the memtable serves it.  So the
    worst case is timed here: data compacted into tables, a 1 MiB block cache, random
    lookups (almost every one loads a block) and a full scan, as raw plyvel calls.
    """
    print("checksums: raw plyvel on table files, 1 MiB block cache, verified vs not")
    path = root / "checksums"
    db = plyvel.DB(str(path), create_if_missing=True)
    keys = [cell_key(b"bench", b"row%08d" % i, b"col", 7) for i in range(CHECKSUM_KEYS)]
    with db.write_batch() as wb:
        for k in keys:
            wb.put(k, VALUE)
    db.compact_range()
    db.close()
    db = plyvel.DB(str(path), lru_cache_size=1 << 20)
    order = list(range(CHECKSUM_KEYS))
    random.Random(16).shuffle(order)
    shuffled = [keys[i] for i in order]

    def gets(verify: bool) -> Callable[[float], float]:
        def run(secs: float) -> float:
            get = db.get
            return timed(lambda i: get(shuffled[i % CHECKSUM_KEYS], verify_checksums=verify),
                         secs, 0, 100)[0]
        return run

    def scan(verify: bool) -> Callable[[float], float]:
        def run(secs: float) -> float:
            def one(_: int) -> None:
                it = db.raw_iterator(verify_checksums=verify)
                it.seek_to_first()
                while it.valid():
                    it.value()
                    it.next()
                it.close()
            return timed(one, secs, 0, 1)[0] * CHECKSUM_KEYS
        return run

    for name, make, unit in (("random get", gets, "ops/s"), ("full scan", scan, "keys/s")):
        rate, ratio = paired(make(True), make(False), seconds)
        print(f"  {name:<42} {rate:>10,.0f} {unit:<7} {ratio:6.1%} of unverified", flush=True)
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5,
                        help="per figure, split into rounds (default %(default)s)")
    parser.add_argument("--threads", type=int, default=4, help="client threads for the "
                        "concurrent batched figure (1 = skip)")
    parser.add_argument("--compare-servers", action="store_true")
    parser.add_argument("--sync-cost", action="store_true")
    parser.add_argument("--checksum-cost", action="store_true")
    parser.add_argument("--log-fsync-cost", action="store_true",
                        help="latency of a synced write: LevelDB's log, a file appended,"
                             " a preallocated file overwritten")
    parser.add_argument("--skip-remote", action="store_true", help="in-process figures only")
    parser.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--serve-echo", choices=("sync", "aio"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.serve_echo:
        return serve_echo(args.serve_echo)

    print(f"python {sys.version.split()[0]}, grpcio {grpc.__version__}, plyvel "
          f"{plyvel.__version__}, {os.cpu_count()} cpus, {args.seconds}s per figure")
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        root = Path(tmp)
        raw = Raw(root / "raw")
        bench_raw(raw, args.seconds)
        with LocalStore(root / "local") as local:
            bench_store(local, "in-process LocalStore", raw, args.seconds, 1)
        if not args.skip_remote:
            proc, port = start_child("--serve", str(root / "served"))
            try:
                with RemoteStore(f"127.0.0.1:{port}") as remote:
                    bench_store(remote, "gRPC RemoteStore on loopback (server in a subprocess)",
                                raw, args.seconds, args.threads)
            finally:
                stop_child(proc)
        if args.sync_cost:
            sync_cost(root, args.seconds)
        if args.log_fsync_cost:
            log_fsync_cost(root)
        if args.checksum_cost:
            checksum_cost(root, args.seconds)
    if args.compare_servers:
        compare_servers(args.seconds)


if __name__ == "__main__":
    main()

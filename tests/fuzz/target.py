"""The node under fuzz: a `percolator serve` subprocess (security off, the default), data
the fuzz must not harm, and the checks every step is followed by.

Before any fuzzed call the node gets:

* a **canary**: cells of table :data:`CANARY_TABLE` committed by two-phase transactions
  (several rows, a value overwritten, a cell deleted, a system column).  Fuzzed calls
  may name the canary table, its rows and its transactions' timestamps in every
  command that does not write (reads, scans, commit, rollback, resolve, heartbeat,
  status: none of them may change a committed value), but never in a write: raw
  ``MutateRows``/``mutate_rows`` (no roles yet: any client may write raw), a prewrite,
  a one-phase commit or a Transactions session (a new transaction, which may
  legitimately change any value).
* a **bank** (``bank.py``): accounts in ``BANK_TABLE`` with a fixed total, excluded
  from fuzzed writes as the canary is, whose transfers the state machine runs.
* a 1 MiB cell (:data:`BIG_ROW`), so that huge counts of reads of it ask for gigabytes.

After every step (:meth:`NodeUnderFuzz.check`): the node answers a health check,
commits and reads back a small transaction in the fuzzed table (a row the fuzz never
names), the canary reads the same (through a transaction and raw: its data and write
columns unchanged), and the node's resident memory is below :data:`RSS_BOUND`.  A
watchdog kills the node past :data:`RSS_KILL` so that a memory blow-up fails the test
instead of the machine.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from bigtable_lite import Cell, RowRead
from percolator import Client, layout
from percolator.oracle import ORACLE_TABLE
from tests.procs import ServerProcess

from .bank import BALANCE, BANK_TABLE, Bank

FUZZ_TABLE = b"fuzz"
CANARY_TABLE = b"fuzz-canary"
PROTECTED_TABLES = frozenset(
    name for table in (CANARY_TABLE, BANK_TABLE)
    for name in (table, layout.notify_table(table), layout.config_table(table))
) | {ORACLE_TABLE}
"""Tables no fuzzed write may name (see the module docstring)."""

BIG_ROW = b"big"
BIG_VALUE = b"B" * (1 << 20)
CANARY_ROWS = (b"canary", b"acct00", b"canary-2")
PROBE_PREFIX = b"\x7fprobe/"  # rows of the after-example transactions: never in a pool

RSS_BOUND = 1 << 30
"""Most resident memory the node may hold after any example (it starts at ~60 MB)."""
RSS_KILL = 3 << 30
"""The watchdog kills the node past this: a blow-up must not take the machine down."""
CALL_TIMEOUT = 60.0
MAX_MESSAGE = 128 << 20  # client side: let the node's own limit (64 MiB) decide


def channel_options() -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE)]


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid``, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssWatchdog:
    """Polls a process's RSS; kills it (SIGKILL) past ``limit`` and remembers the peak."""

    def __init__(self, server: ServerProcess, limit: int, period: float = 0.02) -> None:
        assert server.proc is not None
        self._server = server
        self._pid = server.proc.pid
        self.limit = limit
        self.peak = 0
        self.killed_at = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                rss = rss_bytes(self._pid)
            except (OSError, RuntimeError):
                return  # the process is gone
            self.peak = max(self.peak, rss)
            if rss > self.limit:
                self.killed_at = rss
                self._server.kill()
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class NodeUnderFuzz:
    """The node, its seeded data, and the checks (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._probes = itertools.count()
        self.canary_values: dict[tuple[bytes, bytes], bytes | None] = {}
        self.canary_raw: list[list[Cell]] = []
        self.known_ts: list[int] = []
        self.examples = 0
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self.server = ServerProcess(self.data_dir).start()
        assert self.server.proc is not None
        self.pid = self.server.proc.pid
        self.address = self.server.address
        self.watchdog = RssWatchdog(self.server, RSS_KILL)
        self.channel = grpc.insecure_channel(self.address, options=channel_options())
        self._health = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        self.probe = Client.connect(self.address, table=FUZZ_TABLE)
        self.canary = Client.connect(self.address, table=CANARY_TABLE, one_phase=False)
        self.bank = Bank(self.address, self.channel)

    def ensure_running(self) -> None:
        """Start the node again (same data) if an earlier test's example killed it, so
        that one finding does not fail every later test."""
        if not self.alive():
            return
        self.restarts += 1
        self._stop()
        self._start()

    # --- seeding --------------------------------------------------------------------------

    def seed(self) -> None:
        c = self.canary
        writes: list[dict[tuple[bytes, bytes], bytes | None]] = [
            {(CANARY_ROWS[0], BALANCE): b"1000000", (CANARY_ROWS[1], BALANCE): b"42",
             (CANARY_ROWS[2], b"c"): b"gone soon", (CANARY_ROWS[0], b"note"): b"x" * 300},
            {(CANARY_ROWS[1], BALANCE): b"43"},
            {(CANARY_ROWS[2], b"c"): None}]
        for cells in writes:
            txn = c.begin()
            for (row, column), value in cells.items():
                if value is None:
                    txn.delete(row, column)
                else:
                    txn.set(row, column, value)
            self.known_ts += [txn.start_ts, txn.commit()]
        with c.transaction() as txn:
            txn.set_system(CANARY_ROWS[0], b"\x00ack", b"system")
        self.canary_values = self._canary_now()
        assert self.canary_values[(CANARY_ROWS[1], BALANCE)] == b"43"
        assert self.canary_values[(CANARY_ROWS[2], b"c")] is None
        self.canary_raw = self._canary_raw()
        self.known_ts += self.bank.open()
        with self.probe.transaction() as txn:
            txn.set(BIG_ROW, b"c", BIG_VALUE)
            txn.set(b"small", b"c", b"v")

    def _canary_cells(self) -> list[tuple[bytes, bytes]]:
        return [(CANARY_ROWS[0], BALANCE), (CANARY_ROWS[1], BALANCE), (CANARY_ROWS[2], b"c"),
                (CANARY_ROWS[0], b"note")]

    def _canary_now(self) -> dict[tuple[bytes, bytes], bytes | None]:
        with self.canary.transaction() as txn:
            values = txn.get_many(self._canary_cells())
            values[(CANARY_ROWS[0], b"\x00ack")] = txn.get_system(CANARY_ROWS[0], b"\x00ack")
        return values

    def _canary_raw(self) -> list[list[Cell]]:
        """The canary rows' data and write columns, every version (what commits left)."""
        rows = self.canary.store.read_rows([RowRead(CANARY_TABLE, row) for row in CANARY_ROWS])
        return [[c for c in cells if c.column[:1] in (layout.DATA, layout.WRITE)]
                for cells in rows]

    # --- after every example --------------------------------------------------------------

    def alive(self) -> str:
        """'' if the node process runs, else why not."""
        if self.watchdog.killed_at:
            return f"killed by the watchdog at RSS {self.watchdog.killed_at >> 20} MiB"
        assert self.server.proc is not None
        code = self.server.proc.poll()
        return "" if code is None else f"exited with {code}"

    def check(self) -> None:
        """The node is up, serves a transaction, kept the canary, and its memory is bounded."""
        self.examples += 1
        gone = self.alive()
        assert not gone, f"node {gone}; its output:\n{self.output_tail()}"
        reply = self._health(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        row = PROBE_PREFIX + b"%06d" % next(self._probes)
        value = b"probe %d" % self.examples
        self.probe.run(lambda txn: txn.set(row, b"c", value))
        with self.probe.transaction() as txn:
            assert txn.get(row, b"c") == value
        assert self._canary_now() == self.canary_values, "a fuzzed call changed the canary"
        assert self._canary_raw() == self.canary_raw, "a fuzzed call rewrote the canary's data"
        rss = rss_bytes(self.pid)
        assert rss < RSS_BOUND, f"node RSS {rss >> 20} MiB after an example"

    def output_tail(self, lines: int = 60) -> str:
        return "".join(self.server.output[-lines:])

    def tracebacks(self) -> list[str]:
        """Lines of the node's log that start a traceback (logged only for INTERNAL)."""
        return [line for line in self.server.output if line.startswith("Traceback")]

    def _stop(self) -> None:
        for client in (self.probe, self.canary):
            client.close()
        self.bank.close()
        self.channel.close()
        self.watchdog.stop()
        try:
            self.server.terminate(timeout=30)
        except Exception:  # noqa: BLE001 - a node that does not stop is killed
            self.server.kill()

    def close(self) -> None:
        self._stop()

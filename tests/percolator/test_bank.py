"""The bank invariant: concurrent transfers never create or destroy money, in any snapshot.

N accounts start with a fixed total.  Worker threads (or processes) transfer random
amounts between random accounts with ``client.run`` while a reader checks that every
snapshot sums to the total, through a scan and through ``get_many`` (which must agree,
being one snapshot).  Each transfer also writes a log row in the same transaction, so
at the end every account must equal its opening balance plus the logged amounts
exactly, and the log must hold exactly the transfers whose ``run`` returned: a lost
update, a vanished or a phantom commit would all show.

Seeded (``PERCOLATOR_TEST_SEED`` replays the choices; thread timing is not
replayable); duration per test ``PERCOLATOR_BANK_SECONDS`` (default 4).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from percolator import Client, CommitConflict, Transaction
from percolator._node_client import Transport
from tests.procs import ServerProcess

from .txn_fixtures import (  # noqa: F401  (fixtures)
    ALL_KINDS,
    client_fixture,
    client_kind_fixture,
    draw_seed,
    server_fixture,
)

ACCOUNTS = 10
OPENING = 100
TOTAL = ACCOUNTS * OPENING
BALANCE = b"balance"
LOG = b"transfer"
ACCOUNT_ROWS = [b"acct%02d" % i for i in range(ACCOUNTS)]
ACCOUNT_RANGE = (b"acct", b"acct\xff")
LOG_RANGE = (b"log/", b"log0")
DURATION = float(os.environ.get("PERCOLATOR_BANK_SECONDS", "4"))
JOIN_TIMEOUT = DURATION + 60.0  # a worker stuck past this is a failure, not a hang
MAX_ATTEMPTS = 20


@dataclass
class Tally:
    committed: int = 0      # transfers whose run() returned
    conflicts: int = 0      # attempts that ended in CommitConflict (then retried)
    gave_up: int = 0        # transfers whose run() re-raised CommitConflict
    errors: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.committed += other.committed
        self.conflicts += other.conflicts
        self.gave_up += other.gave_up
        self.errors.extend(other.errors)


def open_accounts(client: Client) -> None:
    with client.transaction() as txn:
        for row in ACCOUNT_ROWS:
            txn.set(row, BALANCE, b"%d" % OPENING)


def transfer_fn(rng: random.Random, worker: int, n: int, tally: Tally
                ) -> Callable[[Transaction], None]:
    """Move a random part of one account's balance to another; log it in the same txn."""
    src, dst = rng.sample(ACCOUNT_ROWS, 2)

    def fn(txn: Transaction) -> None:
        tally.conflicts += 1  # taken back below when this attempt commits
        balances = txn.get_many([(src, BALANCE), (dst, BALANCE)])
        a, b = int(balances[(src, BALANCE)] or b"0"), int(balances[(dst, BALANCE)] or b"0")
        amount = rng.randint(0, min(a, OPENING // 2))
        txn.set(src, BALANCE, b"%d" % (a - amount))
        txn.set(dst, BALANCE, b"%d" % (b + amount))
        txn.set(b"log/%03d/%06d" % (worker, n), LOG, b"%s %s %d" % (src, dst, amount))

    return fn


def run_transfers(client: Client, seed: int, worker: int, deadline: float,
                  stop: threading.Event | None = None) -> Tally:
    """Transfer until ``deadline`` (time.monotonic) or ``stop``; never raises."""
    rng = random.Random(seed * 1000 + worker)
    tally = Tally()
    n = 0
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        try:
            client.run(transfer_fn(rng, worker, n, tally), max_attempts=MAX_ATTEMPTS)
        except CommitConflict:
            tally.gave_up += 1
        except Exception as exc:  # noqa: BLE001  (the test fails on any error reported)
            tally.errors.append(f"worker {worker}: {type(exc).__name__}: {exc}")
            break
        else:
            tally.committed += 1
            tally.conflicts -= 1
        n += 1
    return tally


def check_snapshot(client: Client) -> None:
    """One snapshot through a scan and through get_many: same balances, summing to TOTAL."""
    txn = client.begin()
    scanned = {row: int(value) for row, column, value in txn.scan(*ACCOUNT_RANGE, [BALANCE])}
    got = txn.get_many([(row, BALANCE) for row in ACCOUNT_ROWS])
    many = {row: int(got[(row, BALANCE)] or b"-1") for row in ACCOUNT_ROWS}
    txn.commit()
    assert scanned == many, f"scan and get_many disagree at {txn.start_ts}: {scanned} {many}"
    assert sorted(scanned) == ACCOUNT_ROWS, f"accounts missing at {txn.start_ts}: {scanned}"
    assert sum(scanned.values()) == TOTAL, \
        f"snapshot {txn.start_ts} sums to {sum(scanned.values())}, not {TOTAL}: {scanned}"
    assert min(scanned.values()) >= 0, f"negative balance at {txn.start_ts}: {scanned}"


class Reader(threading.Thread):
    """Checks snapshots until stopped; keeps the first failure."""

    def __init__(self, client: Client) -> None:
        super().__init__(name="bank-reader", daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.snapshots = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                check_snapshot(self.client)
                self.snapshots += 1
        except BaseException as exc:  # noqa: BLE001  (re-raised by the test)
            self.failure = exc


def check_final(client: Client, tally: Tally) -> None:
    """Balances = opening + logged transfers, exactly; one log row per returned run()."""
    check_snapshot(client)
    txn = client.begin()
    log = [value.split() for _, _, value in txn.scan(*LOG_RANGE, [LOG])]
    expected = Counter({row: OPENING for row in ACCOUNT_ROWS})
    for src, dst, amount in log:
        expected[src] -= int(amount)
        expected[dst] += int(amount)
    final = {row: int(value) for row, _, value in txn.scan(*ACCOUNT_RANGE, [BALANCE])}
    txn.commit()
    assert len(log) == tally.committed, \
        f"{len(log)} transfers logged, {tally.committed} reported committed"
    assert final == dict(expected), "balances do not match the logged transfers"


def report(label: str, seed: int, tally: Tally, reader: Reader, seconds: float) -> None:
    attempts = tally.committed + tally.conflicts
    print(f"{label}: seed {seed}: {tally.committed} transfers committed in {seconds:.1f}s,"
          f" {tally.conflicts} aborted attempts (of {attempts}), {tally.gave_up} gave up"
          f" after {MAX_ATTEMPTS} attempts, {reader.snapshots} snapshots checked")


def finish(reader: Reader, tally: Tally) -> None:
    reader.stop.set()
    reader.join(timeout=JOIN_TIMEOUT)
    assert not reader.is_alive(), "reader did not stop"
    if reader.failure is not None:
        raise reader.failure
    assert not tally.errors, tally.errors
    assert tally.committed > 0, "no transfer committed"
    assert reader.snapshots > 0, "no snapshot checked"


# --- threads -----------------------------------------------------------------------------------


THREADS = 4


def run_threads(client: Client, seed: int, seconds: float) -> tuple[Tally, Reader]:
    """THREADS transfer threads beside a snapshot reader for ``seconds``: their tallies
    added up and the reader finished (every snapshot checked, no error, something
    committed).  The final balances are the caller's to check."""
    reader = Reader(client)
    tallies = [Tally() for _ in range(THREADS)]
    stop = threading.Event()
    deadline = time.monotonic() + seconds

    def work(i: int) -> None:
        tallies[i] = run_transfers(client, seed, i, deadline, stop)

    workers = [threading.Thread(target=work, args=(i,), name=f"bank-{i}", daemon=True)
               for i in range(THREADS)]
    reader.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=max(0.0, deadline + JOIN_TIMEOUT - time.monotonic()))
    stop.set()
    assert not any(w.is_alive() for w in workers), "a transfer thread did not finish"
    tally = Tally()
    for t in tallies:
        tally.add(t)
    finish(reader, tally)
    return tally, reader


@pytest.mark.parametrize("client_kind", ALL_KINDS)  # one-phase commits, and two-phase
def test_bank_threads(client: Client, client_kind: str) -> None:
    seed = draw_seed(f"test_bank_threads[{client_kind}]")
    open_accounts(client)
    started = time.monotonic()
    tally, reader = run_threads(client, seed, DURATION)
    report(f"bank threads [{client_kind}]", seed, tally, reader, time.monotonic() - started)
    check_final(client, tally)


# --- processes ---------------------------------------------------------------------------------


PROCESSES = 3
THREADS_PER_PROCESS = 2


def process_main(address: str, table: bytes, seed: int, index: int, seconds: float,
                 one_phase: bool, transport: Transport = "auto") -> Tally:
    """One transfer process: its own remote client and threads; returns their tally."""
    tally = Tally()
    with Client.connect(address, table=table, one_phase=one_phase,
                        transport=transport) as client:
        deadline = time.monotonic() + seconds
        results: list[Tally] = [Tally() for _ in range(THREADS_PER_PROCESS)]

        def work(i: int) -> None:
            results[i] = run_transfers(client, seed, index * THREADS_PER_PROCESS + i, deadline)

        threads = [threading.Thread(target=work, args=(i,), daemon=True)
                   for i in range(THREADS_PER_PROCESS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, deadline + JOIN_TIMEOUT - time.monotonic()))
        if any(t.is_alive() for t in threads):
            tally.errors.append(f"process {index}: a transfer thread did not finish")
        for r in results:
            tally.add(r)
    return tally


@pytest.mark.parametrize("one_phase", [True, False], ids=["one-phase", "two-phase"])
def test_bank_processes(server: str, one_phase: bool) -> None:
    bank_processes(server, one_phase, f"test_bank_processes[{'one' if one_phase else 'two'}"
                   "-phase]", "remote")


def test_bank_processes_on_a_node_that_fsyncs(tmp_path: Path) -> None:
    """``--sync always``: the node's loop writes without its own fsync and answers after a
    shared one, and a gRPC reply after a pass over what it read (docs/storage.md,
    "Durability"); with processes committing and reading at once over both transports,
    no reply may come early or reveal a wrong state."""
    with ServerProcess(tmp_path / "data", "--sync", "always") as node:
        bank_processes(node.address, True, "test_bank_processes_on_a_node_that_fsyncs",
                       "remote, --sync always, one process by gRPC", grpc_processes=1)


def bank_processes(server: str, one_phase: bool, name: str, where: str, *,
                   grpc_processes: int = 0) -> None:
    """PROCESSES transfer processes (the first ``grpc_processes`` of them by gRPC, the
    others by the native transport) and a snapshot reader, for DURATION seconds."""
    seed = draw_seed(name)
    table = b"bank_processes_%d_%d" % (seed, one_phase)
    with Client.connect(server, table=table) as client:
        open_accounts(client)
        reader = Reader(client)
        started = time.monotonic()
        reader.start()
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(PROCESSES) as pool:
            pending = [pool.apply_async(process_main,
                                        (server, table, seed, i, DURATION, one_phase,
                                         "grpc" if i < grpc_processes else "auto"))
                       for i in range(PROCESSES)]
            tally = Tally()
            try:
                for p in pending:
                    tally.add(p.get(timeout=JOIN_TIMEOUT + 30.0))
            finally:
                reader.stop.set()
        finish(reader, tally)
        mode = "one-phase" if one_phase else "two-phase"
        report(f"bank processes [{where}, {mode}]", seed, tally, reader,
               time.monotonic() - started)
        check_final(client, tally)


def test_bank_invariant_checks_can_fail(client: Client) -> None:
    """The checks above are not vacuous: a transfer that loses money is caught."""
    open_accounts(client)
    with client.transaction() as txn:  # a transfer without its log row
        txn.set(ACCOUNT_ROWS[0], BALANCE, b"%d" % (OPENING - 1))
        txn.set(ACCOUNT_ROWS[1], BALANCE, b"%d" % (OPENING + 1))
    check_snapshot(client)
    with pytest.raises(AssertionError, match="do not match"):
        check_final(client, Tally())
    with client.transaction() as txn:  # money lost
        txn.set(ACCOUNT_ROWS[1], BALANCE, b"%d" % OPENING)
    with pytest.raises(AssertionError, match="sums to"):
        check_snapshot(client)

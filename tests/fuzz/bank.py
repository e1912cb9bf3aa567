"""The well-behaved client of the fuzz: a bank whose total no fuzzed call may change.

:data:`ACCOUNTS` accounts in :data:`BANK_TABLE`, opened with :data:`OPENING` each.  Its
transfers run three ways, interleaved with fuzzed calls by the state machine:

* **open transfers** (:class:`OpenTransfer`): a transaction begun and its balances read
  in one step, committed (or not) in a later one -- through the Python client (one-phase
  or two-phase commit) or through the Transactions service;
* **pending transfers** (:class:`Pending`): prewritten (some locks expired at once, some
  live) and left undecided; their timestamps and rows are in the fuzz's pools, so fuzzed
  commits, rollbacks, resolves, heartbeats and status checks may decide them; the bank
  itself commits or rolls back some;
* a transfer may lose to a lock or a conflict: then it wrote nothing.

Checks: the total of every snapshot (:meth:`Bank.total_at`, read below live locks), a
snapshot read again later reads the same (:meth:`Bank.history`), and once everything is
decided each pending transfer is all or nothing in the write records
(:meth:`Bank.all_or_nothing`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from bigtable_lite import RowRead
from percolator import Client, layout, records
from percolator._backend import CellWrite, CommitRequest, PrewriteRequest
from percolator._node_client import NodeClient
from percolator.errors import CommitConflict, LockWaitTimeout
from percolator.v1 import node_pb2
from percolator.v1 import transactions_pb2 as txn_pb2
from percolator.v1 import transactions_pb2_grpc as txn_grpc

BANK_TABLE = b"fuzz-bank"
ACCOUNTS = 6
OPENING = 100
TOTAL = ACCOUNTS * OPENING
BALANCE = b"balance"
ACCOUNT_ROWS = tuple(b"acct%02d" % i for i in range(ACCOUNTS))
LOCK_WAIT = 0.3
"""Seconds a well-behaved read waits on a live lock (a pending transfer's) before it
gives up: short, since a fuzzed heartbeat may keep a lock alive for an hour."""
TXN_CALL_TIMEOUT = 30.0
SNAPSHOT_TRIES = 20


@dataclass(frozen=True)
class Pending:
    """A transfer left prewritten: ``amount`` from ``source`` to ``target``."""

    start_ts: int
    source: bytes
    target: bytes
    amount: int
    ttl_ms: int


@dataclass
class OpenTransfer:
    """A transfer begun, its balances read; committed by :meth:`Bank.finish`."""

    via: str  # "one_phase", "two_phase" or "service"
    source: bytes
    target: bytes
    amount: int
    balances: tuple[int, int]
    txn: object = None       # the Transaction (client) ...
    txn_id: int = 0          # ... or the Transactions service's id


@dataclass
class Tally:
    committed: int = 0
    aborted: int = 0
    by: dict[str, int] = field(default_factory=dict)

    def note(self, what: str) -> None:
        self.by[what] = self.by.get(what, 0) + 1


def _balance(raw: bytes | None) -> int:
    assert raw is not None, "an account without a balance"
    return int(raw)


class Bank:
    """The bank's clients and its record of what it did (see the module docstring)."""

    def __init__(self, address: str, channel: grpc.Channel) -> None:
        self.clients = {
            "one_phase": Client(NodeClient(address), table=BANK_TABLE,
                                lock_wait_timeout=LOCK_WAIT),
            "two_phase": Client(NodeClient(address), table=BANK_TABLE, one_phase=False,
                                lock_wait_timeout=LOCK_WAIT),
        }
        self.client = self.clients["two_phase"]
        self.backend = self.client.backend
        self.service = txn_grpc.TransactionsStub(channel)  # type: ignore[no-untyped-call]
        self.snapshots: dict[int, dict[bytes, int]] = {}
        self.tally = Tally()

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def open(self) -> list[int]:
        """Opens the accounts (if not yet) and makes a little history; its timestamps."""
        with self.client.transaction() as txn:
            found = txn.get_many([(row, BALANCE) for row in ACCOUNT_ROWS])
            if all(v is None for v in found.values()):
                for row in ACCOUNT_ROWS:
                    txn.set(row, BALANCE, str(OPENING).encode())
        history = []
        for i in range(3):
            opened = self.begin("two_phase", ACCOUNT_ROWS[i], ACCOUNT_ROWS[-1 - i], 5 + i)
            assert opened is not None
            history.append(opened.txn.start_ts)  # type: ignore[attr-defined]
            assert self.finish(opened)
        return history

    # --- transfers begun now, committed later ----------------------------------------------

    def begin(self, via: str, source: bytes, target: bytes, amount: int
              ) -> OpenTransfer | None:
        """A transaction with both balances read, or None if a live lock was in the way."""
        keys = [(source, BALANCE), (target, BALANCE)]
        if via == "service":
            try:
                reply = self.service.Begin(txn_pb2.TxnBeginRequest(
                    table=BANK_TABLE, ttl_ms=120_000,
                    reads=[node_pb2.Key(row=r, column=c) for r, c in keys]),
                    timeout=TXN_CALL_TIMEOUT)
            except grpc.RpcError as exc:
                self._gave_up(exc)
                return None
            values = [_balance(v.value if v.found else None) for v in reply.values]
            return OpenTransfer(via, source, target, amount, (values[0], values[1]),
                                txn_id=reply.txn_id)
        txn = self.clients[via].begin()
        try:
            found = txn.get_many(keys)
        except LockWaitTimeout:
            txn.rollback()
            self.tally.note("begin: lock wait")
            return None
        return OpenTransfer(via, source, target, amount,
                            (_balance(found[keys[0]]), _balance(found[keys[1]])), txn=txn)

    def finish(self, t: OpenTransfer) -> bool:
        """Commits the transfer; whether it committed (a conflict: nothing written)."""
        new = {t.source: t.balances[0] - t.amount, t.target: t.balances[1] + t.amount}
        if t.via == "service":
            try:
                self.service.Commit(txn_pb2.TxnCommitRequest(txn_id=t.txn_id, writes=[
                    txn_pb2.TxnWrite(row=row, column=BALANCE, value=str(v).encode())
                    for row, v in new.items()]), timeout=TXN_CALL_TIMEOUT)
            except grpc.RpcError as exc:
                self._gave_up(exc)
                return False
        else:
            txn = t.txn
            for row, v in new.items():
                txn.set(row, BALANCE, str(v).encode())  # type: ignore[attr-defined]
            try:
                txn.commit()  # type: ignore[attr-defined]
            except (CommitConflict, LockWaitTimeout) as exc:
                self.tally.note(f"commit: {type(exc).__name__}")
                self.tally.aborted += 1
                return False
        self.tally.committed += 1
        return True

    def abandon(self, t: OpenTransfer) -> None:
        if t.via == "service":
            try:
                self.service.Rollback(txn_pb2.TxnRollbackRequest(txn_id=t.txn_id),
                                      timeout=TXN_CALL_TIMEOUT)
            except grpc.RpcError as exc:
                assert exc.code() is grpc.StatusCode.NOT_FOUND, exc  # expired: fine
        else:
            t.txn.rollback()  # type: ignore[attr-defined]

    def _gave_up(self, exc: grpc.RpcError) -> None:
        """A Transactions call that wrote nothing: a conflict, a lock waited out, the
        transaction forgotten.  Anything else is a finding."""
        code = exc.code()
        assert code in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.NOT_FOUND), (code, exc.details())
        self.tally.note(f"service: {code.name}")
        self.tally.aborted += 1

    # --- transfers left prewritten ---------------------------------------------------------

    def prewrite(self, source: bytes, target: bytes, amount: int, ttl_ms: int
                 ) -> Pending | None:
        """A transfer prewritten and left undecided, or None if a lock or a conflict was
        in the way (then nothing is locked)."""
        start_ts = self.backend.timestamps(1)
        keys = [(source, BALANCE), (target, BALANCE)]
        read = self.backend.read(BANK_TABLE, start_ts, keys)
        if read.locked:
            self.tally.note("prewrite: locked")
            return None
        parts = [(row, [CellWrite(BALANCE, records.PUT,
                                  str(_balance(read.values[(row, BALANCE)]) + delta).encode())])
                 for row, delta in ((source, -amount), (target, amount))]
        conflict = self.backend.prewrite(PrewriteRequest(BANK_TABLE, start_ts, keys[0],
                                                         ttl_ms, parts))
        if conflict is not None:
            self.tally.note(f"prewrite: {conflict.reason}")
            return None
        return Pending(start_ts, source, target, amount, ttl_ms)

    def decide(self, p: Pending, commit: bool) -> None:
        """The owner's decision (the fuzz may have decided first: then this is a no-op or
        answers the decision already made)."""
        if commit:
            self.backend.commit(CommitRequest(BANK_TABLE, p.start_ts, (p.source, BALANCE),
                                              [(p.target, BALANCE)]))
        else:
            self.roll_back(p)

    def roll_back(self, p: Pending) -> None:
        self.backend.rollback(BANK_TABLE, p.start_ts, (p.source, BALANCE),
                              [(p.target, BALANCE)])

    # --- checks ----------------------------------------------------------------------------

    def total_at(self, ts: int | None = None) -> tuple[int, dict[bytes, int]]:
        """A snapshot's timestamp and balances: at ``ts`` (default: fresh), or lower, below
        the oldest live lock in the way (a live transaction may commit below a fresh one)."""
        keys = [(row, BALANCE) for row in ACCOUNT_ROWS]
        at = ts if ts is not None else self.backend.timestamps(1)
        for _ in range(SNAPSHOT_TRIES):
            read = self.backend.read(BANK_TABLE, at, keys)
            if not read.locked:
                return at, {row: _balance(read.values[(row, BALANCE)])
                            for row in ACCOUNT_ROWS}
            at = min(cell.start_ts for cell in read.locked) - 1
        raise AssertionError(f"no snapshot of the bank below its live locks near {at}")

    def record_snapshot(self) -> int:
        at, balances = self.total_at()
        assert sum(balances.values()) == TOTAL, (at, balances)
        self.snapshots[at] = balances
        return at

    def history(self, stamps: Sequence[int]) -> None:
        """Snapshots read earlier read the same now."""
        for at in stamps:
            again_at, again = self.total_at(at)
            assert again_at == at, f"snapshot {at} now meets a live lock below it"
            assert again == self.snapshots[at], (at, self.snapshots[at], again)

    def all_or_nothing(self, pending: Sequence[Pending]) -> None:
        """Each decided pending transfer committed both cells or neither (write records)."""
        column = layout.write_column(BALANCE)
        for p in pending:
            rows = self.backend.store.read_rows(
                [RowRead(BANK_TABLE, row, (column,)) for row in (p.source, p.target)])
            written = [any(records.decode_write(c.value).start_ts == p.start_ts
                           and c.column == column for c in cells) for cells in rows]
            assert written[0] == written[1], f"{p} committed on one side only: {written}"

"""Random interleavings of open transactions, checked against a reference model of snapshot
isolation.

The model is the definition, written as plainly as possible:

* the store is, per cell, a list of committed versions ``(commit_seq, value or None)``;
* a transaction reads its own buffered writes, else the newest version committed
  before it began -- or, begun lazily, before its first read of the store (or its
  commit, if it never read);
* a commit fails iff another transaction committed a cell it writes after it began
  (first-committer-wins); a read-only commit always succeeds and writes nothing.

Percolator also aborts a commit that meets a *lock* of a concurrent, still undecided
transaction.  Here the state machine runs in one thread, so another transaction's
locks exist only inside its own ``commit()`` call and are gone (committed or rolled
back) before the next step: at every step the model's rule is exact.

Steps of up to three open transactions (begin, get, get_many, set, delete, scan,
commit, rollback) run on a small key space, so conflicts are common.  Each transaction
commits in one phase (the default) or in two (a second client with
``one_phase=False`` over the same backend), drawn at its begin.  The model keeps
its own sequence numbers; the real start_ts and commit_ts are only checked to grow.
Each example gets an empty table of its own in one embedded store (opening a store
per example would cost an oracle fsync each).
"""

from __future__ import annotations

import collections
import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, note, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bigtable_lite import LocalStore
from percolator import Client, CommitConflict, Transaction
from percolator._local import LocalBackend
from percolator.oracle import Oracle

from .txn_fixtures import draw_seed

Key = tuple[bytes, bytes]

ROWS = [b"a", b"b", b"c"]
COLUMNS = [b"x", b"y"]
KEYS = [(row, column) for row in ROWS for column in COLUMNS]
MAX_OPEN = 3

HOT = (b"b", b"x")
keys = st.one_of(st.just(HOT), st.sampled_from(KEYS))  # a hot cell makes conflicts common
values = st.sampled_from([b"", b"0", b"1", b"2", b"\x00\xff", b"L" * 256, b"M" * 300])
row_bounds = st.sampled_from([None, b"a", b"b", b"b\x00", b"c", b"d"])
column_filters = st.none() | st.lists(st.sampled_from(COLUMNS + [b"z"]), min_size=1, max_size=3)
picks = st.integers(0, MAX_OPEN - 1)


@dataclass
class ModelTxn:
    start: int | None  # None: begun lazily, no snapshot taken yet
    writes: dict[Key, bytes | None] = field(default_factory=dict)
    mode: str = "one-phase"  # how the real transaction commits: "one-phase" or "two-phase"


class Model:
    """Snapshot isolation by definition: versions with commit sequence numbers."""

    def __init__(self) -> None:
        self.seq = 0
        self.versions: dict[Key, list[tuple[int, bytes | None]]] = {}

    def begin(self, lazy: bool = False) -> ModelTxn:
        txn = ModelTxn(None)
        if not lazy:
            self.snapshot(txn)
        return txn

    def snapshot(self, txn: ModelTxn) -> int:
        """The transaction's snapshot, taken now if it has none yet."""
        if txn.start is None:
            self.seq += 1
            txn.start = self.seq
        return txn.start

    def committed(self, key: Key, before: int) -> bytes | None:
        value = None
        for seq, v in self.versions.get(key, []):
            if seq < before:
                value = v
        return value

    def read(self, txn: ModelTxn, key: Key) -> bytes | None:
        if key in txn.writes:
            return txn.writes[key]
        return self.committed(key, self.snapshot(txn))

    def scan(self, txn: ModelTxn, start: bytes | None, end: bytes | None,
             columns: list[bytes] | None) -> list[tuple[bytes, bytes, bytes]]:
        self.snapshot(txn)
        out = []
        for key in sorted(set(self.versions) | set(txn.writes)):
            row, column = key
            if start is not None and row < start or end is not None and row >= end:
                continue
            if columns is not None and column not in columns:
                continue
            value = self.read(txn, key)
            if value is not None:
                out.append((row, column, value))
        return out

    def commit(self, txn: ModelTxn) -> bool:
        """Apply txn's writes; False (nothing applied) on a write-write conflict."""
        if not txn.writes:
            return True
        start = self.snapshot(txn)
        for key in txn.writes:
            if any(seq > start for seq, _ in self.versions.get(key, [])):
                return False
        self.seq += 1
        for key, value in txn.writes.items():
            self.versions.setdefault(key, []).append((self.seq, value))
        return True

    def latest(self) -> list[tuple[bytes, bytes, bytes]]:
        return self.scan(ModelTxn(self.seq + 1), None, None, None)


class SnapshotIsolationMachine(RuleBasedStateMachine):
    store: LocalStore  # shared by every example; set by the test
    oracle: Oracle
    tables = itertools.count(1)
    seen: collections.Counter[str]  # what the examples exercised, over all of them

    def __init__(self) -> None:
        super().__init__()
        backend = LocalBackend(self.store, self.oracle, owned=False)
        table = b"model%d" % next(self.tables)
        self.client = Client(backend, table=table)
        self.two_phase = Client(backend, table=table, one_phase=False)
        self.model = Model()
        self.open: list[tuple[Transaction, ModelTxn]] = []
        self.last_ts = 0

    def teardown(self) -> None:
        try:
            for txn, _ in self.open:
                txn.rollback()
            self.check_committed_state()
        finally:
            self.two_phase.close()
            self.client.close()  # leaves the shared store and oracle open

    def pick(self, i: int) -> tuple[Transaction, ModelTxn]:
        return self.open[i % len(self.open)]

    def check_committed_state(self) -> None:
        txn = self.client.begin()
        assert list(txn.scan()) == self.model.latest()
        txn.commit()

    # --- steps ------------------------------------------------------------------------------

    @initialize(cells=st.dictionaries(keys, values))
    def load(self, cells: dict[Key, bytes]) -> None:
        """Start from some committed cells, so reads, deletes and conflicts have matter."""
        if cells:
            txn = self.client.begin()
            m = self.model.begin()
            for key, value in cells.items():
                txn.set(*key, value)
                m.writes[key] = value
            assert self.model.commit(m)
            self.last_ts = txn.commit()

    def client_for(self, two_phase: bool) -> Client:
        return self.two_phase if two_phase else self.client

    @precondition(lambda self: len(self.open) < MAX_OPEN)
    @rule(two_phase=st.booleans())
    def begin(self, two_phase: bool) -> None:
        self.seen["begin"] += 1
        txn = self.client_for(two_phase).begin()
        assert txn.start_ts > self.last_ts
        self.last_ts = txn.start_ts
        m = self.model.begin()
        m.mode = "two-phase" if two_phase else "one-phase"
        self.open.append((txn, m))
        note(f"T{txn.start_ts} = begin()")

    @precondition(lambda self: len(self.open) < MAX_OPEN)
    @rule(two_phase=st.booleans())
    def begin_lazy(self, two_phase: bool) -> None:
        """A snapshot taken by the first read (Client.begin(lazy=True), Client.run)."""
        self.seen["lazy begin"] += 1
        txn = self.client_for(two_phase).begin(lazy=True)
        m = self.model.begin(lazy=True)
        m.mode = "two-phase" if two_phase else "one-phase"
        self.open.append((txn, m))
        note(f"T{len(self.open)} = begin(lazy=True)")

    def check_snapshot_taken(self, txn: Transaction, m: ModelTxn, started: bool) -> None:
        """A lazy transaction's first read took a timestamp above every one before it."""
        if not started and m.start is not None:
            self.seen["lazy snapshot"] += 1
            assert txn.start_ts > self.last_ts
            self.last_ts = txn.start_ts

    @precondition(lambda self: self.open)
    @rule(i=picks, key=keys)
    def get(self, i: int, key: Key) -> None:
        txn, m = self.pick(i)
        started = m.start is not None
        assert txn.get(*key) == self.model.read(m, key), f"T{txn.start_ts}.get{key}"
        self.check_snapshot_taken(txn, m, started)

    @precondition(lambda self: self.open)
    @rule(i=picks, wanted=st.lists(keys, min_size=1, max_size=4))
    def get_many(self, i: int, wanted: list[Key]) -> None:
        txn, m = self.pick(i)
        started = m.start is not None
        assert txn.get_many(wanted) == {k: self.model.read(m, k) for k in wanted}
        self.check_snapshot_taken(txn, m, started)

    @precondition(lambda self: self.open)
    @rule(i=picks, key=keys, value=values)
    def set(self, i: int, key: Key, value: bytes) -> None:
        txn, m = self.pick(i)
        txn.set(*key, value)
        m.writes[key] = value

    @precondition(lambda self: self.open)
    @rule(i=picks, key=keys)
    def delete(self, i: int, key: Key) -> None:
        txn, m = self.pick(i)
        txn.delete(*key)
        m.writes[key] = None

    @precondition(lambda self: self.open)
    @rule(i=picks, writes=st.lists(st.tuples(keys, st.none() | values), min_size=2, max_size=4))
    def write_several(self, i: int, writes: list[tuple[Key, bytes | None]]) -> None:
        txn, m = self.pick(i)
        for key, value in writes:
            if value is None:
                txn.delete(*key)
            else:
                txn.set(*key, value)
            m.writes[key] = value

    @precondition(lambda self: self.open)
    @rule(i=picks, bounds=st.tuples(row_bounds, row_bounds), columns=column_filters)
    def scan(self, i: int, bounds: tuple[bytes | None, bytes | None],
             columns: list[bytes] | None) -> None:
        start, end = bounds
        if start is not None and end is not None and start > end:
            start, end = end, start
        txn, m = self.pick(i)
        started = m.start is not None
        expected = self.model.scan(m, start, end, columns)
        assert m.start is not None
        if any(v is None and self.model.committed(k, m.start) is not None
               for k, v in m.writes.items()):
            self.seen["scan over a buffered delete of a committed cell"] += 1
        assert list(txn.scan(start, end, columns)) == expected, \
            f"T{txn.start_ts}.scan({start!r}, {end!r}, {columns!r})"
        self.check_snapshot_taken(txn, m, started)

    @precondition(lambda self: self.open)
    @rule(i=picks)
    def commit(self, i: int) -> None:
        txn, m = self.pick(i)
        self.open.remove((txn, m))
        started = m.start is not None
        expected = self.model.commit(m)
        try:
            commit_ts = txn.commit()
        except CommitConflict:
            note(f"T{txn.start_ts}.commit() -> conflict")
            assert not expected, f"T{txn.start_ts} conflicted; the model commits it"
            self.seen["commit conflict"] += 1
            self.seen[f"{m.mode} commit conflict"] += 1
            return
        note(f"T{txn.start_ts}.commit() -> {commit_ts}")
        assert expected, f"T{txn.start_ts} committed at {commit_ts}; the model says conflict"
        if m.writes:
            self.check_snapshot_taken(txn, m, started)
            assert commit_ts > self.last_ts
            self.last_ts = commit_ts
            self.seen["commit"] += 1
            self.seen[f"{m.mode} commit"] += 1
        else:
            assert commit_ts == txn.start_ts
            self.seen["read-only commit"] += 1

    @precondition(lambda self: self.open)
    @rule(i=picks)
    def rollback(self, i: int) -> None:
        txn, m = self.pick(i)
        self.open.remove((txn, m))
        txn.rollback()
        note(f"T{m.start}.rollback()")

    @invariant()
    def open_transactions_are_active(self) -> None:
        assert all(txn.active for txn, _ in self.open)


def scratch_dir(tmp_path: Path) -> Path:
    """Where the store goes: tmpfs if there is one, as each example's new table costs an
    fsync of the store's metadata (half the run time on a disk)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="percolator-model-", dir=shm))
    return tmp_path


CASES = ("commit", "commit conflict", "read-only commit", "lazy snapshot", "one-phase commit",
         "two-phase commit", "one-phase commit conflict", "two-phase commit conflict",
         "scan over a buffered delete of a committed cell")
"""The interesting cases: each must come up, or the run proved little."""


def test_snapshot_isolation_model(tmp_path: Path) -> None:
    """Runs of 150 examples until every case of CASES came up (at most four: a run's
    seed is the drawn seed plus its number; some seeds draw a rare case in no example)."""
    seen: collections.Counter[str] = collections.Counter()
    first = draw_seed("test_snapshot_isolation_model")
    for run in range(4):
        local = tmp_path / f"run{run}"
        local.mkdir()
        where = scratch_dir(local)
        try:
            check_model(where / "data", seen, first + run)
        finally:
            if where != local:
                shutil.rmtree(where, ignore_errors=True)
        print(f"run {run}: exercised: {dict(seen)}")
        if all(seen[case] for case in CASES):
            break
    for case in CASES:
        assert seen[case] > 0, f"no {case!r} in any example"


def check_model(path: Path, seen: collections.Counter[str], seed_value: int) -> None:
    with LocalStore(path) as store, Oracle(store) as oracle:
        machine = type("Machine", (SnapshotIsolationMachine,),
                       {"store": store, "oracle": oracle, "seen": seen})
        seed(seed_value)(machine)
        run_state_machine_as_test(machine, settings=settings(  # type: ignore[no-untyped-call]
            max_examples=150, stateful_step_count=40, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))

"""A real node under a hostile peer and a well-behaved client at once: bad input gets a
documented error, and nothing already stored is lost, changed or served wrong (issue 16).

One ``percolator serve`` subprocess (security off, the default) serves the module.  A
hypothesis state machine interleaves, step by step:

* **fuzzed calls** to every method the node serves (TabletService, Node ``Batch`` with
  every command kind and ``BatchStream``, TimestampOracle, Transactions,
  Notifications, health, reflection), valid and malformed, built at the wire level
  (``wire.py``) from names and timestamps the node holds (``pools.py``), each checked
  against its contract (``calls.check_outcome``: a documented status code, never UNKNOWN
  or INTERNAL; replies of the right kind);
* **the bank's transactions** (``bank.py``): transfers begun in one step and committed in
  a later one (Python client, one- and two-phase; Transactions service), transfers left
  prewritten for the fuzz to commit, roll back, resolve or keep alive, and the owner's
  own decisions.

After every step: the node runs and answers health, commits a small transaction, the
canary is unchanged, its memory is bounded (``target.NodeUnderFuzz.check``); the bank's
total is the same at a fresh snapshot, and older snapshots read as they did; the node
logged no traceback.  After each run: every transfer decided (the bank rolls back what is
left), every lock the protocol wrote resolvable (none left), each transfer all or nothing.

Bounded by default (``EXAMPLES`` runs of ``STEPS`` steps, derandomized: the same steps
every time); ``PERCOLATOR_FUZZ_SEED=<n>`` draws other steps, and
``PERCOLATOR_FUZZ_EXAMPLES`` / ``PERCOLATOR_FUZZ_STEPS`` run longer.  Shrinking is off:
the node keeps its state between runs, so a shorter replay would test another node; the
failing run's steps are printed as they ran.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, note, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from bigtable_lite import DataCorruption, ScanRequest
from bigtable_lite._model import ALL_TIME
from percolator import layout, records
from percolator.v1 import node_pb2
from percolator.v1 import transactions_pb2 as txn_pb2

from .bank import ACCOUNT_ROWS, BALANCE, BANK_TABLE, TOTAL, Bank, OpenTransfer, Pending
from .calls import (
    REQUEST_TYPES,
    RPCS,
    Rpc,
    check_outcome,
    decode,
    invoke,
    writes_protected,
)
from .pools import pools
from .target import FUZZ_TABLE, NodeUnderFuzz
from .wire import MAX_BUILD_BYTES, message

SEED = os.environ.get("PERCOLATOR_FUZZ_SEED")
EXAMPLES = int(os.environ.get("PERCOLATOR_FUZZ_EXAMPLES", "10"))
STEPS = int(os.environ.get("PERCOLATOR_FUZZ_STEPS", "30"))
SWEEP = int(os.environ.get("PERCOLATOR_FUZZ_SWEEP", "3"))
BUDGET = float(os.environ.get("PERCOLATOR_FUZZ_SECONDS", "30"))
"""Seconds of fuzzed calls after which the rest of the machine's run only checks (a slow
machine runs fewer calls, not a longer test); a long run sets it higher.  The sweep
stops at twice that from the node's start, its first call of each method excepted."""
SWEEP_DEADLINE = 0.0
MAX_OPEN = 3
MAX_PENDING = 4
MAX_SESSIONS = 8

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeUnderFuzz]:
    target = NodeUnderFuzz(Path(tmp_path_factory.mktemp("fuzz-node")))
    try:
        target.seed()
        global SWEEP_DEADLINE
        SWEEP_DEADLINE = time.monotonic() + 2 * BUDGET
        yield target
    finally:
        target.close()


class Requests(list[bytes]):
    """Request bytes, shown by size and first bytes (a message may be 60 MiB)."""

    def __repr__(self) -> str:
        return "[" + ", ".join(f"<{len(r)} bytes {r[:48].hex()}...>" for r in self) + "]"


class Stats:
    """What the fuzz did, printed at the end (a run that fuzzed nothing shows it)."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = time.monotonic() + BUDGET if deadline is None else deadline
        self.outcomes: Counter[str] = Counter()
        self.rpcs: Counter[str] = Counter()
        self.steps: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}
        self.slowest = (0.0, "")


def _outcome_tally(rpc: Rpc, code: grpc.StatusCode, replies: list[bytes]) -> list[str]:
    out = [code.name]
    if rpc.path.endswith("/Batch") or rpc.path.endswith("/BatchStream"):
        for raw in replies:
            for result in node_pb2.BatchResponse.FromString(raw).results:
                kind = result.WhichOneof("kind")
                out.append(f"cmd:{kind}" if kind != "error" else f"cmd:{result.error.code}")
    return out


F = TypeVar("F", bound=Callable[..., None])
BATCH_RPCS = {rpc.command: rpc for rpc in RPCS if rpc.command}
DECISIONS = [(kind, primary) for primary in ("target", "source", "other")
             for kind in ("commit", "rollback", "resolve", "heartbeat", "check_txn_status")]


def fuzz_call(node: NodeUnderFuzz, stats: Stats, rpc: Rpc, data: st.DataObject,
              pending: Sequence[Pending] = (), sessions: Sequence[int] = ()) -> None:
    """One fuzzed call of ``rpc``, checked against its contract."""
    if time.monotonic() > stats.deadline:
        stats.steps["fuzz: over the time budget"] += 1
        return
    fresh = node.bank.backend.timestamps(1)
    p = pools([*node.known_ts, fresh], pending, REQUEST_TYPES, rpc.command, sessions)
    one = message(rpc.request, p)
    shape = st.lists(one, min_size=0, max_size=3) if rpc.shape == "bidi" else \
        st.lists(one, min_size=1, max_size=1)
    requests = data.draw(shape.map(Requests), label=rpc.id)
    if sum(len(raw) for raw in requests) > MAX_BUILD_BYTES:
        stats.steps["fuzz: too big to send"] += 1
        return
    for raw in requests:
        decoded = decode(rpc.request, raw)
        if decoded is not None and writes_protected(decoded):
            stats.steps["fuzz: would write the bank or canary"] += 1
            return
    note(f"{rpc.id}: " + "; ".join(f"{len(r)} bytes {r[:200].hex()}" for r in requests))
    t0 = time.perf_counter()
    outcome = invoke(node.channel, rpc, requests)
    took = time.perf_counter() - t0
    stats.seconds[rpc.id] = stats.seconds.get(rpc.id, 0.0) + took
    if took > stats.slowest[0]:
        stats.slowest = (took, f"{rpc.id} {Requests(requests)!r} -> {outcome.code.name}")
    note(f"-> {outcome.code.name} {outcome.details[:300]}")
    stats.rpcs[rpc.id] += 1
    stats.outcomes.update(_outcome_tally(rpc, outcome.code, outcome.replies))
    check_outcome(rpc, requests, outcome)


def check_node(node: NodeUnderFuzz, tracebacks: int) -> None:
    """After every step: the node's checks, the bank's total and history, no traceback."""
    node.check()
    bank = node.bank
    at = bank.record_snapshot()
    older = sorted(bank.snapshots)
    bank.history(list(dict.fromkeys([older[0], older[len(older) // 2], at])))
    logged = node.tracebacks()[tracebacks:]
    assert not logged, f"the node logged {len(logged)} tracebacks:\n" \
        f"{node.output_tail()}"


def action(**strategies: st.SearchStrategy[Any]) -> Callable[[F], F]:
    """A step of the machine, its arguments drawn from ``strategies`` (``st.data()``:
    the data object itself)."""
    def mark(method: F) -> F:
        method.strategies = strategies  # type: ignore[attr-defined]
        return method
    return mark


SCHEDULE = ("fuzz_next", "bank_begin", "fuzz_decide", "fuzz_any", "bank_prewrite",
            "bank_begin", "fuzz_next", "bank_finish", "fuzz_session", "bank_decide")
"""The steps in turn, each with drawn arguments: drawn by hypothesis as rules, some came
out ten times as often as others, and a run could commit no transfer at all."""


class NodeFuzz(RuleBasedStateMachine):
    """The machine (see the module docstring); ``node`` and ``stats`` set per test."""

    node: NodeUnderFuzz
    stats: Stats

    def __init__(self) -> None:
        super().__init__()
        self.bank: Bank = self.node.bank
        self.open: list[OpenTransfer] = []
        self.pending: list[Pending] = []
        self.decided: list[Pending] = []
        self.sessions: list[int] = []
        self.tracebacks = len(self.node.tracebacks())
        self.turn = 0
        self.decisions = 0
        self.done = 0

    # --- the hostile peer ------------------------------------------------------------------

    def _fuzz(self, rpc: Rpc, data: st.DataObject) -> None:
        fuzz_call(self.node, self.stats, rpc, data, self.pending, self.sessions)

    @initialize(first=st.integers(0, len(RPCS) - 1))
    def start(self, first: int) -> None:
        self.turn = first

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        name = SCHEDULE[self.done % len(SCHEDULE)]
        self.done += 1
        method = getattr(self, name)
        args = {key: data if key == "data" else data.draw(strategy, label=f"{name}.{key}")
                for key, strategy in method.strategies.items()}
        method(**args)

    @action(data=st.data())
    def fuzz_next(self, data: st.DataObject) -> None:
        """Every method in turn, so that each gets its share."""
        self.turn += 1
        self._fuzz(RPCS[self.turn % len(RPCS)], data)

    @action(rpc=st.sampled_from(RPCS), data=st.data())
    def fuzz_any(self, rpc: Rpc, data: st.DataObject) -> None:
        self._fuzz(rpc, data)

    @action(which=st.integers(0, MAX_PENDING - 1),
          cells=st.lists(st.sampled_from(["source", "target", "other"]), max_size=3),
          ttl_ms=st.sampled_from([1, 120_000, 3_600_000]))
    def fuzz_decide(self, which: int, cells: list[str], ttl_ms: int) -> None:
        """A peer decides (or keeps alive) an undecided transfer of the bank's as it should
        not: naming a secondary as the primary, a cell it does not hold, some of its cells.
        Each kind with each primary in turn (drawn, they came out very unevenly)."""
        kind, primary = DECISIONS[self.decisions % len(DECISIONS)]
        self.decisions += 1
        # The live ones: the checks after each step settle expired locks at once.
        live = [p for p in self.pending if p.ttl_ms > 1] or self.pending
        if not live:
            return
        p = live[which % len(live)]
        names = {"source": p.source, "target": p.target,
                 "other": next(r for r in ACCOUNT_ROWS if r not in (p.source, p.target))}
        key = node_pb2.Key(row=names[primary], column=BALANCE)
        rows = [node_pb2.RowColumns(row=names[c], columns=[BALANCE]) for c in cells]
        command = {
            "commit": lambda: node_pb2.Command(commit=node_pb2.CommitRequest(
                table=BANK_TABLE, start_ts=p.start_ts, primary=key, secondaries=rows)),
            "rollback": lambda: node_pb2.Command(rollback=node_pb2.RollbackRequest(
                table=BANK_TABLE, start_ts=p.start_ts, primary=key, cells=rows)),
            "resolve": lambda: node_pb2.Command(resolve=node_pb2.ResolveRequest(
                table=BANK_TABLE, start_ts=p.start_ts, cells=rows)),
            "heartbeat": lambda: node_pb2.Command(heartbeat=node_pb2.HeartbeatRequest(
                table=BANK_TABLE, start_ts=p.start_ts, primary=key, ttl_ms=ttl_ms)),
            "check_txn_status": lambda: node_pb2.Command(
                check_txn_status=node_pb2.CheckTxnStatusRequest(
                    table=BANK_TABLE, primary=key, start_ts=p.start_ts)),
        }[kind]()
        rpc = BATCH_RPCS[kind]
        raw = node_pb2.BatchRequest(commands=[command]).SerializeToString()
        outcome = invoke(self.node.channel, rpc, [raw])
        answer = node_pb2.BatchResponse.FromString(outcome.replies[0]) if outcome.replies \
            else outcome.details
        note(f"{kind} of {p} naming {primary} as primary, cells {cells}:"
             f" {outcome.code.name} {answer}")
        self.stats.steps[f"decide by a peer: {kind} naming {primary}"] += 1
        check_outcome(rpc, [raw], outcome)

    @action(ttl_ms=st.sampled_from([1, 60_000]))
    def fuzz_session(self, ttl_ms: int) -> None:
        """A Transactions session in the fuzz's table, whose id the fuzz then names."""
        if len(self.sessions) >= MAX_SESSIONS:
            return
        reply = self.bank.service.Begin(txn_pb2.TxnBeginRequest(table=FUZZ_TABLE,
                                                                ttl_ms=ttl_ms), timeout=30)
        self.sessions.append(reply.txn_id)

    # --- the well-behaved client -----------------------------------------------------------

    # Rules run whatever the state (a rule with nothing to do does nothing): the node's
    # answers decide the state, and which rules run must not depend on them.

    @action(via=st.sampled_from(["one_phase", "two_phase", "service"]),
          pair=st.permutations(range(len(ACCOUNT_ROWS))), amount=st.integers(1, 30))
    def bank_begin(self, via: str, pair: list[int], amount: int) -> None:
        if len(self.open) >= 2:  # commit the oldest first: transfers interleave, and end
            self._finish(self.open.pop(0), commit=True)
        opened = self.bank.begin(via, ACCOUNT_ROWS[pair[0]], ACCOUNT_ROWS[pair[1]], amount)
        self.stats.steps[f"begin {via}: {'open' if opened else 'locked out'}"] += 1
        if opened is not None:
            self.open.append(opened)

    @action(which=st.integers(0, MAX_OPEN - 1), commit=st.booleans())
    def bank_finish(self, which: int, commit: bool) -> None:
        if self.open:
            self._finish(self.open.pop(which % len(self.open)), commit)

    def _finish(self, t: OpenTransfer, commit: bool) -> None:
        if commit:
            done = self.bank.finish(t)
            self.stats.steps[f"commit {t.via}: {'committed' if done else 'aborted'}"] += 1
        else:
            self.bank.abandon(t)
            self.stats.steps[f"rollback {t.via}"] += 1

    @action(pair=st.permutations(range(len(ACCOUNT_ROWS))), amount=st.integers(1, 30),
          ttl_ms=st.sampled_from([1, 120_000]))
    def bank_prewrite(self, pair: list[int], amount: int, ttl_ms: int) -> None:
        if len(self.pending) >= MAX_PENDING:
            return
        p = self.bank.prewrite(ACCOUNT_ROWS[pair[0]], ACCOUNT_ROWS[pair[1]], amount, ttl_ms)
        self.stats.steps[f"prewrite ttl {ttl_ms}: {'left' if p else 'in the way'}"] += 1
        if p is not None:
            self.pending.append(p)

    @action(which=st.integers(0, MAX_PENDING - 1), commit=st.booleans())
    def bank_decide(self, which: int, commit: bool) -> None:
        if not self.pending:
            return
        p = self.pending.pop(which % len(self.pending))
        self.bank.decide(p, commit)
        self.decided.append(p)
        self.stats.steps[f"decide: {'commit' if commit else 'rollback'}"] += 1

    # --- after every step ------------------------------------------------------------------

    @invariant()
    def node_sound(self) -> None:
        t0 = time.perf_counter()
        check_node(self.node, self.tracebacks)
        self.stats.seconds["(checks)"] = (self.stats.seconds.get("(checks)", 0.0)
                                          + time.perf_counter() - t0)

    def teardown(self) -> None:
        """Everything decided; every lock resolvable; each transfer all or nothing."""
        if self.node.alive():
            return  # the step that killed it failed already
        for t in self.open:
            self._finish(t, commit=True)
        for p in self.pending:
            self.bank.roll_back(p)
        left = resolve_every_lock(self.node)
        assert not left, f"locks left after resolving each: {left}"
        self.bank.all_or_nothing([*self.decided, *self.pending])
        at, balances = self.bank.total_at()
        assert sum(balances.values()) == TOTAL, (at, balances)
        self.bank.history(sorted(self.bank.snapshots))


def lock_cells(node: NodeUnderFuzz) -> Iterator[tuple[bytes, bytes, bytes, bytes]]:
    """(table, row, lock column, value) of every lock slot of every table that can hold
    transactions (a side table's cells only look like locks: a registration of column
    ``lc`` in ``<table>.config`` is stored in column ``lc`` at version 0)."""
    store = node.bank.backend.store
    for table in sorted({t.table for t in store.list_tablets()}):
        if layout.reserved_table(table) is not None:
            continue
        for row in store.scan(ScanRequest(table, None, None, (), (layout.LOCK,), ALL_TIME, 0)):
            for cell in row.cells:
                if cell.ts == layout.LOCK_SLOT_TS:
                    yield table, row.row, cell.column, cell.value


def resolve_every_lock(node: NodeUnderFuzz) -> list[tuple[bytes, bytes, bytes]]:
    """Settles every lock through the protocol (any client may: roll back its primary if
    undecided, then resolve the cell); the locks still there after.  A lock slot holding
    bytes that are no lock record was written raw (any client may, until roles exist:
    issue 16) and is not the protocol's: counted, not resolved."""
    backend = node.bank.backend
    raw = 0
    for table, row, column, value in list(lock_cells(node)):
        try:
            lock = records.decode_lock(value)
        except DataCorruption:
            raw += 1
            continue
        key = (row, column[len(layout.LOCK):])
        backend.rollback(table, lock.start_ts, (lock.primary_row, lock.primary_column), [key])
        backend.resolve(table, lock.start_ts, [key])
    left = []
    for table, row, column, value in lock_cells(node):
        try:
            records.decode_lock(value)
        except DataCorruption:
            continue
        left.append((table, row, column))
    note(f"raw junk in lock slots: {raw}")
    return left


def test_fuzz_node(node: NodeUnderFuzz) -> None:
    node.ensure_running()
    started = time.monotonic()
    stats = Stats()
    machine: Any = type("Machine", (NodeFuzz,), {"node": node, "stats": stats})
    if SEED is not None:
        machine = seed(int(SEED))(machine)
    run_state_machine_as_test(machine, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
        derandomize=SEED is None, phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck)), _min_steps=STEPS // 2)
    print(f"fuzz: {EXAMPLES} runs of up to {STEPS} steps, seed {SEED or 'derandomized'},"
          f" {time.monotonic() - started:.1f}s")
    print(f"fuzz: methods {dict(sorted(stats.rpcs.items()))}")
    print(f"fuzz: outcomes {dict(sorted(stats.outcomes.items()))}")
    slow = sorted(stats.seconds.items(), key=lambda kv: -kv[1])[:8]
    print(f"fuzz: seconds {', '.join(f'{k} {v:.1f}' for k, v in slow)}")
    print(f"fuzz: slowest call {stats.slowest[0]:.1f}s: {stats.slowest[1][:400]}")
    print(f"fuzz: bank {dict(sorted(stats.steps.items()))} {node.bank.tally}")
    assert node.bank.tally.committed > 3, "the bank committed nothing: no interleaving tested"


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.id)
def test_fuzz_each_method(node: NodeUnderFuzz, rpc: Rpc) -> None:
    """Every method, whatever the machine drew: ``SWEEP`` fuzzed calls each (derandomized),
    each followed by the machine's checks."""
    node.ensure_running()
    stats = Stats(deadline=float("inf"))
    tracebacks = len(node.tracebacks())

    @settings(max_examples=SWEEP, deadline=None, database=None, derandomize=SEED is None,
              phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one_call(data: st.DataObject) -> None:
        if stats.rpcs[rpc.id]:
            stats.deadline = SWEEP_DEADLINE
        fuzz_call(node, stats, rpc, data)
        check_node(node, tracebacks)

    if SEED is not None:
        one_call = seed(int(SEED))(one_call)
    one_call()
    assert stats.rpcs[rpc.id] or stats.steps, f"{rpc.id} was never called"

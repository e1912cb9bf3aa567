"""A commit's reported outcome is its true outcome, whatever fails after it was sent.

A client told "failed" for a transaction that committed (or "committed" for one that did
not) breaks atomicity for whoever acts on the answer -- ``client.run`` re-running a
function whose first attempt committed, a Transactions-service caller writing again.
So after the commit step was sent, any error -- a lost reply, a deadline, a broken
stream, an error of the step itself after its commit point, a store failing under
another transaction of the same batch -- leads to the transaction's fate being decided
through its primary (rolled back if still locked, then read), and that fate is the
answer; only if it cannot be learned is the answer ``CommitUndetermined``.

Servers are real (127.0.0.1 port 0); faults are injected where the steps run (a store
that fails one write, failpoints in the commit step).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import plyvel
import pytest

from bigtable_lite import MutationResult, RowMutation, RowRead
from percolator import Client, Transaction, failpoints, layout, records
from percolator._backend import CommitOutcome, CommitRequest
from percolator._local import LocalBackend
from percolator._node_client import NodeClient

from .steps import must_prewrite, new_txn
from .test_node_batch import WAIT, Served, hold_first_then, serve

TABLE = b"t"


@pytest.fixture(autouse=True)
def _no_failpoints() -> Iterator[None]:
    failpoints.reset()
    yield
    failpoints.reset()


class FailingWrite:
    """A step store whose ``fail_at``-th guarded write (the commit step's) raises the
    native error LevelDB raises when its write fails (a full disk)."""

    def __init__(self, inner: Any, fail_at: int) -> None:
        self._inner = inner
        self._fail_at = fail_at
        self.writes = 0

    def mutate_guarded(self, rows: Sequence[RowMutation], *, sync: bool = False
                       ) -> list[MutationResult]:
        self.writes += 1
        if self.writes == self._fail_at:
            raise plyvel.IOError("IO error: No space left on device (injected)")
        result: list[MutationResult] = self._inner.mutate_guarded(rows, sync=sync)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def committed_at(backend: LocalBackend, table: bytes, key: tuple[bytes, bytes],
                 start_ts: int) -> int | None:
    """The commit_ts of transaction ``start_ts``'s write record on ``key``, if any."""
    row, column = key
    for cell in backend.local_store.read_rows([RowRead(table, row,
                                                       (layout.write_column(column),))])[0]:
        if records.decode_write(cell.value).start_ts == start_ts:
            return cell.ts
    return None


def test_a_write_failing_in_a_group_commit_fails_no_other_commit_of_the_group(
        tmp_path: Path) -> None:
    """Commit steps of one batch share an oracle call; one of them failing at the store
    must not turn the others' answers into errors (one of them committed already)."""
    with serve(tmp_path / "data") as served, NodeClient(served.address, timeout=WAIT) as node:
        txns = [new_txn(node, TABLE, [(b"p%d" % i, b"c"), (b"s%d" % i, b"c")], b"v%d" % i)
                for i in range(3)]
        for txn in txns:
            must_prewrite(node, txn)
        ctx = served.backend.ctx
        inner = ctx.store
        ctx.store = failing = FailingWrite(inner, fail_at=2)
        try:
            results = hold_first_then(served, node, lambda: node.store.read_rows(
                [RowRead(TABLE, b"none")]), {
                f"c{i}": (lambda t=t: node.commit(CommitRequest(  # type: ignore[misc]
                    TABLE, t.start_ts, t.primary, t.secondaries))) for i, t in enumerate(txns)})
        finally:
            ctx.store = inner
        assert served.service.batches[-1] == ["commit"] * 3, "the three met in one batch"
        failed = 0
        for i, txn in enumerate(txns):
            result = results[f"c{i}"]
            stored = committed_at(served.backend, TABLE, txn.primary, txn.start_ts)
            if stored is None:
                assert not isinstance(result, CommitOutcome) or not result.committed, \
                    f"transaction {i} reported committed, but it did not commit"
                failed += 1
            else:
                assert result == CommitOutcome(True, stored), \
                    f"transaction {i} committed at {stored} but was answered {result!r}"
        assert failed == 1, results
        assert failing.writes == 3, "every commit of the group was tried"


def counter_client(kind: str, tmp_path: Path, served: Served | None, *, one_phase: bool,
                   timeout: float = WAIT) -> Client:
    if kind == "embedded":
        return Client.embedded(tmp_path / "embedded", one_phase=one_phase)
    assert served is not None
    return Client(NodeClient(served.address, timeout=timeout), table=TABLE,
                  one_phase=one_phase)


ROWS = (b"a", b"b", b"c")


def increment(runs: list[int]) -> Callable[[Transaction], int]:
    """A function for ``client.run``: every row's counter to (a's counter + 1)."""
    def fn(txn: Transaction) -> int:
        runs.append(txn.start_ts)
        n = int(txn.get(b"a", b"n") or b"0") + 1
        for row in ROWS:
            txn.set(row, b"n", b"%d" % n)
        return n
    return fn


def counters(client: Client) -> list[bytes | None]:
    txn = client.begin()
    return [txn.get(row, b"n") for row in ROWS]


@pytest.mark.parametrize("one_phase", [False, True], ids=["two-phase", "one-phase"])
@pytest.mark.parametrize("failpoint", ["commit.after_commit_primary",
                                       "commit.after_commit_secondary"])
@pytest.mark.parametrize("kind", ["embedded", "remote"])
def test_an_error_of_the_commit_step_after_its_commit_point_is_no_failure(
        tmp_path: Path, kind: str, failpoint: str, one_phase: bool) -> None:
    """The step raises after the commit point (where it runs: in this process, or at the
    node, whose answer is then an INTERNAL error): the transaction committed, so the
    commit answers its commit_ts, and ``run`` runs the function once."""
    with serve(tmp_path / "node") as served, \
            counter_client(kind, tmp_path, served, one_phase=one_phase) as client:
        runs: list[int] = []
        failpoints.enable(failpoint, "raise")
        got = client.run(increment(runs))
        failpoints.reset()
        assert got == 1 and len(runs) == 1, runs
        assert counters(client) == [b"1"] * 3
        got = client.run(increment(runs))
        assert got == 2 and counters(client) == [b"2"] * 3


@pytest.fixture
def held_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Hold the first hit of failpoint ``state["name"]`` (where the step runs) until
    ``state["release"]`` is set; ``state["held"]`` is set while it is held, ``state["done"]``
    once it went on."""
    state: dict[str, Any] = {"name": None, "held": threading.Event(),
                             "release": threading.Event(), "done": threading.Event()}
    hit = failpoints.hit
    first = [True]

    def hook(name: str) -> None:
        if name == state["name"] and first[0]:
            first[0] = False
            state["held"].set()
            assert state["release"].wait(WAIT)
            state["done"].set()
        hit(name)

    monkeypatch.setattr(failpoints, "hit", hook)
    yield state
    state["release"].set()


@pytest.mark.parametrize("failpoint,one_phase,attempts", [
    ("commit.before_commit_primary", False, 2),  # the reply lost before the commit point
    ("commit.after_commit_primary", False, 1),   # ... after it
    ("commit.after_commit_primary", True, 1),
], ids=["two-phase-before", "two-phase-after", "one-phase-after"])
def test_a_commit_past_its_deadline_is_decided_not_guessed(
        tmp_path: Path, held_at: dict[str, Any], failpoint: str, one_phase: bool,
        attempts: int) -> None:
    """The node holds the commit step past the client's deadline (DEADLINE_EXCEEDED): the
    client rolls the primary back if still locked and reads the fate; the function runs
    again only if its first run did not commit, and the counter moves exactly once."""
    with serve(tmp_path / "node") as served, \
            counter_client("remote", tmp_path, served, one_phase=one_phase,
                           timeout=0.5) as client:
        held_at["name"] = failpoint
        runs: list[int] = []
        got = client.run(increment(runs))
        assert held_at["held"].is_set(), "the step was held"
        held_at["release"].set()
        assert held_at["done"].wait(WAIT)
        assert got == 1 and len(runs) == attempts, runs
        assert counters(client) == [b"1"] * 3

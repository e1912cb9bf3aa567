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

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import plyvel
import pytest

from bigtable_lite import MutationResult, RowMutation, RowRead
from percolator import failpoints, layout, records
from percolator._backend import CommitOutcome, CommitRequest
from percolator._local import LocalBackend
from percolator._node_client import NodeClient

from .steps import must_prewrite, new_txn
from .test_node_batch import WAIT, hold_first_then, serve

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

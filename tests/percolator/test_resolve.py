"""Lock resolution, driven phase by phase: roll forward, roll back, seal, batch, wait."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from bigtable_lite import ALL_TIME, MutationResult, RowMutation, ScanRequest
from percolator import (
    Client,
    CommitConflict,
    LockWaitTimeout,
    committer,
    layout,
    mutations,
    records,
)
from percolator.clock import FakeClock
from percolator.committer import CommitPlan
from percolator.txn_status import COMMITTED, ROLLED_BACK, check_txn_status

ROWS = [b"row%04d" % i for i in range(1000)]
TTL = 2.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(tmp_path: Path, clock: FakeClock) -> Client:
    with Client.embedded(tmp_path / "d", lock_ttl=TTL, clock=clock) as c:
        yield c


def locked_transaction(client: Client, rows: list[bytes], value: bytes = b"v"
                       ) -> tuple[CommitPlan, list[int]]:
    """Prewrite every row of a transaction, as a client that then stalls or dies would."""
    start_ts = client.oracle.get_timestamp()
    writes = {(row, b"c"): (records.PUT, value) for row in rows}
    plan = committer.plan(client.ctx, start_ts, writes, set())
    locked: list[int] = []
    committer.lock_parts(client.ctx, plan, [0], locked)
    committer.lock_parts(client.ctx, plan, list(range(1, len(plan.parts))), locked)
    assert len(locked) == len(plan.parts)
    return plan, locked


def scan_values(client: Client) -> dict[bytes, bytes]:
    return {row: value for row, _, value in client.begin().scan(columns=[b"c"])}


def test_thousand_stranded_locks_of_a_dead_transaction_cost_one_status_check(
        client: Client, clock: FakeClock) -> None:
    locked_transaction(client, ROWS)
    clock.advance(TTL + 1)  # the owner died: its primary lock expires
    checks = client.resolver.status_checks
    assert scan_values(client) == {}
    assert client.resolver.status_checks - checks == 1
    assert client.resolver.resolved_locks >= len(ROWS) - 1
    with client.transaction() as txn:  # the cells can be written again
        txn.set(ROWS[500], b"c", b"again")
    assert scan_values(client) == {ROWS[500]: b"again"}


def test_committed_primary_rolls_all_secondaries_forward(client: Client) -> None:
    plan, _ = locked_transaction(client, ROWS, b"x" * 300)  # values in the data column
    committer.commit_primary(client.ctx, plan, client.oracle.get_timestamp())
    # The client "dies" before its secondaries: readers roll them forward, no waiting.
    checks = client.resolver.status_checks
    values = scan_values(client)
    assert values == {row: b"x" * 300 for row in ROWS}
    assert client.resolver.status_checks - checks <= 1
    assert scan_values(client) == values  # and they stay committed


def test_delayed_prewrite_and_commit_of_a_rolled_back_primary_fail(
        client: Client, clock: FakeClock) -> None:
    plan, _ = locked_transaction(client, ROWS[:2])
    prow, pcol = plan.primary
    clock.advance(TTL + 1)
    status = check_txn_status(client.store, client.table, prow, pcol, plan.start_ts,
                              clock.now_ms())
    assert status.state == ROLLED_BACK
    # The dead client's requests arrive late: neither may succeed.
    again = mutations.prewrite(client.table, prow, plan.parts[0][1], plan.start_ts, plan.primary,
                               clock.now_ms() + 10_000)
    assert not client.store.mutate_rows([again])[0].applied
    late_commit = mutations.commit(client.table, prow, [(pcol, records.PUT, b"v")],
                                   plan.start_ts, client.oracle.get_timestamp(),
                                   primary_column=pcol)
    assert not client.store.mutate_rows([late_commit])[0].applied
    assert scan_values(client) == {}


def test_a_primary_never_locked_is_sealed(client: Client, clock: FakeClock) -> None:
    start_ts = client.oracle.get_timestamp()
    status = check_txn_status(client.store, client.table, b"p", b"c", start_ts, clock.now_ms())
    assert status.state == ROLLED_BACK
    cell = mutations.CellWrite(b"c", records.PUT, b"v")
    late = mutations.prewrite(client.table, b"p", [cell], start_ts, (b"p", b"c"),
                              clock.now_ms() + 10_000)
    assert not client.store.mutate_rows([late])[0].applied


def test_commit_is_idempotent_and_status_is_cached(client: Client) -> None:
    plan, _ = locked_transaction(client, ROWS[:3])
    commit_ts = client.oracle.get_timestamp()
    committer.commit_primary(client.ctx, plan, commit_ts)
    committer.commit_secondaries(client.ctx, plan, commit_ts)
    committer.commit_secondaries(client.ctx, plan, commit_ts)  # a retry changes nothing
    status = client.resolver.status(*plan.primary, plan.start_ts)
    assert (status.state, status.commit_ts) == (COMMITTED, commit_ts)
    checks = client.resolver.status_checks
    client.resolver.status(*plan.primary, plan.start_ts)
    assert client.resolver.status_checks == checks
    assert scan_values(client) == {row: b"v" for row in ROWS[:3]}


def test_reader_gives_up_on_a_live_lock_after_its_wait_limit(tmp_path: Path) -> None:
    clock = FakeClock()
    with Client.embedded(tmp_path / "d", lock_ttl=60.0, clock=clock) as client:
        client.ctx.lock_wait_timeout = 1.0
        plan, _ = locked_transaction(client, ROWS[:2])
        client.ctx.keeper.hold(plan.primary[0], plan.primary[1], plan.start_ts,
                               plan.parts[0][1][0], plan.expires_at_ms)
        with pytest.raises(LockWaitTimeout):
            client.begin().get(ROWS[1], b"c")
        # Nothing was rolled back: the owner can still commit.
        commit_ts = client.oracle.get_timestamp()
        committer.commit_primary(client.ctx, plan, commit_ts)
        assert client.begin().get(ROWS[1], b"c") == b"v"


def conflicting_on_the_primary(client: Client) -> CommitPlan:
    """A transaction writing a (its primary) and b, and a commit to a after its start."""
    start_ts = client.oracle.get_timestamp()
    with client.transaction() as other:
        other.set(b"a", b"c", b"other")
    writes = {(row, b"c"): (records.PUT, b"mine") for row in (b"a", b"b")}
    return committer.plan(client.ctx, start_ts, writes, set())


def lock_cells(client: Client) -> list[tuple[bytes, bytes]]:
    return [(row.row, cell.column) for row in client.store.scan(ScanRequest(
        client.table, None, None, (), (), ALL_TIME, 0)) for cell in row.cells
        if cell.column.startswith(layout.LOCK)]


def test_a_failed_primary_prewrite_leaves_no_secondary_lock(client: Client) -> None:
    plan = conflicting_on_the_primary(client)
    with pytest.raises(CommitConflict):
        committer.commit_transaction(client.ctx, plan.start_ts,
                                     {(b"a", b"c"): (records.PUT, b"mine"),
                                      (b"b", b"c"): (records.PUT, b"mine")}, set())
    assert lock_cells(client) == [], "the secondary locked beside the primary is rolled back"
    assert client.begin().get_many([(b"a", b"c"), (b"b", b"c")]) == {
        (b"a", b"c"): b"other", (b"b", b"c"): None}


def test_a_dead_writers_secondary_beside_a_failed_primary_is_rolled_back_at_once(
        client: Client, clock: FakeClock) -> None:
    plan = conflicting_on_the_primary(client)
    locked: list[int] = []
    with pytest.raises(CommitConflict):  # one store call: the primary fails, b is locked
        committer.lock_parts(client.ctx, plan, [0, 1], locked)
    assert locked == [1] and lock_cells(client) == [(b"b", layout.lock_column(b"c"))]
    # The writer dies here.  A reader finds b locked and its primary without a trace:
    # it seals the primary and rolls b back, without waiting for b's TTL (clock unmoved).
    assert client.begin().get(b"b", b"c") is None
    assert lock_cells(client) == []
    late = mutations.prewrite(client.table, b"a", plan.parts[0][1], plan.start_ts, plan.primary,
                              clock.now_ms() + 10_000)
    assert not client.store.mutate_rows([late])[0].applied, "the sealed primary stays dead"


class SealRace:
    """A store on which the writer locks and commits its primary just before a reader's
    seal of it arrives: the race between check_txn_status's read and its seal."""

    def __init__(self, client: Client, plan: CommitPlan) -> None:
        self.inner = client.store
        self.limits = client.store.limits
        self.client, self.plan = client, plan
        self.raced = False

    def read_rows(self, reads):  # type: ignore[no-untyped-def]
        return self.inner.read_rows(reads)

    def mutate_rows(self, rows, *, sync=False):  # type: ignore[no-untyped-def]
        seal = layout.rollback_column(self.plan.primary[1])
        if not self.raced and any(getattr(m, "column", None) == seal
                                  for r in rows for m in r.mutations):
            self.raced = True  # the writer gets there first
            locked: list[int] = []
            committer.lock_parts(self.client.ctx, self.plan, [0], locked)
            committer.commit_primary(self.client.ctx, self.plan, self.client.oracle.get_timestamp())
        return self.inner.mutate_rows(rows, sync=sync)


def test_a_seal_never_marks_a_primary_committed_after_the_check_read_it(client: Client) -> None:
    start_ts = client.oracle.get_timestamp()
    writes = {(row, b"c"): (records.PUT, b"v") for row in (b"a", b"b")}
    plan = committer.plan(client.ctx, start_ts, writes, set())
    locked: list[int] = []
    committer.lock_parts(client.ctx, plan, [1], locked)  # b locked, the primary not yet
    race = SealRace(client, plan)
    status = check_txn_status(race, client.table, *plan.primary, start_ts,  # type: ignore[arg-type]
                              client.clock.now_ms())
    assert race.raced
    assert status.state == COMMITTED, "the writer committed between the read and the seal"
    assert scan_values(client) == {b"a": b"v", b"b": b"v"}


def test_a_primary_behind_anothers_write_is_rolled_back_for_good(client: Client) -> None:
    start_ts = client.oracle.get_timestamp()
    with client.transaction() as other:  # commits the primary's cell after start_ts
        other.set(b"a", b"c", b"other")
    status = check_txn_status(client.store, client.table, b"a", b"c", start_ts,
                              client.clock.now_ms())
    assert status.state == ROLLED_BACK
    cell = mutations.CellWrite(b"c", records.PUT, b"late")
    late = mutations.prewrite(client.table, b"a", [cell], start_ts, (b"a", b"c"),
                              client.clock.now_ms() + 10_000)
    assert not client.store.mutate_rows([late])[0].applied, "its primary can never be locked"


def test_a_primary_blocked_beside_locked_secondaries_is_not_retried(
        client: Client, clock: FakeClock) -> None:
    locked_transaction(client, [b"a"], b"dead")  # a writer that dies holding a lock on a
    clock.advance(TTL + 1)
    start_ts = client.oracle.get_timestamp()
    writes = {(row, b"c"): (records.PUT, b"mine") for row in (b"a", b"b")}
    with pytest.raises(CommitConflict, match="primary"):
        committer.commit_transaction(client.ctx, start_ts, writes, set())
    assert lock_cells(client) == [], "the dead lock resolved, the secondary rolled back"
    with client.transaction() as again:  # the next attempt goes through
        again.set(b"a", b"c", b"mine")
        again.set(b"b", b"c", b"mine")
    assert scan_values(client) == {b"a": b"mine", b"b": b"mine"}


class _CommitBeforeFirstMutation:
    """A store through which a status checker reaches the primary: before the checker's
    first mutation (its seal), ``meanwhile`` runs -- the race the seal must survive."""

    def __init__(self, inner: object, meanwhile: Callable[[], None]) -> None:
        self._inner = inner
        self._meanwhile: Callable[[], None] | None = meanwhile

    def mutate_rows(self, batch: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        if self._meanwhile is not None:
            run, self._meanwhile = self._meanwhile, None
            run()
        inner: Any = self._inner
        return inner.mutate_rows(batch, sync=sync)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_seal_never_lands_on_a_primary_committed_after_the_status_read(
        client: Client, clock: FakeClock) -> None:
    """A checker finds no trace of the primary (the writer's prewrite of it was blocked and
    is retried), then the writer locks and commits it, then the checker's seal arrives:
    the seal must fail, and the status is the commit (a marker and erased data beside a
    commit would let readers roll the other cells back: a torn transaction)."""
    start_ts = client.oracle.get_timestamp()
    long_value = b"L" * 300  # in the data column, which a seal used to erase
    writes: dict[tuple[bytes, bytes], tuple[bytes, bytes | None]] = {
        (b"a", b"c"): (records.PUT, long_value), (b"b", b"c"): (records.PUT, b"v")}
    plan = committer.plan(client.ctx, start_ts, writes, set())
    locked: list[int] = []
    committer.lock_parts(client.ctx, plan, [1], locked)  # the secondary only, so far
    commit_ts: list[int] = []

    def writer_locks_and_commits_the_primary() -> None:
        committer.lock_parts(client.ctx, plan, [0], locked)
        commit_ts.append(client.oracle.get_timestamp())
        committer.commit_primary(client.ctx, plan, commit_ts[0])

    racing = _CommitBeforeFirstMutation(client.store, writer_locks_and_commits_the_primary)
    status = check_txn_status(racing, client.table, b"a", b"c", start_ts, clock.now_ms())
    assert commit_ts, "the race did not run: the test proves nothing"
    assert (status.state, status.commit_ts) == (COMMITTED, commit_ts[0])
    assert client.begin().get_many([(b"a", b"c"), (b"b", b"c")]) == {
        (b"a", b"c"): long_value, (b"b", b"c"): b"v"}

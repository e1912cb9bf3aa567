"""mutate_atomic: every row's conditions hold and all rows are written in one batch, or
nothing is written; finish() runs under the rows' locks (a one-phase commit takes its
commit timestamp there)."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import plyvel
import pytest

from bigtable_lite import (
    MAX_TS,
    NOT_ATTEMPTED,
    Cell,
    InvalidArgument,
    LimitExceeded,
    Limits,
    LocalStore,
    MutationResult,
    NoVersionIn,
    Put,
    RowMutation,
    RowRead,
    StoreClosed,
    TimeRange,
    UncheckedStore,
    VersionAt,
)
from bigtable_lite._model import APPLIED

T = b"t"
N = b"t.notify"
JOIN_TIMEOUT = 60.0
SEED = 1606


@pytest.fixture(params=["checked", "unchecked"])
def store(request: pytest.FixtureRequest, tmp_path: Path
          ) -> Iterator[LocalStore | UncheckedStore]:
    with LocalStore(tmp_path / "d") as local:
        yield local if request.param == "checked" else local.unchecked()


def finish_never_called() -> Sequence[RowMutation]:
    raise AssertionError("finish() was called although a condition failed")


def must_be_free(store: LocalStore | UncheckedStore, rows: Sequence[bytes]) -> None:
    """Each row's lock is free: another thread's write to it completes (bounded)."""
    done: list[MutationResult] = []

    def write() -> None:
        done.extend(store.mutate_atomic([RowMutation(T, r, (Put(b"free", 1, b"x"),))
                                         for r in rows]))

    t = threading.Thread(target=write, daemon=True)
    t.start()
    t.join(timeout=JOIN_TIMEOUT)
    assert not t.is_alive(), "a row lock was left held"
    assert all(r.applied for r in done) and len(done) == len(rows)


def test_all_rows_are_written_with_what_finish_adds(store: LocalStore | UncheckedStore) -> None:
    store.put(T, b"a", b"lock", 0, b"mine")
    calls: list[int] = []

    def finish() -> Sequence[RowMutation]:
        calls.append(1)
        return [RowMutation(T, b"a", (Put(b"write", 9, b"committed"),)),
                RowMutation(N, b"a", (Put(b"col", 9, b""),))]

    results = store.mutate_atomic(
        [RowMutation(T, b"a", (Put(b"data", 5, b"A"),), (VersionAt(b"lock", 0, b"mine"),)),
         RowMutation(T, b"b", (Put(b"data", 5, b"B"),), (NoVersionIn(b"lock"),)),
         RowMutation(N, b"a", ())],  # a row reserved for finish()
        finish)
    assert results == [APPLIED] * 3 and calls == [1]
    assert store.get(T, b"a", b"data") == Cell(b"data", 5, b"A")
    assert store.get(T, b"b", b"data") == Cell(b"data", 5, b"B")
    assert store.get(T, b"a", b"write") == Cell(b"write", 9, b"committed")
    assert store.get(N, b"a", b"col") == Cell(b"col", 9, b"")
    assert [t.table for t in store.list_tablets()] == [T, N]


def test_without_finish_it_is_an_all_or_nothing_batch(store: LocalStore | UncheckedStore) -> None:
    rows = [RowMutation(T, b"r%d" % i, (Put(b"c", 1, b"%d" % i),), (NoVersionIn(b"c"),))
            for i in range(5)]
    assert store.mutate_atomic(rows) == [APPLIED] * 5
    assert store.mutate_atomic(rows[:1] + [RowMutation(T, b"new", (Put(b"c", 1, b"n"),))]) == [
        MutationResult(False, 0, Cell(b"c", 1, b"0")), NOT_ATTEMPTED]
    assert store.get(T, b"new", b"c") is None
    assert store.mutate_atomic([]) == []


def test_a_failing_row_writes_nothing_and_says_why(store: LocalStore | UncheckedStore) -> None:
    store.put(T, b"c", b"write", 7, b"newer")
    results = store.mutate_atomic(
        [RowMutation(T, b"a", (Put(b"data", 5, b"A"),), (NoVersionIn(b"lock"),)),
         RowMutation(T, b"b", (Put(b"data", 5, b"B"),), (VersionAt(b"lock", 0),)),
         RowMutation(T, b"c", (Put(b"data", 5, b"C"),),
                     (NoVersionIn(b"lock"), NoVersionIn(b"write", 5, MAX_TS))),
         RowMutation(T, b"d", (Put(b"data", 5, b"D"),))],
        finish_never_called)
    # Every row is checked: each failing row names its first failing condition and what
    # broke it; the rows whose conditions held are not attempted.
    assert results == [NOT_ATTEMPTED,
                       MutationResult(False, 0, None),
                       MutationResult(False, 1, Cell(b"write", 7, b"newer")),
                       NOT_ATTEMPTED]
    for row in (b"a", b"b", b"c", b"d"):
        assert store.get(T, row, b"data") is None
    must_be_free(store, [b"a", b"b", b"c", b"d"])


def test_a_row_twice_is_refused_before_anything(store: LocalStore | UncheckedStore) -> None:
    with pytest.raises(InvalidArgument, match="more than once"):
        store.mutate_atomic([RowMutation(T, b"a", (Put(b"c", 1, b"x"),)),
                             RowMutation(T, b"b", (Put(b"c", 1, b"y"),)),
                             RowMutation(T, b"a", ())], finish_never_called)
    assert store.get(T, b"a", b"c") is None and store.get(T, b"b", b"c") is None


class Boom(Exception):
    pass


def test_finish_raising_writes_nothing_and_releases_every_lock(
        store: LocalStore | UncheckedStore) -> None:
    rows = [b"r%03d" % i for i in range(50)]  # many stripes

    def finish() -> Sequence[RowMutation]:
        raise Boom("no commit timestamp")

    with pytest.raises(Boom):
        store.mutate_atomic([RowMutation(T, r, (Put(b"c", 1, r),), (NoVersionIn(b"c"),))
                             for r in rows], finish)
    assert all(store.get(T, r, b"c") is None for r in rows)
    must_be_free(store, rows)


@pytest.mark.parametrize("bad", [
    RowMutation(T, b"a", (Put(b"w", 2, b"x"),), (NoVersionIn(b"w"),)),  # a condition
    RowMutation(T, b"elsewhere", (Put(b"w", 2, b"x"),)),  # a row whose lock is not held
    RowMutation(N, b"a", (Put(b"w", 2, b"x"),)),  # the same row key, another table
])
def test_what_finish_may_not_add_is_refused_and_nothing_written(
        store: LocalStore | UncheckedStore, bad: RowMutation) -> None:
    with pytest.raises(InvalidArgument, match="finish"):
        store.mutate_atomic([RowMutation(T, b"a", (Put(b"c", 1, b"x"),))],
                            lambda: [RowMutation(T, b"a", (Put(b"w", 2, b"ok"),)), bad])
    assert store.read_row(T, b"a") == [] and store.read_row(b"t.notify", b"a") == []
    assert store.get(T, b"elsewhere", b"w") is None
    must_be_free(store, [b"a", b"elsewhere"])


def test_the_checked_store_checks_what_finish_returns(tmp_path: Path) -> None:
    with LocalStore(tmp_path, limits=Limits(max_value_bytes=4)) as store:
        with pytest.raises(LimitExceeded):
            store.mutate_atomic([RowMutation(T, b"a", (Put(b"c", 1, b"x"),))],
                                lambda: [RowMutation(T, b"a", (Put(b"w", 2, b"too long"),))])
        with pytest.raises(InvalidArgument):
            store.mutate_atomic([RowMutation(T, b"", (Put(b"c", 1, b"x"),))],
                                finish_never_called)
        assert store.read_row(T, b"a") == []


class SyncSpy:
    """The engine's LevelDB, recording the sync flag of every WriteBatch."""

    def __init__(self, db: plyvel.DB) -> None:
        self._db = db
        self.syncs: list[bool] = []

    def write_batch(self, *, sync: bool = False) -> plyvel.WriteBatch:
        self.syncs.append(sync)
        return self._db.write_batch(sync=sync)

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


@pytest.mark.parametrize("mode", ["none", "always"])
def test_sync_is_honoured(tmp_path: Path, mode: str) -> None:
    with LocalStore(tmp_path, sync=mode) as store:  # type: ignore[arg-type]
        spy = SyncSpy(store.engine._mutator._db)  # noqa: SLF001 - the one seam to LevelDB
        store.engine._mutator._db = spy  # type: ignore[assignment]  # noqa: SLF001
        row = [RowMutation(T, b"a", (Put(b"c", 1, b"x"),))]
        store.mutate_atomic(row)
        store.mutate_atomic(row, lambda: [RowMutation(T, b"a", (Put(b"c", 2, b"y"),))],
                            sync=True)
        assert spy.syncs == [mode == "always", True]
    with LocalStore(tmp_path) as again:
        assert again.read_row(T, b"a") == [Cell(b"c", 2, b"y"), Cell(b"c", 1, b"x")]


def test_closed_store_refuses_without_calling_finish(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    unchecked = store.unchecked()
    store.close()
    for s in (store, unchecked):
        with pytest.raises(StoreClosed):
            s.mutate_atomic([RowMutation(T, b"a", (Put(b"c", 1, b"x"),))], finish_never_called)


# --- a bank under racing threads ----------------------------------------------------------

ACCOUNTS = 6
START = 100
TRANSFERS_PER_THREAD = 150
WRITERS = 4


def balances(store: LocalStore) -> list[Cell]:
    """Every account's newest balance, from one snapshot."""
    rows = store.read_rows([RowRead(T, b"acct%d" % a, (b"bal",), (), TimeRange(), 1)
                            for a in range(ACCOUNTS)])
    return [cells[0] for cells in rows]


def test_transfers_racing_on_shared_rows_keep_the_total(tmp_path: Path) -> None:
    """Writers move money between a few accounts with optimistic checks ("no version of
    the balance newer than the one I read"), taking the new versions' timestamp in
    finish(); some finish() calls fail.  Readers sum every account from one snapshot
    meanwhile.  All-or-nothing writes keep the total in every snapshot, and timestamps
    taken under the locks keep each account's versions in the order they were written."""
    seed = SEED
    print(f"seed {seed}")
    clock = itertools.count(1)  # next() is atomic under the GIL
    applied = [0] * ACCOUNTS  # versions written per account, by the writers' results
    tally = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    with LocalStore(tmp_path) as store:
        store.mutate_rows([RowMutation(T, b"acct%d" % a, (Put(b"bal", 0, b"%d" % START),))
                           for a in range(ACCOUNTS)])

        def writer(me: int) -> None:
            rng = random.Random(seed * 100 + me)
            for _ in range(TRANSFERS_PER_THREAD):
                src, dst = rng.sample(range(ACCOUNTS), 2)
                cells = balances(store)
                seen = {a: cells[a] for a in (src, dst)}
                amount = rng.randint(0, int(seen[src].value))
                fail = rng.random() < 0.1

                def finish() -> Sequence[RowMutation]:  # called within this iteration
                    if fail:
                        raise Boom("oracle unreachable")
                    ts = next(clock)
                    new = {src: int(seen[src].value) - amount, dst: int(seen[dst].value) + amount}
                    return [RowMutation(T, b"acct%d" % a, (Put(b"bal", ts, b"%d" % new[a]),))
                            for a in (src, dst)]

                rows = [RowMutation(T, b"acct%d" % a, (),
                                    (VersionAt(b"bal", seen[a].ts, seen[a].value),
                                     NoVersionIn(b"bal", seen[a].ts + 1, MAX_TS)))
                        for a in (src, dst)]
                try:
                    results = store.mutate_atomic(rows, finish)
                except Boom:
                    continue
                if results[0].applied:
                    assert results == [APPLIED] * 2
                    with tally:
                        applied[src] += 1
                        applied[dst] += 1
                else:  # another transfer wrote an account since it was read
                    failed = [r for r in results if r != NOT_ATTEMPTED]
                    assert failed and all(r.failed_condition == 1 for r in failed), results

        def reader() -> None:
            while not stop.is_set():
                cells = balances(store)
                values = [int(c.value) for c in cells]
                assert sum(values) == ACCOUNTS * START, values
                assert min(values) >= 0, values

        def guarded(target: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    target()
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    errors.append(exc)
                    stop.set()
            return run

        writers = [threading.Thread(target=guarded(lambda me=me: writer(me)), daemon=True)
                   for me in range(WRITERS)]
        readers = [threading.Thread(target=guarded(reader), daemon=True) for _ in range(2)]
        for t in writers + readers:
            t.start()
        for t in writers:
            t.join(timeout=JOIN_TIMEOUT)
        stop.set()
        for t in readers:
            t.join(timeout=JOIN_TIMEOUT)
        assert not any(t.is_alive() for t in writers + readers), "a thread is stuck"
        if errors:
            raise errors[0]
        assert sum(int(c.value) for c in balances(store)) == ACCOUNTS * START
        assert sum(applied) > 0
        # Replay in timestamp order: each transfer wrote two accounts at one timestamp,
        # above the versions it read, and kept their sum.  A timestamp taken before the
        # locks could land below a version written meanwhile, and the replay would not add up.
        by_ts: dict[int, dict[int, int]] = {}
        for a in range(ACCOUNTS):
            versions = store.read_row(T, b"acct%d" % a, columns=[b"bal"])
            assert len(versions) == 1 + applied[a]
            for v in versions:
                by_ts.setdefault(v.ts, {})[a] = int(v.value)
        current = by_ts.pop(0)
        assert current == {a: START for a in range(ACCOUNTS)}
        for ts in sorted(by_ts):
            written = by_ts[ts]
            assert len(written) == 2, (ts, written)
            assert sum(written.values()) == sum(current[a] for a in written), (ts, written)
            current.update(written)
        assert current == {a: int(c.value) for a, c in enumerate(balances(store))}

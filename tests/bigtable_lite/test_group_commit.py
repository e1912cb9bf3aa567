"""Group commit: concurrent synced writes share one fsync, each caller's batch stays
atomic, and a caller returns only once the write holding its batch is done."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import plyvel

from bigtable_lite import Cell, LocalStore, Put, RowMutation
from bigtable_lite._group_commit import GroupCommit, GroupStats

T = b"t"
WAIT = 60.0  # bound on every wait
CALLERS = 8


class HeldWrites:
    """The engine's LevelDB, whose first synced write waits for ``release``; records the
    keys of every synced write."""

    def __init__(self, db: plyvel.DB) -> None:
        self._db = db
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail_later = False  # synced writes after the first raise
        self.synced: list[list[bytes]] = []

    def write_batch(self, *, sync: bool = False) -> object:
        return _Batch(self, self._db.write_batch(sync=sync), sync)

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


class _Batch:
    def __init__(self, spy: HeldWrites, wb: plyvel.WriteBatch, sync: bool) -> None:
        self._spy, self._wb, self._sync, self._keys = spy, wb, sync, list[bytes]()

    def put(self, key: bytes, value: bytes) -> None:
        self._keys.append(key)
        self._wb.put(key, value)

    def delete(self, key: bytes) -> None:
        self._keys.append(key)
        self._wb.delete(key)

    def write(self) -> None:
        if self._sync:
            first = not self._spy.synced
            self._spy.synced.append(self._keys)
            if first:
                self._spy.entered.set()
                assert self._spy.release.wait(WAIT)
            elif self._spy.fail_later:
                raise OSError("disk full")
        self._wb.write()


def wait_until(predicate: object, what: str) -> None:
    """Bounded wait for a state another thread reaches (no event to wait on)."""
    deadline = time.monotonic() + WAIT
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_writes_queued_behind_a_write_share_the_next_fsync(tmp_path: Path) -> None:
    """One caller's synced write is held in LevelDB; seven more callers queue meanwhile.
    All seven are written by one synced write (counted: two fsyncs for eight batches),
    none returns before that write is done, and each batch is whole after reopening."""
    with LocalStore(tmp_path, sync="always") as store:
        mutator = store.engine._mutator  # noqa: SLF001 - the seam to LevelDB
        spy = HeldWrites(mutator._db)  # noqa: SLF001
        mutator._db = spy  # type: ignore[assignment]  # noqa: SLF001
        group: GroupCommit = mutator._group  # noqa: SLF001
        group._db = spy  # type: ignore[assignment]  # noqa: SLF001
        before = group.stats()
        returned: list[int] = []
        errors: list[BaseException] = []

        def commit(i: int) -> None:
            try:
                row = b"r%d" % i
                store.mutate_atomic([RowMutation(T, row, (Put(b"a", 1, row),)),
                                     RowMutation(T, row + b"-mirror", (Put(b"b", 1, row),))])
                returned.append(i)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        first = threading.Thread(target=commit, args=(0,))
        first.start()
        assert spy.entered.wait(WAIT)
        others = [threading.Thread(target=commit, args=(i,)) for i in range(1, CALLERS)]
        for t in others:
            t.start()
        wait_until(lambda: group.waiting() == CALLERS - 1, "the callers to queue")
        assert returned == [], "a caller returned before its write was done"
        spy.release.set()
        for t in [first, *others]:
            t.join(WAIT)
            assert not t.is_alive()
        assert errors == []
        after = group.stats()
        assert (after.writes - before.writes, after.batches - before.batches) == (2, CALLERS)
        assert len(spy.synced) == 2
        assert sorted(len(keys) for keys in spy.synced) == [2, 2 * (CALLERS - 1)]
    with LocalStore(tmp_path) as again:
        for i in range(CALLERS):
            row = b"r%d" % i
            assert again.read_row(T, row) == [Cell(b"a", 1, row)]
            assert again.read_row(T, row + b"-mirror") == [Cell(b"b", 1, row)]


def test_a_failed_group_write_fails_every_caller_of_the_group(tmp_path: Path) -> None:
    """The queued callers' group write raises: each of them gets the error, nothing of
    theirs is written, and the next write goes through."""
    with LocalStore(tmp_path, sync="always") as store:
        mutator = store.engine._mutator  # noqa: SLF001
        group: GroupCommit = mutator._group  # noqa: SLF001
        spy = HeldWrites(mutator._db)  # noqa: SLF001
        group._db = spy  # type: ignore[assignment]  # noqa: SLF001
        outcomes: dict[int, str] = {}

        def commit(i: int) -> None:
            try:
                store.mutate_row(RowMutation(T, b"r%d" % i, (Put(b"a", 1, b"x"),)))
                outcomes[i] = "ok"
            except OSError as exc:
                outcomes[i] = str(exc)

        first = threading.Thread(target=commit, args=(0,))
        first.start()
        assert spy.entered.wait(WAIT)
        others = [threading.Thread(target=commit, args=(i,)) for i in (1, 2, 3)]
        for t in others:
            t.start()
        wait_until(lambda: group.waiting() == 3, "the callers to queue")
        spy.fail_later = True
        spy.release.set()
        for t in [first, *others]:
            t.join(WAIT)
            assert not t.is_alive()
        spy.fail_later = False
        assert outcomes == {0: "ok", 1: "disk full", 2: "disk full", 3: "disk full"}
        assert [store.read_row(T, b"r%d" % i) for i in (1, 2, 3)] == [[], [], []]
        store.mutate_row(RowMutation(T, b"r1", (Put(b"a", 2, b"y"),)))
        assert store.read_row(T, b"r1") == [Cell(b"a", 2, b"y")]


def test_concurrent_committers_share_fsyncs(tmp_path: Path) -> None:
    """Eight threads of synced check-and-mutates on their own rows: fewer fsyncs than
    batches (counted), and every write is there."""
    per_thread = 40
    with LocalStore(tmp_path, sync="always") as store:
        before = store.engine._mutator.sync_stats()  # noqa: SLF001
        start = threading.Barrier(CALLERS)

        def work(t: int) -> None:
            start.wait(WAIT)
            for i in range(per_thread):
                store.mutate_atomic([RowMutation(T, b"%d-%d" % (t, i), (Put(b"a", 1, b"x"),))])

        threads = [threading.Thread(target=work, args=(t,)) for t in range(CALLERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
            assert not t.is_alive()
        after = store.engine._mutator.sync_stats()  # noqa: SLF001
        shared = GroupStats(after.writes - before.writes, after.batches - before.batches)
        assert shared.batches == CALLERS * per_thread
        assert shared.writes < shared.batches, shared
        assert len(list(store.scan_rows(T))) == CALLERS * per_thread

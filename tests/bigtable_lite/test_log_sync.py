"""Group commit under ``sync="always"`` (``bigtable_lite._log_sync``): the deferring
thread's writes skip their fsync and are counted; a pass fsyncs every log file and
covers them; a reply of another thread (a gRPC call) waits for a pass that covers what
it read; a failed pass refuses what would need one."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bigtable_lite import Cell, LocalStore, Put, RowMutation, Unavailable, _engine
from bigtable_lite._datadir import LEVELDB_DIR
from bigtable_lite._leveldb import plyvel
from bigtable_lite.remote import RemoteStore
from bigtable_lite.server import build_server, stop_server

T = b"t"
WAIT = 30.0


def put(row: bytes, ts: int, value: bytes = b"v") -> RowMutation:
    return RowMutation(T, row, (Put(b"c", ts, value),))


class SyncSpy:
    """The engine's LevelDB, recording the sync flag of every write."""

    def __init__(self, db: plyvel.DB) -> None:
        self._db = db
        self.syncs: list[bool] = []

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self.syncs.append(sync)
        self._db.put(key, value, sync=sync)

    def write_batch(self, *, sync: bool = False) -> plyvel.WriteBatch:
        self.syncs.append(sync)
        return self._db.write_batch(sync=sync)

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    with LocalStore(tmp_path / "data", sync="always") as opened:
        yield opened


def test_the_deferring_threads_writes_skip_their_fsync_until_a_pass(
        store: LocalStore) -> None:
    log_sync = store.engine.log_sync
    assert log_sync is not None
    spy = SyncSpy(store.engine._mutator._db)  # noqa: SLF001 - the one seam to LevelDB
    store.engine._mutator._db = spy  # type: ignore[assignment]  # noqa: SLF001
    log_sync.defer_here()
    try:
        store.mutate_rows([put(b"a", 1)])  # one row: one put
        store.mutate_rows([put(b"a", 2), put(b"b", 2)])  # a batch
        store.mutate_atomic([put(b"c", 3)], lambda: [put(b"c", 4)])
        assert spy.syncs == [False, False, False]
        assert (log_sync.issued, log_sync.done, log_sync.durable) == (3, 3, 0)
        assert log_sync.pending() == 3
        passes = log_sync.passes
        # Another thread's write is synced by LevelDB, in its newest log only: it may
        # depend on a deferred write (it could have read it), so a pass comes first.
        other: list[bool] = []
        thread = threading.Thread(target=lambda: other.append(
            store.mutate_rows([put(b"e", 6)])[0].applied))
        thread.start()
        thread.join(WAIT)
        assert other == [True] and spy.syncs[-1] is True
        assert (log_sync.issued, log_sync.durable, log_sync.passes) == (3, 3, passes + 1)
        store.mutate_rows([put(b"d", 5)])  # deferred again
        assert (log_sync.issued, log_sync.durable) == (4, 3) and spy.syncs[-1] is False
        store.mutate_rows([put(b"d", 6)], sync=True)  # asked for: a pass, then synced
        assert spy.syncs[-1] is True and log_sync.issued == 4
        assert (log_sync.durable, log_sync.passes) == (4, passes + 2)
        store.mutate_rows([put(b"d", 7)], sync=True)  # nothing deferred waits: no pass
        assert log_sync.passes == passes + 2 and log_sync.pending() == 0
    finally:
        log_sync.stop_deferring()
    store.mutate_rows([put(b"f", 7)])
    assert spy.syncs[-1] is True and log_sync.issued == 4


def test_a_pass_fsyncs_every_log_file(store: LocalStore, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    """Not only the newest: LevelDB leaves an older log unsynced when it starts a new one
    (a stand-in for that older log here), and it holds writes until its memtable is
    compacted."""
    log_sync = store.engine.log_sync
    assert log_sync is not None
    leveldb = store.engine.path / LEVELDB_DIR
    older = leveldb / "000000.log"
    older.write_bytes(b"")
    synced: list[str] = []
    fdatasync = os.fdatasync

    def spy(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    log_sync.defer_here()
    try:
        store.mutate_rows([put(b"a", 1)])
        log_sync.sync_now()
        logs = sorted(name for name in os.listdir(leveldb) if name.endswith(".log"))
        assert len(logs) >= 2 and sorted(synced) == logs
        older.unlink()  # compacted away: the next pass syncs the others only
        synced.clear()
        store.mutate_rows([put(b"a", 2)])
        log_sync.sync_now()
        assert sorted(synced) == [name for name in logs if name != older.name]
    finally:
        log_sync.stop_deferring()


class HeldPass:
    """``before_fsync``: each pass waits for ``go`` (``entered`` set first); ``fail``: then
    raises an I/O error, as a failing disk's fsync does."""

    def __init__(self, *, fail: bool = False) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.fail = fail

    def __call__(self) -> None:
        self.entered.set()
        assert self.go.wait(WAIT)
        if self.fail:
            raise OSError(5, "Input/output error")


def test_a_grpc_reply_waits_for_a_pass_over_what_it_read(store: LocalStore) -> None:
    log_sync = store.engine.log_sync
    assert log_sync is not None
    held = HeldPass()
    log_sync.before_fsync = held
    server, port = build_server(store, "127.0.0.1:0", max_workers=4)
    server.start()
    read: list[list[Cell]] = []
    try:
        log_sync.defer_here()
        store.mutate_rows([put(b"a", 1, b"new")])  # deferred: not durable yet
        with RemoteStore(f"127.0.0.1:{port}") as remote:
            reader = threading.Thread(target=lambda: read.append(remote.read_row(T, b"a")))
            reader.start()
            assert held.entered.wait(WAIT), "the reply did not wait for a pass"
            assert read == [], "the value was answered before it was durable"
            held.go.set()
            reader.join(WAIT)
        assert read == [[Cell(b"c", 1, b"new")]]
        assert log_sync.durable == 1
        passes = log_sync.passes
        with RemoteStore(f"127.0.0.1:{port}") as remote:  # nothing deferred: no pass
            assert remote.read_row(T, b"a") == [Cell(b"c", 1, b"new")]
        assert log_sync.passes == passes
    finally:
        held.go.set()
        log_sync.stop_deferring()
        stop_server(server, grace=None)


def test_a_failed_pass_refuses_what_would_need_one(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "data", sync="always") as store:
        log_sync = store.engine.log_sync
        assert log_sync is not None
        held = HeldPass(fail=True)
        held.go.set()
        log_sync.before_fsync = held
        store.mutate_rows([put(b"a", 1, b"durable")])  # LevelDB's own fsync
        log_sync.defer_here()
        try:
            store.mutate_rows([put(b"a", 2, b"deferred")])
            with pytest.raises(Unavailable, match="could not be synced"):
                log_sync.sync_now()
            with pytest.raises(Unavailable, match="could not be synced"):
                store.mutate_rows([put(b"b", 3)])  # a write that would need a pass
            assert log_sync.issued == 1
        finally:
            log_sync.stop_deferring()
        with pytest.raises(Unavailable, match="could not be synced"):
            log_sync.settle()  # no longer the deferring thread: a gRPC reply, refused too
    with LocalStore(tmp_path / "data", sync="always") as again:  # opens; nothing lost
        assert again.read_row(T, b"a")[-1] == Cell(b"c", 1, b"durable")


def test_a_write_leveldb_syncs_in_a_new_log_waits_for_a_deferred_one_in_the_old(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LevelDB fsyncs only its newest log.  A deferred write P, then enough writes that
    LevelDB starts a new log: another thread's write S (which may depend on P: a
    secondary rolled forward after its primary's commit was read) makes a pass first,
    and if the pass fails S is refused, never durable without P."""
    monkeypatch.setattr(_engine, "WRITE_BUFFER_BYTES", 1 << 20)
    with LocalStore(tmp_path / "data", sync="always") as store:
        log_sync = store.engine.log_sync
        assert log_sync is not None
        leveldb = store.engine.path / LEVELDB_DIR

        def logs() -> list[str]:
            return sorted(name for name in os.listdir(leveldb) if name.endswith(".log"))

        log_sync.defer_here()
        try:
            store.mutate_rows([put(b"P", 1, b"primary")])
            first = logs()
            filler = 0
            while logs() == first:
                store.mutate_rows([put(b"f%d" % filler, 1, b"x" * 4000)])
                filler += 1
                assert filler < 10_000, "LevelDB never started a new log"
        finally:
            log_sync.stop_deferring()
        held = HeldPass(fail=True)
        held.go.set()
        log_sync.before_fsync = held
        refused: list[BaseException] = []

        def other() -> None:
            try:
                store.mutate_rows([put(b"S", 1, b"secondary")])
            except Unavailable as exc:
                refused.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(WAIT)
        assert held.entered.is_set() and len(refused) == 1, "S was written before a pass"
        assert store.read_row(T, b"S") == []


def test_an_io_error_of_a_write_stops_every_deferred_answer(store: LocalStore) -> None:
    """LevelDB's own fsync failed (a write on any thread): the lost pages might not be
    reported to a later pass through other descriptors, so nothing deferred is answered
    any more."""
    log_sync = store.engine.log_sync
    assert log_sync is not None

    class Failing(SyncSpy):
        def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
            raise plyvel.IOError("IO error: fsync: Input/output error")

    store.engine._mutator._db = Failing(store.engine._mutator._db)  # type: ignore[assignment]  # noqa: SLF001
    with pytest.raises(plyvel.IOError):
        store.mutate_rows([put(b"a", 1)])
    with pytest.raises(Unavailable, match="could not be synced"):
        log_sync.settle()
    log_sync.defer_here()
    try:
        with pytest.raises(Unavailable, match="could not be synced"):
            store.mutate_rows([put(b"b", 1)])
    finally:
        log_sync.stop_deferring()


def test_the_last_pass_comes_after_the_writes_in_flight_and_none_after_it(
        tmp_path: Path) -> None:
    """Closing waits for the writes in flight, then makes the last pass; a deferred
    write after it is refused (its answer must never go), and a failed last pass still
    releases LevelDB and the directory."""
    store = LocalStore(tmp_path / "data", sync="always")
    log_sync = store.engine.log_sync
    assert log_sync is not None
    log_sync.defer_here()
    try:
        store.mutate_rows([put(b"a", 1)])
        log_sync.close()  # as the store's close does, once the calls are done
        assert log_sync.durable == 1
        store.mutate_rows([put(b"a", 2)])  # in flight past the last pass
        with pytest.raises(Unavailable, match="closed before these writes were synced"):
            log_sync.sync_now()
    finally:
        log_sync.stop_deferring()
        store.close()
    store = LocalStore(tmp_path / "data", sync="always")
    log_sync = store.engine.log_sync
    assert log_sync is not None
    held = HeldPass(fail=True)
    held.go.set()
    log_sync.before_fsync = held
    log_sync.defer_here()
    try:
        store.mutate_rows([put(b"b", 3)])
    finally:
        log_sync.stop_deferring()
    with pytest.raises(Unavailable, match="could not be synced"):
        store.close()
    with LocalStore(tmp_path / "data", sync="always") as again:  # released: it opens
        assert again.read_row(T, b"a")[0] == Cell(b"c", 2, b"v")

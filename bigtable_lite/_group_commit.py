"""Group commit: concurrent callers' synced writes, written as one WriteBatch, one fsync.

Why not LevelDB's own writer queue alone: it merges the writers already waiting in it
when its leader begins, and when a write ends it hands the lead to the next waiter, a
thread that must first be woken and scheduled: on a busy machine the log then idles
between fsyncs while commits wait (measured: bench/README.md).  Here a write that ends
with callers queued behind it hands them to one thread, which writes each queue
gathered meanwhile as one WriteBatch, one fsync, without waiting to be woken between
them; a caller who finds the log idle writes at once, itself.

What a caller gets is unchanged: its mutations are written atomically (a group is one
WriteBatch, so one caller's batch is all there or all absent after a crash) and with
``sync=True``, and :meth:`GroupCommit.write` returns only after the write that holds
them -- its fsync and its insertion into the memtable -- is done.  LevelDB inserts a
batch into the memtable only after its fsync, so nothing a reader can see is less
durable than what a caller was told.  Callers hold their rows' stripe locks while they
wait, as they would around their own write, so the order of writes to one row is the
order of the callers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._leveldb import plyvel
from .errors import StoreClosed

Op = tuple[bytes, bytes | None]
"""A key and its new value, or None to delete it."""


class Ops:
    """A caller's batch, staged with a WriteBatch's ``put``/``delete`` (see ``_stage``)."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Op] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.items.append((key, value))

    def delete(self, key: bytes) -> None:
        self.items.append((key, None))


@dataclass(slots=True)
class _Pending:
    ops: Sequence[Op]
    # Held until the group's write is done: the caller waits by acquiring it again.
    gate: threading.Lock = field(default_factory=threading.Lock)
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Synced writes (fsyncs) and the callers' batches they carried, since opening."""

    writes: int
    batches: int


class GroupCommit:
    """The writer of a store's synced writes (thread-safe).

    A caller who finds the log idle writes its batch itself (no hand-off: one client
    pays nothing for the grouping).  Callers who arrive while a write is under way queue;
    when that write ends, the writer hands the queue to a thread of its own (started on
    first use), which writes each queue gathered meanwhile as one group until none is
    left, then leaves the log idle again.
    """

    def __init__(self, db: plyvel.DB, name: str = "group-commit") -> None:
        self._db = db
        self._name = name
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queue: list[_Pending] = []
        self._busy = False  # a write is under way; its writer will take the queue
        self._handed = False  # the queue belongs to the thread
        self._thread: threading.Thread | None = None
        self._closed = False
        self._writes = 0
        self._batches = 0

    def write(self, ops: Sequence[Op]) -> None:
        """Write ``ops`` atomically with an fsync, shared with concurrent callers; return
        once written (raises what the write raised)."""
        with self._lock:
            if self._closed:
                raise StoreClosed("the store is closed")
            if self._busy:
                pending = _Pending(ops)
                pending.gate.acquire()
                self._queue.append(pending)
            else:
                self._busy = True
                pending = None
        if pending is not None:
            pending.gate.acquire()  # released once the group holding it is written
            if pending.error is not None:
                raise pending.error
            return
        try:
            self._write_group((ops,))
        finally:
            with self._lock:
                if self._queue:
                    self._handed = True
                    if self._thread is None:
                        self._thread = threading.Thread(target=self._run, name=self._name,
                                                        daemon=True)
                        self._thread.start()
                    else:
                        self._work.notify()
                else:
                    self._busy = False

    def waiting(self) -> int:
        """Callers queued for the next group write."""
        with self._lock:
            return len(self._queue)

    def stats(self) -> GroupStats:
        with self._lock:
            return GroupStats(self._writes, self._batches)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread once what is queued is written.  Idempotent."""
        with self._lock:
            self._closed = True
            self._work.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _write_group(self, batches: Sequence[Sequence[Op]]) -> None:
        try:
            wb = self._db.write_batch(sync=True)
            for ops in batches:
                for key, value in ops:
                    if value is None:
                        wb.delete(key)
                    else:
                        wb.put(key, value)
            wb.write()
        finally:
            with self._lock:
                self._writes += 1
                self._batches += len(batches)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._handed:
                    if self._closed:
                        return
                    self._work.wait()
                group, self._queue = self._queue, []
                if not group:  # none arrived during the last write: the log is idle
                    self._handed = False
                    self._busy = False
                    continue
            error: BaseException | None = None
            try:
                self._write_group([pending.ops for pending in group])
            except BaseException as exc:  # every caller of the group gets it
                error = exc
            for pending in group:
                pending.error = error
                pending.gate.release()

"""Group commit for one thread that must not wait per write: its writes share fsyncs.

Under ``sync="always"`` every write is fsynced before it is acknowledged.  A thread that
serves many clients at once (the node's native event loop) cannot wait ~0.2 ms for each
of its writes' fsync, nor hand each write to another thread to wait there (that
thread's Python then fights it for the GIL, and every hand-over costs context
switches: it cost the node twice the CPU of a transfer).  So that one thread -- the
*deferring* thread, :meth:`LogSync.defer_here` -- writes without the fsync and holds
back what it would answer; once it has nothing more to execute at once it calls
:meth:`LogSync.sync_now`, one fsync for every write it made meanwhile, and answers.

Nothing a deferred write changed may be seen outside the process before it is durable
(a client would then read what a power loss takes back).  Hence the counters:
``issued`` counts the deferring thread's writes begun, ``done`` those finished,
``durable`` those an fsync has covered.  The deferring thread answers a request only
once ``durable`` has reached the ``issued`` it saw after executing it
(:meth:`pending`).  Other threads' answers wait the same way (:meth:`settle`, called
by the gRPC guard before each reply): they fsync themselves, unless a pass that began
after they asked has ended.  Their own writes keep their fsync inside LevelDB, after a
pass if deferred writes wait for one: LevelDB fsyncs only its newest log file, and such
a write may depend on a deferred one (it read it) still in an older file.

Why the log files are fsynced here instead of through an empty write with
``sync=True``: that write would queue in LevelDB's writer queue, and the deferring
thread's next write behind its fsync.  An fsync by another descriptor flushes the
same pages; LevelDB appends a record to the log before it makes it readable, so a
pass begun after a read covers whatever the read saw.  Every ``*.log`` file is synced,
not only the newest: when the memtable fills, LevelDB starts a new log without syncing
the old one, whose tail is durable only once its memtable is compacted into a
(synced) table file.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from .errors import StoreClosed, Unavailable

__all__ = ["LogSync"]

log = logging.getLogger(__name__)

_LOG_SUFFIX = ".log"  # LevelDB's write-ahead logs, NNNNNN.log (its info log is LOG)


class LogSync:
    """The fsyncs of one LevelDB directory's log, shared by a deferring thread's writes.

    Thread-safe.  ``issued`` and ``done`` change only on the deferring thread,
    ``durable`` under the lock; a plain read of them is a consistent int.
    """

    def __init__(self, leveldb_dir: Path) -> None:
        self._dir = leveldb_dir
        self._deferring: int | None = None  # the thread ident whose writes defer
        self.issued = 0
        self.done = 0
        self.durable = 0
        self.failed: Exception | None = None  # a pass failed: nothing deferred is durable
        self._lock = threading.Lock()  # one pass at a time; the descriptors below
        self._fds: dict[str, int] = {}  # the log files' descriptors, by name
        self._begun = 0  # passes begun
        self._ended = 0  # the number (by _begun) of the last pass that ended
        self.passes = 0  # passes made (a metric)
        self._closed = False  # the store closed: its last pass is made
        # Called before each pass (the node hooks its failpoint here).
        self.before_fsync: Callable[[], None] = lambda: None

    def defer_here(self) -> None:
        """Make the calling thread the deferring one: its writes the store's mode would
        fsync skip it; it answers only once :meth:`pending` is 0 or ``durable`` reached
        it, and calls :meth:`sync_now` for that."""
        self._deferring = threading.get_ident()

    def stop_deferring(self) -> None:
        """The deferring thread is done (what it wrote still needs a pass: ``close``)."""
        if self._deferring == threading.get_ident():
            self._deferring = None

    def defers(self) -> bool:
        """Whether the calling thread's writes skip their fsync."""
        return self._deferring == threading.get_ident()

    def pending(self) -> int:
        """0 if every deferred write is durable, else the count a pass must cover before
        what was read or written so far may be answered."""
        issued = self.issued
        return issued if issued > self.durable else 0

    def sync_now(self) -> None:
        """fsync the log now: on return, everything this thread has read or written is
        durable, and ``durable`` covers every deferred write done before the call.
        Shared: a pass that began after this call did, and has ended, does it.
        Unavailable if a pass ever failed (then the store must not go on)."""
        ticket = self._begun
        with self._lock:
            self.check()
            if self._ended > ticket:
                return
            if self._closed:  # after the last pass: a write still in flight then is lost
                if self.issued > self.durable:
                    self.failed = StoreClosed("the store closed before these writes were"
                                              " synced")
                    self.check()
                return
            self._begun += 1
            number = self._begun
            upto = self.done  # finished writes: each is in a log file by now
            try:
                self.before_fsync()
                self._sync_logs()
            except Exception as exc:  # noqa: BLE001 - an fsync error, or the node's failpoint
                log.critical("fsync of the store's log in %s failed: %s; refusing writes",
                             self._dir, exc)
                self.failed = exc
                self.check()
            self._ended = number
            self.passes += 1
            if upto > self.durable:
                self.durable = upto

    def settle(self) -> None:
        """For a thread other than the deferring one: return once what it has read is
        durable (at once when no deferred write waits).  Unavailable if that cannot be."""
        if self.issued <= self.durable and self.failed is None:
            return
        if self.defers():
            raise RuntimeError("the deferring thread answers after its own passes")
        self.sync_now()

    def fail(self, exc: Exception) -> None:
        """A write reported an I/O error (LevelDB's own fsync, on any thread): a later
        pass through other descriptors might not be told of the lost pages, so nothing
        deferred may be answered any more."""
        with self._lock:
            if self.failed is None:
                log.critical("a write to the store in %s failed: %s; refusing writes",
                             self._dir, exc)
                self.failed = exc

    def check(self) -> None:
        """Raise Unavailable if a pass failed (nothing deferred since may be trusted)."""
        if self.failed is not None:
            raise Unavailable(f"the store's log could not be synced ({self.failed}): the"
                              " node refuses writes; restart it") from self.failed

    def close(self) -> None:
        """A last pass if deferred writes wait for one; then release the descriptors."""
        try:
            if self.pending() and self.failed is None:
                self.sync_now()
        finally:
            with self._lock:
                self._closed = True
                for fd in self._fds.values():
                    os.close(fd)
                self._fds.clear()

    def _sync_logs(self) -> None:
        names = {name for name in os.listdir(self._dir) if name.endswith(_LOG_SUFFIX)}
        for gone in [name for name in self._fds if name not in names]:
            os.close(self._fds.pop(gone))  # compacted into a table file: durable there
        for name in sorted(names):
            fd = self._fds.get(name)
            if fd is None:
                try:
                    fd = os.open(self._dir / name, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue  # removed since it was listed: its memtable is in a table file
                self._fds[name] = fd
            os.fdatasync(fd)

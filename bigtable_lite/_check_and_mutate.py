"""Check-and-mutate: row mutations applied atomically, each under its row's stripe lock.

Atomicity of a row comes from two things: every check-and-mutate of a row holds that
row's stripe lock from its condition checks to the end of its write, and the row's
mutations go to LevelDB in one WriteBatch (one ``put`` when they are a single Put: same
atomicity, measured ~1 us cheaper).  Different rows take different stripes, and plyvel
releases the GIL inside LevelDB, so they proceed in parallel.  A call over several rows
takes their stripes in ascending order, so overlapping calls cannot deadlock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from ._conditions import first_failure
from ._datadir import DataDir
from ._encoding import KeyCache, version_key
from ._leveldb import plyvel
from ._log_sync import LogSync
from ._model import (
    APPLIED,
    NOT_ATTEMPTED,
    DeleteRange,
    DeleteVersion,
    MutationResult,
    Put,
    RowMutation,
)
from .errors import InvalidArgument, StoreClosed

STRIPES = 4096  # row lock stripes; a power of two
_STRIPE_MASK = STRIPES - 1


class Mutator:
    """Applies row mutations to one open data directory.

    ``always_sync``: fsync every write (the store's ``sync="always"``), else only those
    asked for with ``sync=True``.  ``log_sync``: under ``always_sync``, the writes of its
    deferring thread skip the fsync, counted there, unless asked for with ``sync=True``
    (``_log_sync``: that thread answers once the syncer's fsync has covered them).
    """

    def __init__(self, datadir: DataDir, keys: KeyCache, *, always_sync: bool,
                 log_sync: LogSync | None = None) -> None:
        self._dir = datadir
        self._db = datadir.db
        self._keys = keys
        self._sync = always_sync
        self._log_sync = log_sync if always_sync else None
        self._row_locks = [threading.Lock() for _ in range(STRIPES)]

    def mutate(self, mutations: Sequence[RowMutation], *, sync: bool = False
               ) -> list[MutationResult]:
        """Apply each row mutation atomically (conditions checked under the row's lock).

        Rows of one call share one WriteBatch; a row repeated in the call is applied
        after the earlier one, so its conditions see the earlier effects.
        """
        if len(mutations) == 1:
            return [self.mutate_row(mutations[0], sync=sync)]
        return self._mutate_counted(mutations, False, sync)

    def mutate_guarded(self, mutations: Sequence[RowMutation], *, sync: bool = False
                       ) -> list[MutationResult]:
        """:meth:`mutate`, but the rows after the first apply only if the first applied.

        Why: a transaction's commit point (its primary's row, conditional on its lock) and
        the commits of its other rows in one write, never the others without it.  If the
        first row fails, the others get :data:`NOT_ATTEMPTED` and nothing is written.
        """
        if len(mutations) == 1:
            return [self.mutate_row(mutations[0], sync=sync)]
        return self._mutate_counted(mutations, True, sync)

    def _mutate_counted(self, mutations: Sequence[RowMutation], guarded: bool, sync: bool
                        ) -> list[MutationResult]:
        """:meth:`_mutate`, its fsync skipped and counted if it is deferred."""
        deferred = self._deferred(sync)
        try:
            return self._mutate(mutations, guarded, sync or (self._sync and deferred is None))
        except plyvel.IOError as exc:
            self._write_failed(exc)
            raise
        finally:
            if deferred is not None:
                deferred.done += 1

    def _deferred(self, sync: bool) -> LogSync | None:
        """The log sync that counts this write, if it skips its fsync: a write the store's
        mode (not the caller) asks to sync, on the deferring thread.  Counted as issued
        here, before it is written (a reader that sees it must then wait for it); the
        caller counts it ``done`` once written.

        Any other write is fsynced by LevelDB, which syncs its newest log file only: if
        deferred writes wait for a pass, one is made first.  Why: this write may depend
        on one of them (a secondary rolled forward after its primary's commit was read),
        still in an older log file after LevelDB started a new one; a power loss must not
        keep the one without the other."""
        log_sync = self._log_sync
        if log_sync is None:
            return None
        if not sync and log_sync.defers():
            log_sync.check()
            log_sync.issued += 1
            return log_sync
        if log_sync.issued > log_sync.durable or log_sync.failed is not None:
            log_sync.sync_now()
        return None

    def _write_failed(self, exc: plyvel.IOError) -> None:
        """LevelDB reported an I/O error for a write (its fsync, say): under ``always``,
        nothing deferred may be answered any more (``LogSync.fail``)."""
        if self._log_sync is not None:
            self._log_sync.fail(exc)

    def _mutate(self, mutations: Sequence[RowMutation], guarded: bool, sync: bool
                ) -> list[MutationResult]:
        locks = self._row_locks
        row_prefix = self._keys.row_prefix
        columns = self._keys.columns
        prefixes = [row_prefix(m.table, m.row) for m in mutations]
        stripes = sorted({hash(rpfx) & _STRIPE_MASK for rpfx in prefixes})
        db = self._db
        self._dir.enter()
        try:
            for i in stripes:  # in ascending order, so concurrent batches cannot deadlock
                locks[i].acquire()
            try:
                results: list[MutationResult] = []
                wb = db.write_batch(sync=sync)
                staged: set[bytes] = set()
                # One iterator for the range conditions of every row: created after the
                # rows' locks were taken, it sees their current state (nobody else may
                # write them), until this call writes some of them itself.
                shared: list[plyvel.RawIterator] = []
                for m, rpfx in zip(mutations, prefixes):
                    if rpfx in staged:  # make earlier effects on this row visible first
                        wb.write()
                        wb = db.write_batch(sync=sync)
                        staged.clear()
                        if shared:
                            shared.pop().close()
                    result = (first_failure(db, columns, m.conditions, rpfx, shared)
                              if m.conditions else None)
                    if result is None:
                        muts = m.mutations
                        if len(muts) == 1 and type(muts[0]) is Put:  # the common case, inline
                            put = muts[0]
                            wb.put(version_key(rpfx + columns[put.column], put.ts), put.value)
                            staged.add(rpfx)
                        elif muts:
                            self._stage(m, rpfx, wb)
                            staged.add(rpfx)
                        result = APPLIED
                    elif guarded and not results:  # the first row failed: nothing else
                        return [result] + [NOT_ATTEMPTED] * (len(mutations) - 1)
                    results.append(result)
                if staged:
                    wb.write()
                return results
            finally:
                if shared:
                    shared.pop().close()
                for i in stripes:
                    locks[i].release()
        except plyvel.CorruptionError as exc:
            raise self._dir.corrupt(exc) from exc
        finally:
            self._dir.exit()

    def mutate_atomic(self, mutations: Sequence[RowMutation],
                      finish: Callable[[], Sequence[RowMutation]] | None = None, *,
                      sync: bool = False) -> list[MutationResult]:
        """All rows or none: every row's conditions hold, then all are written in one
        WriteBatch, with what ``finish()`` adds.

        Why: a one-phase commit checks the locks and write records of all its rows,
        takes its commit timestamp while nothing can change them, and writes data and
        commit records together.

        * Each row may appear once in ``mutations`` (:class:`InvalidArgument` otherwise,
          before anything is read): every row's conditions see the state before the call.
        * The stripe locks of all rows are taken (ascending, as :meth:`mutate` does) and
          every row's conditions checked.  If any fails, nothing is written and
          ``finish`` is not called: each failing row's result names its first failing
          condition and what was found, every other row gets :data:`NOT_ATTEMPTED`.
        * If all hold, ``finish()`` is called with the locks still held.  It returns
          more row mutations, unconditional (a condition is refused), on rows of
          ``mutations`` only (so their locks are held: list a row with no conditions
          and no mutations to reserve it, e.g. a notify row).  They are written after
          the rows' own mutations, in the same WriteBatch; every row gets
          :data:`APPLIED`.
        * If ``finish()`` raises, or returns something refused, nothing is written, every
          lock is released, and the exception propagates.
        """
        row_prefix = self._keys.row_prefix
        prefixes = [row_prefix(m.table, m.row) for m in mutations]
        declared = set(prefixes)
        if len(declared) != len(prefixes):
            raise InvalidArgument("a row appears more than once in an atomic write")
        deferred = self._deferred(sync)
        try:
            return self._atomic(mutations, finish, prefixes, declared,
                                sync or (self._sync and deferred is None))
        except plyvel.IOError as exc:
            self._write_failed(exc)
            raise
        finally:
            if deferred is not None:
                deferred.done += 1

    def _atomic(self, mutations: Sequence[RowMutation],
                finish: Callable[[], Sequence[RowMutation]] | None, prefixes: list[bytes],
                declared: set[bytes], sync: bool) -> list[MutationResult]:
        row_prefix = self._keys.row_prefix
        locks = self._row_locks
        stripes = sorted({hash(rpfx) & _STRIPE_MASK for rpfx in prefixes})
        self._dir.enter()
        try:
            for i in stripes:  # in ascending order, as every call over several rows
                locks[i].acquire()
            try:
                failed = self._failures(mutations, prefixes)
                if failed is not None:
                    return failed
                more = finish() if finish is not None else ()
                wb = self._db.write_batch(sync=sync)  # dropped unwritten if this raises
                staged: dict[bytes, set[int]] = {}  # a row's mutations may follow in ``more``
                for m, rpfx in zip(mutations, prefixes):
                    if m.mutations:
                        self._stage(m, rpfx, wb, staged)
                for m in more:
                    if m.conditions:
                        raise InvalidArgument("finish() returned a row mutation with"
                                              " conditions; only writes may follow the checks")
                    rpfx = row_prefix(m.table, m.row)
                    if rpfx not in declared:
                        raise InvalidArgument(
                            f"finish() wrote row {m.row!r} of table {m.table!r}, which is not"
                            " a row of the atomic write (list it to hold its lock)")
                    if m.mutations:
                        self._stage(m, rpfx, wb, staged)
                wb.write()
                return [APPLIED] * len(mutations)
            finally:
                for i in stripes:
                    locks[i].release()
        except plyvel.CorruptionError as exc:
            raise self._dir.corrupt(exc) from exc
        finally:
            self._dir.exit()

    def _failures(self, mutations: Sequence[RowMutation], prefixes: list[bytes]
                  ) -> list[MutationResult] | None:
        """None if every row's conditions hold, else a result per row: the failing ones'
        and NOT_ATTEMPTED (the caller holds the rows' locks)."""
        db = self._db
        columns = self._keys.columns
        shared: list[plyvel.RawIterator] = []  # one iterator for every range condition
        results: list[MutationResult | None] = []
        try:
            for m, rpfx in zip(mutations, prefixes):
                results.append(first_failure(db, columns, m.conditions, rpfx, shared)
                               if m.conditions else None)
        finally:
            if shared:
                shared.pop().close()
        if all(r is None for r in results):
            return None
        return [NOT_ATTEMPTED if r is None else r for r in results]

    def mutate_row(self, m: RowMutation, *, sync: bool = False) -> MutationResult:
        """One row: the common case of the transaction layer, kept short."""
        keys = self._keys
        rpfx = keys.row_prefix(m.table, m.row)
        lock = self._row_locks[hash(rpfx) & _STRIPE_MASK]  # the row's key prefix names it
        muts = m.mutations
        datadir = self._dir
        inflight = datadir.inflight
        deferred = self._deferred(sync) if self._log_sync is not None else None
        sync = sync or (self._sync and deferred is None)
        inflight.append(None)  # datadir.enter(), inline on this hot path
        try:
            if datadir.closed:
                raise StoreClosed(f"store at {datadir.path} is closed")
            with lock:
                if m.conditions:
                    failed = first_failure(self._db, keys.columns, m.conditions, rpfx)
                    if failed is not None:
                        return failed
                if len(muts) == 1 and type(muts[0]) is Put:  # no WriteBatch needed
                    put = muts[0]
                    self._db.put(version_key(rpfx + keys.columns[put.column], put.ts),
                                 put.value, sync=sync)
                elif muts:
                    wb = self._db.write_batch(sync=sync)
                    self._stage(m, rpfx, wb)
                    wb.write()
                return APPLIED
        except plyvel.CorruptionError as exc:
            raise datadir.corrupt(exc) from exc
        except plyvel.IOError as exc:
            self._write_failed(exc)
            raise
        finally:
            inflight.pop()  # datadir.exit(), inline
            if datadir.closed:
                datadir.wake()
            if deferred is not None:
                deferred.done += 1

    def _stage(self, m: RowMutation, rpfx: bytes, wb: plyvel.WriteBatch,
               staged: dict[bytes, set[int]] | None = None) -> None:
        """Add m's mutations to wb, in order (the caller holds the row's lock).

        ``staged``: the versions put into wb so far, by column prefix, when several row
        mutations of one row share wb (an atomic write's ``finish``).  A DeleteRange
        finds the stored versions with an iterator, which cannot see those: they are
        deleted from this record, as a DeleteVersion after a Put deletes it."""
        columns = self._keys.columns
        puts: dict[bytes, set[int]] = {} if staged is None else staged
        for mut in m.mutations:
            cpfx = rpfx + columns[mut.column]
            if type(mut) is Put:
                wb.put(version_key(cpfx, mut.ts), mut.value)
                puts.setdefault(cpfx, set()).add(mut.ts)
            elif type(mut) is DeleteVersion:
                wb.delete(version_key(cpfx, mut.ts))
                puts.get(cpfx, set()).discard(mut.ts)
            else:
                assert type(mut) is DeleteRange
                last = version_key(cpfx, mut.min_ts)
                it = self._db.raw_iterator(verify_checksums=True)
                try:
                    it.seek(version_key(cpfx, mut.max_ts))
                    while it.valid():
                        key = it.key()
                        if key > last or not key.startswith(cpfx):
                            break
                        wb.delete(key)
                        it.next()
                finally:
                    it.close()
                staged_here = puts.get(cpfx)
                if staged_here:
                    for ts in [t for t in staged_here if mut.min_ts <= t <= mut.max_ts]:
                        wb.delete(version_key(cpfx, ts))
                        staged_here.discard(ts)

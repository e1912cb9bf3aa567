"""Commit secondaries off the caller's critical path, batched across transactions.

Once the primary is committed the transaction is decided; its secondaries' commits
only tidy up (a reader meeting one of their locks rolls it forward through the
primary).  So over the network, ``commit()`` returns after the primary, and one
background thread per client commits pending secondaries of many transactions in
one store call.  ``flush()`` and ``close()`` wait (bounded) until all are written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from bigtable_lite import DEFAULT_LIMITS, Limits, RowMutation, StorageError, TabletStore

from . import failpoints
from .store_calls import settle_in_calls

log = logging.getLogger(__name__)


class SecondaryCommitter:
    def __init__(self, store: TabletStore, max_batch: int = 2000,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self._store = store
        self._max_batch = max_batch
        self._limits = limits
        self._pending: list[RowMutation] = []
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="percolator-secondaries",
                                        daemon=True)
        self._thread.start()
        self.batches = 0
        self.committed = 0

    def submit(self, commits: Sequence[RowMutation]) -> None:
        with self._cond:
            self._pending.extend(commits)
            self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted commit is written; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending and self._closed:
                    return
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
                self._busy = True
            try:
                settle_in_calls(self._store, self._limits, batch)  # cells not ours: skipped
                failpoints.hit("commit.after_commit_secondary")
                self.batches += 1
                self.committed += len(batch)
            except StorageError as exc:
                # Safe to drop: readers roll these locks forward through their primaries.
                log.warning("committing %d secondaries failed (%s); readers will roll them"
                            " forward", len(batch), exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout)

"""Batch limits: how many cells of a column a worker puts in one observer transaction now.

An observer's ``max_batch`` is the most.  A batch that lost a conflict, or met a
setback that is not the observer's fault, most likely collided with other transactions
on the same cells: its column's limit halves (to at most half the failed batch), so the
retry collides less, and every commit of the column doubles it again (up to the most):
one conflict costs one smaller commit, not a long climb back.  Per worker and in memory:
it decides performance, never correctness.

Batches stay as large as ``max_batch`` from the start: smaller first batches (a slow
start, or a cap while workers join) let handovers finish sooner but cost the node more
per paper than they saved (bench/README.md, bench_pipeline.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ._registry import Observer


class BatchLimits:
    """Current cells per transaction of each column whose observer batches (thread-safe)."""

    def __init__(self, observers: Iterable[Observer]) -> None:
        self._most: dict[bytes, int] = {}
        for obs in observers:
            if obs.max_batch > 1:
                assert isinstance(obs.column, bytes)
                self._most[obs.column] = obs.max_batch
        self._now = dict(self._most)
        self._lock = threading.Lock()

    @property
    def largest(self) -> int:
        """The largest ``max_batch`` of all (1 if no observer batches)."""
        return max(self._most.values(), default=1)

    def limit(self, column: bytes) -> int:
        """Cells of ``column`` one transaction may take now (1: no batches)."""
        return self._now.get(column, 1)

    def shrink(self, column: bytes, failed: int) -> None:
        """A batch of ``failed`` cells collided: halve, to at most half of it."""
        with self._lock:
            if column in self._now:
                self._now[column] = max(1, min(self._now[column], failed) // 2)

    def grow(self, column: bytes) -> None:
        """A transaction of ``column`` committed: twice as many, up to ``max_batch``."""
        now = self._now.get(column)
        if now is not None and now < self._most[column]:
            with self._lock:
                now = self._now[column]
                self._now[column] = min(self._most[column], 2 * now)

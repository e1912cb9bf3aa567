"""Coalesce concurrent store calls into batched calls (as TiKV's client batches commands).

One gRPC call costs ~250 us of server CPU whatever it carries, so a client whose
threads each send their own small calls tops out near a few thousand calls/s.
:class:`CoalescingStore` merges the ``read_rows`` and ``mutate_rows`` calls that
threads make at the same time into one call each: a caller joins the batch being
gathered; while ``max_in_flight`` batches are on the wire, new callers wait and go
together in the next one.  A lone caller goes at once, so latency does not suffer
when load is light.  Semantics are unchanged: reads of one batch share one
snapshot (they could anyway have been served in any order), and mutations stay
atomic per row, applied in arrival order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from bigtable_lite import (
    Cell,
    MutationResult,
    Row,
    RowMutation,
    RowRead,
    ScanRequest,
    TabletInfo,
    TabletStore,
)
from bigtable_lite.store import StoreOps

Req = TypeVar("Req")
Res = TypeVar("Res")

_WAIT_LIMIT = 600.0  # seconds; the underlying call has its own, shorter, deadline


class _Waiter(Generic[Req, Res]):
    __slots__ = ("items", "done", "batch", "results", "error")

    def __init__(self, items: Sequence[Req]) -> None:
        self.items = items
        self.done = threading.Event()
        self.batch: list[_Waiter[Req, Res]] | None = None  # set when promoted to send it
        self.results: list[Res] = []
        self.error: BaseException | None = None


class Coalescer(Generic[Req, Res]):
    """Run ``call`` on the merged items of concurrent ``submit``s; at most max_in_flight at once."""

    def __init__(self, call: Callable[[list[Req]], list[Res]], *, max_in_flight: int = 2,
                 max_items: int = 5000) -> None:
        self._call = call
        self._max_in_flight = max_in_flight
        self._max_items = max_items
        self._lock = threading.Lock()
        self._queue: list[_Waiter[Req, Res]] = []
        self._in_flight = 0
        self.calls = 0
        self.items = 0

    def _take(self) -> list[_Waiter[Req, Res]]:
        """Pop the next batch off the queue (caller holds the lock)."""
        batch: list[_Waiter[Req, Res]] = []
        size = 0
        queue = self._queue
        while queue and (not batch or size + len(queue[0].items) <= self._max_items):
            w = queue.pop(0)
            batch.append(w)
            size += len(w.items)
        return batch

    def submit(self, items: Sequence[Req]) -> list[Res]:
        me: _Waiter[Req, Res] = _Waiter(items)
        with self._lock:
            self._queue.append(me)
            batch = None
            if self._in_flight < self._max_in_flight:
                self._in_flight += 1
                batch = self._take()
        if batch is None:
            if not me.done.wait(_WAIT_LIMIT):
                raise TimeoutError("coalesced store call did not complete")
            batch = me.batch  # promoted: this thread sends the next batch
        if batch is not None:
            self._run(batch)
            # Hand the in-flight slot to the first waiter of the next batch, if any.
            with self._lock:
                nxt = self._take()
                if nxt:
                    nxt[0].batch = nxt
                    nxt[0].done.set()
                else:
                    self._in_flight -= 1
        if me.error is not None:
            raise me.error
        return me.results

    def _run(self, batch: list[_Waiter[Req, Res]]) -> None:
        merged: list[Req] = [item for w in batch for item in w.items]
        self.calls += 1
        self.items += len(merged)
        try:
            results = self._call(merged)
        except BaseException as exc:  # every caller of the batch gets the call's failure
            for w in batch:
                w.error = exc
                w.batch = None
                w.done.set()
            return
        pos = 0
        for w in batch:
            w.results = results[pos:pos + len(w.items)]
            pos += len(w.items)
            w.batch = None
            w.done.set()


class CoalescingStore(StoreOps):
    """A TabletStore whose concurrent point reads and mutations travel in shared calls."""

    def __init__(self, store: TabletStore, *, max_in_flight: int = 2) -> None:
        self.inner = store
        self._reads: Coalescer[RowRead, list[Cell]] = Coalescer(store.read_rows,
                                                                 max_in_flight=max_in_flight)
        self._mutations: Coalescer[RowMutation, MutationResult] = Coalescer(
            store.mutate_rows, max_in_flight=max_in_flight)

    def read_rows(self, reads: Sequence[RowRead]) -> list[list[Cell]]:
        return self._reads.submit(reads)

    def mutate_rows(self, mutations: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        if sync:
            return self.inner.mutate_rows(mutations, sync=True)
        return self._mutations.submit(mutations)

    def scan(self, request: ScanRequest) -> Iterator[Row]:
        return self.inner.scan(request)

    def list_tablets(self, table: bytes | None = None) -> list[TabletInfo]:
        return self.inner.list_tablets(table)

    def split_tablet(self, table: bytes, row: bytes) -> list[TabletInfo]:
        return self.inner.split_tablet(table, row)

    def close(self) -> None:
        self.inner.close()

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, c in (("read", self._reads), ("mutate", self._mutations)):
            out[f"{name}_calls"] = c.calls
            out[f"{name}_mean_batch"] = c.items / c.calls if c.calls else 0.0
        return out

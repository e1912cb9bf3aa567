"""Helpers of the garbage-collection tests: worlds with GC settings, what the store holds.

A GC world (:func:`gc_world`) is a ``steps.World`` whose backend -- the embedded
client's own, or the node's -- collects with the given life time, on a FakeClock (which
also judges lock expiry and the remote clients' leases), passes run by the test
(:meth:`World.client.collect_garbage`) unless an interval is given.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bigtable_lite import ALL_TIME, ScanRequest
from percolator import Client, layout, records
from percolator._local import LocalBackend
from percolator._node_client import NodeClient
from percolator.clock import Clock, FakeClock
from percolator.node import Node

from .steps import World

__all__ = ["AGGRESSIVE", "eventually", "garbage", "gc_node", "gc_world", "settle_reports",
           "versions"]

AGGRESSIVE = {"gc_life_time": 0.0, "gc_interval": 0.02}
"""GC beside a suite: every snapshot collectable at once, a pass every 20 ms."""
WAIT = 60.0


def eventually(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Wait (bounded) until ``condition()`` holds, re-checking every few milliseconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        pause.wait(0.005)


@contextmanager
def gc_node(path: Path, *, clock: Clock | None = None, life_time: float = 0.0,
            interval: float | None = None, lease: float = 30.0) -> Iterator[Node]:
    """A real node on 127.0.0.1 (port 0) collecting with these settings."""
    with Node(path, "127.0.0.1:0", clock=clock, gc_life_time=life_time, gc_interval=interval,
              gc_client_lease=lease) as node:
        yield node


@contextmanager
def gc_world(kind: str, path: Path, *, life_time: float = 0.0, interval: float | None = None,
             lease: float = 30.0, clock: FakeClock | None = None, **client_args: object
             ) -> Iterator[World]:
    """An embedded client, or a remote one of a node of its own, whose backend collects
    with ``life_time`` (passes every ``interval``; None: when the test asks), on
    ``clock`` (default a new FakeClock)."""
    clock = clock or FakeClock()
    if kind == "embedded":
        backend = LocalBackend.open(os.fspath(path), clock=clock, gc_life_time=life_time,
                                    gc_interval=interval)
        with Client(backend, clock=clock, **client_args) as client:  # type: ignore[arg-type]
            yield World(kind, client, backend)
        return
    with gc_node(path, clock=clock, life_time=life_time, interval=interval,
                 lease=lease) as node, \
            Client(NodeClient(node.address), clock=clock,
                   **client_args) as client:  # type: ignore[arg-type]
        yield World(kind, client, node.backend)


def settle_reports(client: Client) -> None:
    """A remote client reports its running transactions now (releasing the timestamps
    handed to it that it no longer holds); nothing to do embedded."""
    backend = client.backend
    if isinstance(backend, NodeClient):
        backend.report_snapshots(backend.snapshots.report(backend.safe_point))


def versions(client: Client, table: bytes | None = None) -> dict[tuple[bytes, bytes],
                                                               list[int]]:
    """Every stored version of the client's table: (row, store column) -> timestamps."""
    out: dict[tuple[bytes, bytes], list[int]] = {}
    for row in client.store.scan(ScanRequest(table or client.table, None, None, (), (),
                                             ALL_TIME, 0)):
        for cell in row.cells:
            out.setdefault((row.row, cell.column), []).append(cell.ts)
    return out


def garbage(client: Client, safe_point: int) -> list[str]:
    """What a pass at ``safe_point`` should have removed but is stored (empty: none).

    Per cell: at most one write record at or below the safe point, and it is a put; no
    rollback marker below it; no long value below it that no kept record points to.
    """
    found: list[str] = []
    cells: dict[tuple[bytes, bytes], dict[bytes, list[tuple[int, bytes]]]] = {}
    for row in client.store.scan(ScanRequest(client.table, None, None, (), (), ALL_TIME, 0)):
        for cell in row.cells:
            kinds = cells.setdefault((row.row, cell.column[1:]), {})
            kinds.setdefault(cell.column[:1], []).append((cell.ts, cell.value))
    for key, kinds in cells.items():
        writes = [(ts, records.decode_write(raw)) for ts, raw in kinds.get(layout.WRITE, [])]
        below = [(ts, w) for ts, w in writes if ts <= safe_point]
        if len(below) > 1 or any(w.kind == records.DELETE for _, w in below):
            found.append(f"{key}: write records at or below {safe_point}: "
                         f"{[(ts, w.kind) for ts, w in below]}")
        markers = [ts for ts, _ in kinds.get(layout.ROLLBACK, []) if ts < safe_point]
        if markers:
            found.append(f"{key}: rollback markers below {safe_point}: {markers}")
        pointed = {w.start_ts for _, w in writes if w.kind == records.PUT and w.value is None}
        slot = kinds.get(layout.LOCK)
        if slot:
            pointed.add(records.decode_lock(slot[0][1]).start_ts)
        orphans = [ts for ts, _ in kinds.get(layout.DATA, [])
                   if ts < safe_point and ts not in pointed]
        if orphans:
            found.append(f"{key}: long values nothing points to: {orphans}")
    return found


class CollectingBackend:
    """A Backend that runs a whole GC pass (``collect()``) before every step it passes on:
    garbage collection as aggressive as it gets, between any two steps of any test."""

    _STEPS = frozenset(("timestamps", "read", "scan", "prewrite", "commit", "commit_one_phase",
                        "resolve", "rollback", "check_txn_status", "heartbeat"))

    def __init__(self, inner: object, collect: Callable[[], object]) -> None:
        self._inner = inner
        self._collect = collect
        self.passes = 0

    def __getattr__(self, name: str) -> object:
        found = getattr(self._inner, name)
        if name not in self._STEPS:
            return found

        def step(*args: object, **kwargs: object) -> object:
            self._collect()
            self.passes += 1
            return found(*args, **kwargs)

        return step

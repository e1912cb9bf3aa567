"""Drive the transaction protocol one step at a time, the way production calls the steps.

TiKV's style: a test names a transaction (:class:`Txn`), then calls the
:class:`~percolator._backend.Backend` verbs a client's commit driver, a reader or a
resolver would call -- prewrite, commit, rollback, resolve, heartbeat,
check_txn_status -- through ``must_*`` helpers that assert the expected outcome.  They
take a Backend, so the same test drives an embedded client (``client.backend`` is a
``LocalBackend``) and a remote one (a ``NodeClient`` to a real node) alike.

:class:`World` is a client and the place its steps run (its ``LocalBackend``: the
client's own, or the node's), so a test can also reach the step context there -- the
status cache's counter, or a store hook (:func:`before_mutation`) that runs something
between a step's read and its write: the races the lock slot's conditions are for.

Add helpers at the end of the file (append-only: several test modules share it).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bigtable_lite import (
    ALL_TIME,
    Cell,
    MutationResult,
    RowMutation,
    RowRead,
    ScanRequest,
    TimeRange,
)
from percolator import Client, layout, records
from percolator._backend import (
    Backend,
    CommitOutcome,
    CommitRequest,
    Conflict,
    Key,
    Part,
    PrewriteRequest,
    TxnStatus,
)
from percolator._driver import calls, plan
from percolator._local import LocalBackend
from percolator._node_client import NodeClient
from percolator._steps import StepContext
from percolator._steps.check_txn_status import StatusCache
from percolator.clock import Clock, FakeClock
from percolator.node import Node
from percolator.records import Lock

__all__ = [
    "KINDS", "TTL_MS", "Txn", "World", "before_mutation", "fake_node_fixture",
    "lock_versions", "must_commit",
    "must_commit_fail", "must_heartbeat", "must_locked", "must_prewrite",
    "must_prewrite_conflict", "must_resolve", "must_rollback", "must_see", "must_see_locked",
    "must_status", "must_unlocked", "new_txn", "open_world", "running_node", "slot",
    "touches",
]

KINDS = ("embedded", "remote")
TTL_MS = 2_000
"""TTL of the locks the helpers write unless told otherwise."""

_tables = itertools.count(1)


# --- a transaction, named ------------------------------------------------------------------


@dataclass(frozen=True)
class Txn:
    """A transaction driven step by step: ``writes`` maps each cell to its value (None: a
    delete); the smallest cell is the primary, as the commit driver picks it."""

    table: bytes
    start_ts: int
    writes: Mapping[Key, bytes | None]
    primary: Key = field(init=False)

    def __post_init__(self) -> None:
        assert self.writes, "a transaction needs a cell"
        object.__setattr__(self, "primary", min(self.writes))

    @property
    def keys(self) -> list[Key]:
        return sorted(self.writes)

    @property
    def secondaries(self) -> list[Key]:
        return [k for k in self.keys if k != self.primary]

    def parts(self, keys: Iterable[Key] | None = None) -> list[Part]:
        """The parts of ``keys`` (default: every cell) as the driver plans them: sorted, so
        the primary, when among them, is the first part's first cell."""
        chosen = self.keys if keys is None else list(keys)
        unknown = [k for k in chosen if k not in self.writes]
        assert not unknown, f"cells not written by this transaction: {unknown}"
        return plan({k: (records.PUT if self.writes[k] is not None else records.DELETE,
                         self.writes[k]) for k in chosen})


def new_txn(backend: Backend, table: bytes, cells: Mapping[Key, bytes | None] | Iterable[Key],
            value: bytes | None = b"v", *, start_ts: int | None = None) -> Txn:
    """A transaction starting now (or at ``start_ts``) writing ``cells``: a mapping of
    values, or cells all given ``value``."""
    writes = dict(cells) if isinstance(cells, Mapping) else {k: value for k in cells}
    return Txn(table, backend.timestamps(1) if start_ts is None else start_ts, writes)


# --- the steps --------------------------------------------------------------------------------


def must_prewrite(backend: Backend, txn: Txn, keys: Iterable[Key] | None = None, *,
                  ttl_ms: int = TTL_MS) -> None:
    """Lock ``keys`` (default: every cell) in the calls the driver would make; none conflicts."""
    for group in calls(txn.parts(keys), backend.limits):
        conflict = backend.prewrite(PrewriteRequest(txn.table, txn.start_ts, txn.primary,
                                                    ttl_ms, group))
        assert conflict is None, conflict


def must_prewrite_conflict(backend: Backend, txn: Txn, keys: Iterable[Key] | None = None, *,
                           reason: str | None = None, ttl_ms: int = TTL_MS) -> Conflict:
    """One prewrite call of ``keys`` (default: every cell) that conflicts (for ``reason``)."""
    conflict = backend.prewrite(PrewriteRequest(txn.table, txn.start_ts, txn.primary, ttl_ms,
                                                txn.parts(keys)))
    assert conflict is not None, "the prewrite locked its cells"
    if reason is not None:
        assert conflict.reason == reason, conflict
    return conflict


def must_commit(backend: Backend, txn: Txn, keys: Iterable[Key] | None = None) -> int:
    """The commit step naming ``keys`` (default: every secondary); returns commit_ts."""
    outcome = backend.commit(CommitRequest(
        txn.table, txn.start_ts, txn.primary,
        txn.secondaries if keys is None else list(keys)))
    assert outcome.committed and outcome.commit_ts > txn.start_ts, outcome
    return outcome.commit_ts


def must_commit_fail(backend: Backend, txn: Txn, keys: Iterable[Key] | None = None) -> None:
    """The commit step finds the transaction rolled back: nothing committed."""
    outcome = backend.commit(CommitRequest(
        txn.table, txn.start_ts, txn.primary,
        txn.secondaries if keys is None else list(keys)))
    assert outcome == CommitOutcome(False), outcome


def must_rollback(backend: Backend, txn: Txn, keys: Iterable[Key] | None = None) -> None:
    backend.rollback(txn.table, txn.start_ts, txn.primary,
                     txn.keys if keys is None else list(keys))


def must_resolve(backend: Backend, txn: Txn, keys: Iterable[Key], still_locked: int = 0) -> None:
    got = backend.resolve(txn.table, txn.start_ts, list(keys))
    assert got == still_locked, f"{got} cells still locked, expected {still_locked}"


def must_heartbeat(backend: Backend, txn: Txn, *, held: bool, ttl_ms: int = TTL_MS) -> None:
    got = backend.heartbeat(txn.table, txn.start_ts, txn.primary, ttl_ms)
    assert got == held, f"heartbeat answered held={got}"


def must_status(backend: Backend, txn: Txn, state: str, commit_ts: int | None = None
                ) -> TxnStatus:
    status = backend.check_txn_status(txn.table, txn.primary, txn.start_ts)
    assert status.state == state, status
    if commit_ts is not None:
        assert status.commit_ts == commit_ts, status
    return status


# --- what is stored ---------------------------------------------------------------------------


def slot(backend: Backend, table: bytes, key: Key) -> Lock | None:
    """The lock in the cell's slot, whoever owns it."""
    row, column = key
    cells = backend.store.read_rows([RowRead(
        table, row, (layout.lock_column(column),), (),
        TimeRange(layout.LOCK_SLOT_TS, layout.LOCK_SLOT_TS), 1)])[0]
    return records.decode_lock(cells[0].value) if cells else None


def must_locked(backend: Backend, txn: Txn, key: Key) -> Lock:
    """The cell's slot holds ``txn``'s lock (naming its primary)."""
    lock = slot(backend, txn.table, key)
    assert lock is not None, f"{key} is not locked"
    assert lock.start_ts == txn.start_ts, f"{key} is locked by {lock.start_ts}, not {txn.start_ts}"
    assert (lock.primary_row, lock.primary_column) == txn.primary, lock
    assert lock.is_primary == (key == txn.primary), lock
    value = txn.writes[key]
    assert lock.op == (records.PUT if value is not None else records.DELETE), lock
    return lock


def must_unlocked(backend: Backend, table: bytes, key: Key) -> None:
    lock = slot(backend, table, key)
    assert lock is None, f"{key} is locked by {lock.start_ts}"


def must_see(backend: Backend, table: bytes, key: Key, value: bytes | None,
             ts: int | None = None) -> None:
    """A read at ``ts`` (default: a fresh timestamp) finds ``value``, no live lock."""
    result = backend.read(table, ts, [key])
    assert not result.locked, f"{key} is held by a live lock: {result.locked}"
    assert result.values[key] == value, f"{key}: {result.values[key]!r}, expected {value!r}"


def must_see_locked(backend: Backend, owner: Txn, key: Key, ts: int | None = None) -> None:
    """A read at ``ts`` meets ``owner``'s live lock on ``key`` (not settled: alive)."""
    result = backend.read(owner.table, ts, [key])
    assert [(c.row, c.column, c.start_ts) for c in result.locked] == [(*key, owner.start_ts)], \
        result


def lock_versions(backend: Backend, table: bytes) -> list[tuple[bytes, Cell]]:
    """Every version of every lock column of ``table``."""
    return [(row.row, cell) for row in backend.store.scan(ScanRequest(
        table, None, None, (), (layout.LOCK,), ALL_TIME, 0)) for cell in row.cells]


# --- where the steps run ------------------------------------------------------------------------


@dataclass
class World:
    """A client, and the LocalBackend that runs its steps (its own when embedded, the
    node's when remote), whose clock judges lock expiry."""

    kind: str
    client: Client
    local: LocalBackend

    @property
    def backend(self) -> Backend:
        """The client's backend: steps called on it travel as production's do."""
        return self.client.backend

    @property
    def table(self) -> bytes:
        return self.client.table

    @property
    def ctx(self) -> StepContext:
        """The step context where the steps run."""
        return self.local.ctx

    @property
    def statuses(self) -> StatusCache:
        """The status cache where the steps run: ``.checks`` counts primaries read."""
        return self.local.ctx.statuses

    @property
    def clock(self) -> FakeClock:
        """The clock judging lock expiry where the steps run (a FakeClock here)."""
        clock = self.local.clock
        assert isinstance(clock, FakeClock), "this world's locks expire on a real clock"
        return clock

    def advance(self, seconds: float) -> None:
        """Move the clock that judges lock expiry."""
        self.clock.advance(seconds)


@contextmanager
def open_world(kind: str, path: Path, *, node: Node | None = None,
               expiry_clock: Clock | None = None, name: str = "t", **client_args: Any
               ) -> Iterator[World]:
    """An embedded client on ``path`` whose backend judges lock expiry on
    ``expiry_clock`` (default a new FakeClock); or a remote client of ``node`` (whose
    clock is its own) on a table of its own.  ``client_args`` go to :class:`Client`
    (lock_ttl, one_phase, lock_wait_timeout, clock, ...); the client's own clock (its
    waits, its heartbeats' pacing) is the backend's unless ``clock`` is given."""
    if kind == "embedded":
        backend = LocalBackend.open(os.fspath(path), clock=expiry_clock or FakeClock())
        client_args.setdefault("clock", backend.clock)
        with Client(backend, **client_args) as client:
            yield World(kind, client, backend)
        return
    assert node is not None and expiry_clock is None, "a remote world runs on its node's clock"
    client_args.setdefault("clock", node.backend.clock)
    table = f"t{next(_tables)}_{re.sub(r'[^A-Za-z0-9_]', '_', name)[:60]}".encode()
    with Client(NodeClient(node.address), table=table, **client_args) as client:
        yield World(kind, client, node.backend)


@contextmanager
def running_node(path: Path, clock: Clock | None = None) -> Iterator[Node]:
    """A real node on 127.0.0.1 (port 0) judging lock expiry on ``clock``."""
    with Node(path, "127.0.0.1:0", clock=clock) as node:
        yield node


class _HookedStore:
    """A step store that runs ``meanwhile`` before the first mutation ``when`` selects."""

    def __init__(self, inner: Any, meanwhile: Callable[[], None],
                 when: Callable[[Sequence[RowMutation]], bool]) -> None:
        self._inner = inner
        self._meanwhile: Callable[[], None] | None = meanwhile
        self._when = when
        self.ran = False

    def _maybe(self, rows: Sequence[RowMutation]) -> None:
        if self._meanwhile is not None and self._when(rows):
            run, self._meanwhile = self._meanwhile, None  # its own steps pass straight on
            self.ran = True
            run()

    def mutate_rows(self, rows: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        self._maybe(rows)
        result: list[MutationResult] = self._inner.mutate_rows(rows, sync=sync)
        return result

    def mutate_guarded(self, rows: Sequence[RowMutation], *, sync: bool = False
                       ) -> list[MutationResult]:
        self._maybe(rows)
        result: list[MutationResult] = self._inner.mutate_guarded(rows, sync=sync)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextmanager
def before_mutation(world: World, meanwhile: Callable[[], None],
                    when: Callable[[Sequence[RowMutation]], bool] = lambda rows: True
                    ) -> Iterator[_HookedStore]:
    """Within the block, the first store mutation of a step (where the steps run) that
    ``when`` selects is preceded by ``meanwhile()``: whatever a concurrent client does
    between that step's read and its write.  ``meanwhile`` runs on the steps directly
    (``world.local``): at a node it runs inside the command being served."""
    ctx = world.ctx
    inner = ctx.store
    hooked = _HookedStore(inner, meanwhile, when)
    ctx.store = hooked
    try:
        yield hooked
    finally:
        ctx.store = inner


def touches(column_prefix: bytes, row: bytes | None = None
            ) -> Callable[[Sequence[RowMutation]], bool]:
    """A ``when`` for :func:`before_mutation`: a mutation writes a store column starting
    with ``column_prefix`` (in ``row``, if given)."""
    def when(rows: Sequence[RowMutation]) -> bool:
        return any((row is None or m.row == row)
                   and any(getattr(x, "column", b"").startswith(column_prefix)
                           for x in m.mutations) for m in rows)
    return when


@pytest.fixture(scope="module", name="fake_node")
def fake_node_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A real node on 127.0.0.1 whose lock expiry is judged by a FakeClock
    (``node.backend.clock``), shared by one test module (tests use separate tables)."""
    with running_node(tmp_path_factory.mktemp("node") / "data", FakeClock()) as node:
        yield node


# --- the notification log (percolator._notify.log) ------------------------------------------

@dataclass(frozen=True)
class LoggedEntry:
    """One entry of the notification log, decoded: cell, when it changed, where it sits."""

    row: bytes
    column: bytes
    change_ts: int
    position: int
    kind: int
    bucket: int


def log_entries(client: Client) -> list[LoggedEntry]:
    """Every entry of the client's table's notification log (a raw scan: tests only)."""
    from bigtable_lite import ScanRequest as _Scan
    from percolator._notify import log as _log

    out = []
    for row in client.store.scan(_Scan(layout.notify_table(client.table))):
        column, bucket, position = _log.decode_key(row.row)
        for cell in row.cells:
            kind, change_ts = _log.decode_entry(cell.value)
            out.append(LoggedEntry(cell.column, column, change_ts, position, kind, bucket))
    return out

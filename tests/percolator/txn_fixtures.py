"""Shared fixtures and helpers of the transaction-layer tests (isolation, API, bank, model).

Import the fixtures into a test module to use them::

    from .txn_fixtures import client_fixture, server_fixture  # noqa: F401

(fixtures are registered under the names ``client``, ``client_kind`` and ``server``).

``client`` is parametrised over an embedded client (its own data directory per test)
and a remote client of a real server on ``127.0.0.1`` port 0 (one server per test
module, one table per test, so tests never see each other's cells).  The server is a
:class:`percolator.node.Node` in this process, or a ``percolator serve`` subprocess
(``PERCOLATOR_TEST_SERVER=subprocess``, or where the node module is not available).

Randomness in these tests is seeded: :func:`draw_seed` reads ``PERCOLATOR_TEST_SEED``
or draws a seed, and the caller prints it so a failure can be replayed.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bigtable_lite import ALL_TIME, Cell, LocalStore, Put, ScanRequest, Unavailable
from percolator import Client, CommitConflict, Transaction, layout
from percolator.oracle import Oracle

CLIENT_KINDS = ("embedded", "remote")
SEED_ENV = "PERCOLATOR_TEST_SEED"
SERVER_ENV = "PERCOLATOR_TEST_SERVER"

_tables = itertools.count(1)


# --- the server ---------------------------------------------------------------------------


@contextmanager
def running_server(data_dir: str | os.PathLike[str]) -> Iterator[str]:
    """A real server on 127.0.0.1 port 0 for the block; yields its ``HOST:PORT``.

    In this process (a Node) unless ``PERCOLATOR_TEST_SERVER=subprocess`` asks for a
    ``percolator serve`` subprocess.
    """
    in_process = os.environ.get(SERVER_ENV, "node") != "subprocess"
    if in_process and importlib.util.find_spec("percolator.node") is not None:
        from percolator.node import Node

        node = Node(data_dir, "127.0.0.1:0").start()
        try:
            yield node.address
        finally:
            node.stop(grace=5.0)
        return
    from tests.procs import ServerProcess

    with ServerProcess(data_dir) as proc:
        yield proc.address


@pytest.fixture(scope="module", name="server")
def server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address of a server shared by one test module (tests use separate tables)."""
    with running_server(tmp_path_factory.mktemp("server")) as address:
        yield address


def unique_table(request: pytest.FixtureRequest) -> bytes:
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:80]
    return f"t{next(_tables)}_{name}".encode()


@pytest.fixture(params=CLIENT_KINDS, name="client_kind")
def client_kind_fixture(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="client")
def client_fixture(client_kind: str, request: pytest.FixtureRequest, tmp_path: Path
                   ) -> Iterator[Client]:
    """A fresh, empty key space behind an embedded or a remote client."""
    if client_kind == "embedded":
        c = Client.embedded(tmp_path / "data")
    else:
        address = request.getfixturevalue("server")
        c = Client.connect(address, table=unique_table(request))
    with c:
        yield c


# --- an embedded client whose store calls are counted ---------------------------------------


class CountingStore:
    """Delegates to a TabletStore and counts its calls (to prove "no I/O happened")."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.reads = 0
        self.scans = 0
        self.mutations = 0

    @property
    def calls(self) -> int:
        return self.reads + self.scans + self.mutations

    def read_rows(self, reads: Sequence[Any]) -> Any:
        self.reads += 1
        return self.inner.read_rows(reads)

    def scan(self, request: ScanRequest) -> Any:
        self.scans += 1
        return self.inner.scan(request)

    def mutate_rows(self, mutations: Sequence[Any], *, sync: bool = False) -> Any:
        self.mutations += 1
        return self.inner.mutate_rows(mutations, sync=sync)

    def mutate_guarded(self, mutations: Sequence[Any], *, sync: bool = False) -> Any:
        self.mutations += 1
        return self.inner.mutate_guarded(mutations, sync=sync)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class SecondaryLosingStore(CountingStore):
    """Loses the next batch of secondary commits when ``lose_next`` is set, as if the
    writer died right after its commit point: readers must roll the locks forward.

    The secondaries' batch is the second batch of commits (every row puts a write
    record) after ``lose_next`` was set: the commit step sends the primary's first."""

    lose_next = False
    _primary_passed = False

    # Not offered: the client then sends the primary's commit and the secondaries' apart
    # (as over gRPC), and the second can be lost.
    mutate_guarded = None  # type: ignore[assignment]

    def mutate_rows(self, mutations: Sequence[Any], *, sync: bool = False) -> Any:
        if self.lose_next and mutations and all(
                any(isinstance(x, Put) and x.column.startswith(layout.WRITE)
                    for x in m.mutations) for m in mutations):
            if self._primary_passed:
                self.lose_next = self._primary_passed = False
                raise Unavailable("secondary commits lost (test)")
            self._primary_passed = True
        return super().mutate_rows(mutations, sync=sync)


def _client_over(store: CountingStore, **kwargs: Any) -> Client:
    oracle = Oracle(store.inner)
    return Client(store, oracle, limits=store.inner.limits, owned=[oracle, store.inner], **kwargs)


def counting_client(path: str | os.PathLike[str], **kwargs: Any) -> tuple[Client, CountingStore]:
    """An embedded client whose every store call (not the oracle's) is counted."""
    store = CountingStore(LocalStore(path))
    return _client_over(store, **kwargs), store


def losing_client(path: str | os.PathLike[str], **kwargs: Any
                  ) -> tuple[Client, SecondaryLosingStore]:
    """An embedded client over a :class:`SecondaryLosingStore`."""
    store = SecondaryLosingStore(LocalStore(path))
    return _client_over(store, **kwargs), store


def lock_cells(client: Client) -> list[tuple[bytes, bytes, Cell]]:
    """Every lock in the client's table."""
    return [(table, row, cell) for table, row, cell in raw_cells(client)
            if cell.column.startswith(layout.LOCK)]


# --- helpers that read like assertions -------------------------------------------------------


def draw_seed(label: str) -> int:
    """The seed of a randomised test: ``$PERCOLATOR_TEST_SEED`` or a fresh one, printed."""
    raw = os.environ.get(SEED_ENV)
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    print(f"{label}: seed {seed} (replay with {SEED_ENV}={seed})")
    return seed


def load(client: Client, cells: Mapping[tuple[bytes, bytes], bytes]) -> int:
    """Commit ``cells`` in one transaction; return its commit_ts."""
    txn = client.begin()
    for (row, column), value in cells.items():
        txn.set(row, column, value)
    return txn.commit()


def must_commit(txn: Transaction) -> int:
    commit_ts = txn.commit()
    assert commit_ts >= txn.start_ts
    return commit_ts


def must_conflict(txn: Transaction) -> CommitConflict:
    with pytest.raises(CommitConflict) as info:
        txn.commit()
    assert not txn.active
    return info.value


def snapshot(txn: Transaction, start_row: bytes | None = None, end_row: bytes | None = None,
             columns: Sequence[bytes] | None = None) -> dict[tuple[bytes, bytes], bytes]:
    """Everything ``txn`` sees in a scan, as {(row, column): value}; checks the order too."""
    cells = list(txn.scan(start_row, end_row, columns))
    keys = [(row, column) for row, column, _ in cells]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), f"scan out of order: {keys}"
    return {(row, column): value for row, column, value in cells}


def committed_state(client: Client) -> dict[tuple[bytes, bytes], bytes]:
    """What a transaction begun now sees."""
    txn = client.begin()
    try:
        return snapshot(txn)
    finally:
        txn.rollback()


def raw_cells(client: Client) -> list[tuple[bytes, bytes, Cell]]:
    """Every stored cell (all versions, every kind) of the client's table and its side tables."""
    out: list[tuple[bytes, bytes, Cell]] = []
    for table in (client.table, layout.notify_table(client.table)):
        for row in client.store.scan(ScanRequest(table, None, None, (), (), ALL_TIME, 0)):
            out.extend((table, row.row, cell) for cell in row.cells)
    return out

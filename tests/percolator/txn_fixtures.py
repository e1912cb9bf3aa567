"""Shared fixtures and helpers of the transaction-layer tests (isolation, API, bank, model).

Import the fixtures into a test module to use them::

    from .txn_fixtures import client_fixture, server_fixture  # noqa: F401

(fixtures are registered under the names ``client``, ``client_kind`` and ``server``).

``client`` is parametrised over an embedded client (its own data directory per test)
and a remote client of a real server on ``127.0.0.1`` port 0 (one server per test
module, one table per test, so tests never see each other's cells); a module that
overrides ``client_kind`` with ``ALL_KINDS`` also gets both forced into two-phase
commit (``one_phase=False``).  The server is a
:class:`percolator.node.Node` in this process, or a ``percolator serve`` subprocess
(``PERCOLATOR_TEST_SERVER=subprocess``, or where the node module is not available).

Randomness in these tests is seeded: :func:`draw_seed` reads ``PERCOLATOR_TEST_SEED``
or draws a seed, and the caller prints it so a failure can be replayed.
"""

from __future__ import annotations

import collections
import importlib.util
import itertools
import os
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bigtable_lite import ALL_TIME, Cell, ScanRequest
from percolator import Client, CommitConflict, Transaction, _driver, layout, records
from percolator._backend import Backend, CommitRequest, Part, PrewriteRequest
from percolator._local import LocalBackend
from percolator._node_client import NodeClient

CLIENT_KINDS = ("embedded", "remote")
TWO_PHASE_SUFFIX = "-2pc"
TWO_PHASE_KINDS = tuple(kind + TWO_PHASE_SUFFIX for kind in CLIENT_KINDS)
ALL_KINDS = CLIENT_KINDS + TWO_PHASE_KINDS
"""Client kinds: embedded or remote, committing in one phase when a transaction fits one
step (the default) or always in two (``-2pc``, ``one_phase=False``)."""
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


def open_client(kind: str, request: pytest.FixtureRequest, tmp_path: Path, *,
                wrap: Callable[[Backend], Backend] | None = None, **kwargs: Any) -> Client:
    """A client of ``kind`` (one of ``ALL_KINDS``) on a fresh key space: embedded on
    ``tmp_path / "data"``, or remote on the module's server with a table of its own.
    ``wrap``: a Backend around the real one (e.g. :class:`CountingBackend`)."""
    assert kind in ALL_KINDS, kind
    kwargs.setdefault("one_phase", not kind.endswith(TWO_PHASE_SUFFIX))
    backend: Backend
    if kind.startswith("embedded"):
        backend = LocalBackend.open(os.fspath(tmp_path / "data"), clock=kwargs.get("clock"))
    else:
        backend = NodeClient(request.getfixturevalue("server"))
        kwargs.setdefault("table", unique_table(request))
    try:
        return Client(wrap(backend) if wrap is not None else backend, **kwargs)
    except BaseException:
        backend.close()
        raise


@pytest.fixture(name="client")
def client_fixture(client_kind: str, request: pytest.FixtureRequest, tmp_path: Path
                   ) -> Iterator[Client]:
    """A fresh, empty key space behind an embedded or a remote client."""
    with open_client(client_kind, request, tmp_path) as c:
        yield c


# --- a backend whose calls are counted ----------------------------------------------------


class CountingBackend:
    """Delegates to a Backend and counts its calls per verb (to prove "no I/O happened").

    Every call of the transaction code (timestamps too) is a call of its backend: for a
    remote client one command to the node, for an embedded one a step on its store.
    """

    VERBS = frozenset({"timestamps", "read", "scan", "prewrite", "commit", "commit_one_phase",
                       "resolve", "rollback", "heartbeat", "check_txn_status",
                       "register_observed", "observed_columns"})
    WRITES = ("prewrite", "commit", "commit_one_phase", "resolve", "rollback", "heartbeat")

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.limits = inner.limits
        self.counts: collections.Counter[str] = collections.Counter()

    @property
    def calls(self) -> int:
        return sum(self.counts.values())

    @property
    def reads(self) -> int:
        return self.counts["read"] + self.counts["scan"]

    @property
    def mutations(self) -> int:
        return sum(self.counts[verb] for verb in self.WRITES)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self.VERBS:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return attr(*args, **kwargs)

        return counted


def counting_client(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                    **kwargs: Any) -> tuple[Client, CountingBackend]:
    """A client of ``kind`` whose every backend call is counted."""
    client = open_client(kind, request, tmp_path, wrap=CountingBackend, **kwargs)
    assert isinstance(client.backend, CountingBackend)
    return client, client.backend


# --- driving the protocol's steps by hand -----------------------------------------------------


def parts_of(cells: Mapping[tuple[bytes, bytes], bytes | None]) -> list[Part]:
    """The cells as a transaction's commit cuts them (None: a delete), primary first."""
    return _driver.plan({key: (records.PUT, value) if value is not None
                         else (records.DELETE, None) for key, value in cells.items()})


def commit_primary_only(client: Client, cells: Mapping[tuple[bytes, bytes], bytes | None],
                        start_ts: int | None = None, ttl_ms: int = 60_000,
                        keys: Sequence[tuple[bytes, bytes]] = ()) -> tuple[int, int]:
    """Prewrite ``cells`` as one transaction, then commit its primary (the smallest key)
    and ``keys`` alone: a writer that died right after its commit point.  Every other
    cell is left locked for readers to roll forward.  Returns (start_ts, commit_ts)."""
    backend = client.backend
    if start_ts is None:
        start_ts = backend.timestamps(1)
    parts = parts_of(cells)
    primary = (parts[0][0], parts[0][1][0].column)
    conflict = backend.prewrite(PrewriteRequest(client.table, start_ts, primary, ttl_ms, parts))
    assert conflict is None, conflict
    outcome = backend.commit(CommitRequest(client.table, start_ts, primary, keys=list(keys)))
    assert outcome.committed and outcome.commit_ts > start_ts, outcome
    return start_ts, outcome.commit_ts


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

"""Shared fixtures and helpers of the observers tests.

Import the fixtures into a test module to use them::

    from .observer_fixtures import client_fixture, server_fixture  # noqa: F401

``client`` is parametrised over an embedded client (own data directory) and a remote
client of an in-process node on 127.0.0.1 port 0 (one per module, one table per
test).  Randomised tests take their seed from :func:`draw_seed` and print it.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from percolator import Client
from percolator.node import Node

REPO = Path(__file__).resolve().parents[2]
SEED_ENV = "PERCOLATOR_TEST_SEED"
WAIT = 30.0

_tables = itertools.count(1)


@contextmanager
def running_node(data_dir: str | os.PathLike[str]) -> Iterator[str]:
    node = Node(data_dir, "127.0.0.1:0").start()
    try:
        yield node.address
    finally:
        node.stop(grace=5.0)


@pytest.fixture(scope="module", name="server")
def server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_node(tmp_path_factory.mktemp("server")) as address:
        yield address


def unique_table(request: pytest.FixtureRequest) -> bytes:
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:60]
    return f"o{next(_tables)}_{name}".encode()


@pytest.fixture(params=("embedded", "remote"), name="client")
def client_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    """A fresh key space behind an embedded or a remote client."""
    if request.param == "embedded":
        c = Client.embedded(tmp_path / "data", lock_ttl=1.0)
    else:
        c = Client.connect(request.getfixturevalue("server"), table=unique_table(request),
                           lock_ttl=1.0)
    with c:
        yield c


def draw_seed(label: str) -> int:
    raw = os.environ.get(SEED_ENV)
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    print(f"{label}: seed {seed} (replay with {SEED_ENV}={seed})")
    return seed


def eventually(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Wait (bounded) until ``condition()`` holds, re-checking every few milliseconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        pause.wait(0.005)


def write_cells(client: Client, cells: Mapping[tuple[bytes, bytes], bytes],
                per_txn: int = 50) -> None:
    """Commit ``cells`` in transactions of ``per_txn`` cells each."""
    items = list(cells.items())
    for i in range(0, len(items), per_txn):
        with client.transaction() as txn:
            for (row, column), value in items[i:i + per_txn]:
                txn.set(row, column, value)


def read(client: Client, cells: Iterable[tuple[bytes, bytes]]) -> dict[tuple[bytes, bytes],
                                                                      bytes | None]:
    txn = client.begin()
    try:
        return txn.get_many(list(cells))
    finally:
        txn.rollback()


def value(client: Client, row: bytes, column: bytes) -> bytes | None:
    return read(client, [(row, column)])[(row, column)]

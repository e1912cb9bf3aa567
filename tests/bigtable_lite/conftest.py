"""Fixtures: a LocalStore, an in-process server on 127.0.0.1:0, and a RemoteStore to it.

``store`` is parametrised over both implementations so the semantic tests run once
in-process and once over gRPC with the same assertions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from bigtable_lite import DEFAULT_LIMITS, Limits, LocalStore, RemoteStore
from bigtable_lite.server import build_server, stop_server

CALL_TIMEOUT = 10.0

Store = LocalStore | RemoteStore
"""What the parametrised ``store`` fixture gives."""


@dataclass
class Served:
    """A started in-process server over a LocalStore."""

    store: LocalStore
    server: grpc.Server
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def remote(self, **kwargs: object) -> RemoteStore:
        kwargs.setdefault("timeout", CALL_TIMEOUT)
        return RemoteStore(self.address, **kwargs)  # type: ignore[arg-type]


def serve(path: Path, limits: Limits = DEFAULT_LIMITS) -> Served:
    store = LocalStore(path, limits=limits)
    server, port = build_server(store, "127.0.0.1:0", max_workers=16)
    server.start()
    return Served(store, server, port)


def shutdown(served: Served) -> None:
    stop_server(served.server, grace=1.0)
    served.store.close()


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[LocalStore]:
    with LocalStore(tmp_path / "local") as store:
        yield store


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = serve(tmp_path / "served")
    try:
        yield s
    finally:
        shutdown(s)


@pytest.fixture
def remote_store(served: Served) -> Iterator[RemoteStore]:
    with served.remote() as remote:
        yield remote


@pytest.fixture(params=["local", "remote"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same tests against LocalStore and against RemoteStore over a real server."""
    if request.param == "local":
        with LocalStore(tmp_path / "local") as local:
            yield local
        return
    s = serve(tmp_path / "served")
    try:
        with s.remote() as remote:
            yield remote
    finally:
        shutdown(s)

"""A reader never misses a one-phase commit below its snapshot (``one_phase.CommitLatches``).

A one-phase commit writes no lock: between taking commit_ts C and its write, nothing in
the store says a commit is coming.  A reader whose start_ts T was taken after C must
still see it, so it waits for the latches of the rows (or range) it reads.  Here the
commit is held at ``commit.before_commit_primary`` (C taken, the write not yet made,
where the step runs: this process, or the node), a reader takes T > C and reads; it
must wait and then see the commit -- and never read before the write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from percolator import Client, failpoints
from percolator._backend import Backend, ScanRequest
from percolator._local import LocalBackend
from percolator._node_client import NodeClient

from .test_node_batch import WAIT, serve, start, wait_until

TABLE = b"t"


class SignallingCondition(threading.Condition):
    """A Condition that says when a waiter blocks (its predicate false, the lock held:
    nothing can release it before it waits)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked = threading.Event()

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        if not predicate():
            self.blocked.set()
        return super().wait_for(predicate, timeout)


def hold_the_first_commit_at_its_write(monkeypatch: pytest.MonkeyPatch
                                       ) -> tuple[threading.Event, threading.Event]:
    """(held, release): the first commit to reach ``commit.before_commit_primary`` (its
    commit_ts taken, its rows latched, nothing written) sets ``held`` and waits there
    until ``release`` is set."""
    held, release = threading.Event(), threading.Event()
    hit = failpoints.hit

    def hook(name: str) -> None:
        if name == "commit.before_commit_primary" and not held.is_set():
            held.set()
            assert release.wait(WAIT)
        hit(name)

    monkeypatch.setattr(failpoints, "hit", hook)
    return held, release


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path
          ) -> Iterator[tuple[Client, Backend, LocalBackend]]:
    """A client; the backend of another client (the reader); where the steps run."""
    if request.param == "embedded":
        with Client.embedded(tmp_path / "data", table=TABLE) as client:
            assert isinstance(client.backend, LocalBackend)
            yield client, client.backend, client.backend
        return
    with serve(tmp_path / "data") as served, \
            Client(NodeClient(served.address, timeout=WAIT), table=TABLE) as client, \
            NodeClient(served.address, timeout=WAIT) as reader:
        yield client, reader, served.backend


@pytest.mark.parametrize("world", ["embedded", "remote"], indirect=True)
@pytest.mark.parametrize("how", ["read", "scan"])
def test_a_reader_after_commit_ts_waits_for_the_one_phase_write(
        world: tuple[Client, Backend, LocalBackend], how: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, reader, local = world
    with client.transaction() as txn:
        txn.set(b"a", b"c", b"old")
        txn.set(b"b", b"c", b"old")
    cond = SignallingCondition()
    monkeypatch.setattr(local.ctx.latches, "_cond", cond)
    held, release = hold_the_first_commit_at_its_write(monkeypatch)
    writer = client.begin()
    writer.set(b"a", b"c", b"new")
    writer.set(b"b", b"c", b"new")
    results: dict[str, Any] = {}
    threads = [start(writer.commit, results, "commit")]
    try:
        assert held.wait(WAIT), "the one-phase commit reached its write"
        ts = reader.timestamps(1)  # above the held commit's commit_ts

        def read() -> list[tuple[tuple[bytes, bytes], bytes | None]]:
            if how == "read":
                got = reader.read(TABLE, ts, [(b"a", b"c"), (b"b", b"c")])
                assert not got.locked
                return sorted(got.values.items())
            chunk = reader.scan(ScanRequest(TABLE, ts, None, None, None, False, 100))
            assert not chunk.locked and chunk.resume is None
            return [((row, column), value) for row, column, value in chunk.cells]

        threads.append(start(read, results, "read"))
        wait_until(lambda: "read" in results or cond.blocked.is_set(),
                   "the reader has read, or waits for the commit in progress")
    finally:
        release.set()
        for thread in threads:
            thread.join(WAIT)
    commit_ts = results["commit"]
    assert isinstance(commit_ts, int) and commit_ts < ts, results
    assert results["read"] == [((b"a", b"c"), b"new"), ((b"b", b"c"), b"new")], \
        f"a reader at {ts} missed the commit at {commit_ts}"


@pytest.mark.parametrize("world", ["embedded", "remote"], indirect=True)
@pytest.mark.parametrize("how", ["read", "scan"])
def test_a_reader_does_not_wait_for_a_one_phase_commit_latched_after_its_snapshot(
        world: tuple[Client, Backend, LocalBackend], how: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit latched after the reader's T was handed out takes a commit_ts above T:
    the reader does not wait for it (waiting for every latch of its rows starved readers
    of rows that one-phase writers kept latched, until Unavailable after a minute)."""
    client, reader, local = world
    with client.transaction() as txn:
        txn.set(b"a", b"c", b"old")
    ts = reader.timestamps(1)  # the reader's snapshot, before the writer begins
    held, release = hold_the_first_commit_at_its_write(monkeypatch)
    writer = client.begin()
    writer.set(b"a", b"c", b"new")
    results: dict[str, Any] = {}
    thread = start(writer.commit, results, "commit")
    try:
        assert held.wait(WAIT), "the one-phase commit reached its write"
        if how == "read":
            got = reader.read(TABLE, ts, [(b"a", b"c")])
            assert dict(got.values) == {(b"a", b"c"): b"old"} and not got.locked
        else:
            chunk = reader.scan(ScanRequest(TABLE, ts, None, None, None, False, 100))
            assert [(r, c, v) for r, c, v in chunk.cells] == [(b"a", b"c", b"old")]
        assert "commit" not in results, "read before the commit went on: it did not wait"
    finally:
        release.set()
        thread.join(WAIT)
    assert isinstance(results["commit"], int) and results["commit"] > ts

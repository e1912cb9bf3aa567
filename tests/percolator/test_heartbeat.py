"""Heartbeats keep a slow commit's primary alive; an expired one is rolled back by readers.

Lock expiry is judged by the clock where the steps run (the node's for a remote
client): a lock carries its TTL, the step writing it (prewrite, heartbeat) turns that
into an expiry on its own clock.  So a client whose own clock is skewed can neither
roll back a live transaction nor stretch a crashed one's lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from percolator import CommitConflict, LockWaitTimeout, failpoints
from percolator._backend import LOCKED, ROLLED_BACK, PrewriteRequest
from percolator._keeper import LockKeeper
from percolator.clock import FakeClock, SystemClock
from percolator.node import Node

from .steps import (  # noqa: F401 - fake_node_fixture registers the fixture
    KINDS,
    World,
    fake_node_fixture,
    must_commit,
    must_locked,
    must_prewrite,
    must_status,
    new_txn,
    open_world,
    running_node,
)

WAIT = 30.0  # bound of every wait in these tests
DAY_MS = 86_400_000
TTL = 1.0  # seconds: a lock's TTL on a real clock (heartbeats every third of it)
A, B = (b"a", b"v"), (b"b", b"v")


@pytest.fixture(autouse=True)
def _reset_failpoints() -> Iterator[None]:
    failpoints.reset()
    yield
    failpoints.reset()


@pytest.fixture(scope="module", name="real_node")
def real_node_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A real node judging lock expiry on the system clock."""
    with running_node(tmp_path_factory.mktemp("real") / "data") as node:
        yield node


@contextmanager
def fake_world(request: pytest.FixtureRequest, kind: str, path: Path, **client_args: Any
               ) -> Iterator[World]:
    """A world whose locks expire on a FakeClock (the node's, for remote); the client's
    clock is that clock too unless ``clock`` is given."""
    node = request.getfixturevalue("fake_node") if kind == "remote" else None
    with open_world(kind, path, node=node, name=request.node.name, **client_args) as w:
        yield w


@contextmanager
def real_world(request: pytest.FixtureRequest, kind: str, path: Path, **client_args: Any
               ) -> Iterator[World]:
    """A world whose locks expire on the system clock (a real node's, for remote)."""
    node = request.getfixturevalue("real_node") if kind == "remote" else None
    clock = SystemClock()
    client_args.setdefault("clock", clock)
    with open_world(kind, path, node=node, name=request.node.name,
                    expiry_clock=clock if kind == "embedded" else None, **client_args) as w:
        yield w


def at_failpoint(monkeypatch: pytest.MonkeyPatch, name: str, action: Callable[[], None]) -> None:
    """Run ``action`` in whichever thread of this process reaches failpoint ``name``."""
    original = failpoints.hit

    def hook(point: str) -> None:
        if point == name:
            action()
        original(point)

    monkeypatch.setattr(failpoints, "hit", hook)


@pytest.mark.parametrize("kind", KINDS)
def test_refresh_moves_expiry_and_keeps_the_inlined_value(
        request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    with fake_world(request, kind, tmp_path / "d", lock_ttl=3.0) as world:
        be = world.backend
        txn = new_txn(be, world.table, {A: b"short value"})
        must_prewrite(be, txn, ttl_ms=3000)
        written = must_locked(be, txn, A)
        assert written.expires_at_ms == world.clock.now_ms() + 3000
        keeper = LockKeeper(be, world.clock, 3.0)  # the client's kind of keeper, driven by hand
        keeper.close()  # (no thread)
        keeper.hold(world.table, A, txn.start_ts)
        world.advance(0.5)
        keeper.refresh_due()  # younger than a third of the TTL: nothing to do
        assert keeper.refreshes == 0
        assert must_locked(be, txn, A).expires_at_ms == written.expires_at_ms
        world.advance(1.0)
        keeper.refresh_due()
        assert keeper.refreshes == 1
        refreshed = must_locked(be, txn, A)
        assert refreshed.expires_at_ms == world.clock.now_ms() + 3000
        assert refreshed.value == b"short value" and refreshed.is_primary
        world.advance(2.9)  # past the first expiry, inside the refreshed one
        must_status(be, txn, LOCKED)
        keeper.release(txn.start_ts)
        world.advance(0.2)
        must_status(be, txn, ROLLED_BACK)


@pytest.mark.parametrize("kind", KINDS)
def test_slow_commit_survives_past_its_ttl_thanks_to_heartbeats(
        request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        kind: str) -> None:
    with real_world(request, kind, tmp_path / "d", lock_ttl=TTL, one_phase=False) as world:
        client = world.client
        with client.transaction() as txn:
            txn.set(b"a", b"v", b"old")
            txn.set(b"b", b"v", b"old")
        locked = threading.Event()
        reader_done = threading.Event()

        def stall() -> None:  # the committer, locks in place, stalls for three TTLs
            locked.set()
            reader_done.wait(timeout=WAIT)
            time.sleep(3 * TTL)  # the slowness under test, not a synchronisation

        at_failpoint(monkeypatch, "commit.after_prewrite", stall)
        slow = client.begin()
        slow.set(b"a", b"v", b"new-a")
        slow.set(b"b", b"v", b"new-b")
        outcome: list[object] = []

        def commit() -> None:
            try:
                outcome.append(slow.commit())
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcome.append(exc)

        committer = threading.Thread(target=commit)
        committer.start()
        assert locked.wait(timeout=WAIT)
        reader = client.begin()  # begins after the locks were placed, before commit_ts
        reader_done.set()
        # Meeting the stalled commit's lock, the reader waits (heartbeats keep it alive)
        # instead of rolling it back; it then reads below the commit.
        assert reader.get(b"b", b"v") == b"old"
        committer.join(timeout=WAIT)
        assert not committer.is_alive()
        assert outcome and isinstance(outcome[0], int), outcome
        after = client.begin()
        assert after.get_many([A, B]) == {A: b"new-a", B: b"new-b"}
        assert client.ctx.keeper.refreshes >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_expired_commit_is_rolled_back_and_its_owner_told(
        request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        kind: str) -> None:
    with fake_world(request, kind, tmp_path / "d", lock_ttl=1.0, one_phase=False) as world:
        client = world.client
        txn = client.begin()
        txn.set(b"a", b"v", b"x")
        txn.set(b"b", b"v", b"y")
        # The owner's whole process stalls, its heartbeats too.
        monkeypatch.setattr(client.ctx.keeper, "refresh_due", lambda: None)

        def stall_and_resolve() -> None:
            # Past its TTL (the fake clock jumps), a reader rolls it back.
            world.advance(10)
            assert client.begin().get(b"b", b"v") is None

        at_failpoint(monkeypatch, "commit.after_prewrite", stall_and_resolve)
        with pytest.raises(CommitConflict, match="rolled back by another client"):
            txn.commit()
        fresh = client.begin()
        assert fresh.get(b"a", b"v") is None and fresh.get(b"b", b"v") is None


# --- the clock that decides is the node's ---------------------------------------------------


@contextmanager
def skewed_world(request: pytest.FixtureRequest, kind: str, path: Path, skew_ms: int,
                 **client_args: Any) -> Iterator[World]:
    """A client whose own clock is ``skew_ms`` off the clock judging its locks: that of a
    real node (remote), or its embedded backend's FakeClock."""
    now = time.time_ns() // 1_000_000
    skewed = FakeClock(now + skew_ms)
    if kind == "remote":
        with real_world(request, kind, path, clock=skewed, **client_args) as world:
            yield world
    else:
        with fake_world(request, kind, path, clock=skewed, expiry_clock=FakeClock(now),
                        **client_args) as world:
            yield world


def expiry_bounds(world: World, ttl_ms: int) -> Callable[[], tuple[int, int]]:
    """(earliest, latest) expiry of a lock written with ``ttl_ms`` where the steps run,
    between this call and the returned function's."""
    before = world.local.clock.now_ms()
    return lambda: (before + ttl_ms, world.local.clock.now_ms() + ttl_ms)


@pytest.mark.parametrize("skew", ["ahead", "behind"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_client_with_a_skewed_clock_cannot_roll_back_a_live_transaction(
        request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        kind: str, skew: str) -> None:
    skew_ms = DAY_MS if skew == "ahead" else -DAY_MS
    with skewed_world(request, kind, tmp_path / "d", skew_ms, lock_ttl=60.0,
                              lock_wait_timeout=1.0, one_phase=False) as world:
        be, table = world.backend, world.table
        # As a reader: another writer's live lock (60 s on the node's clock) is waited
        # for, never found expired.
        live = new_txn(be, table, [A])
        must_prewrite(be, live, ttl_ms=60_000)
        with pytest.raises(LockWaitTimeout):
            world.client.begin().get(b"a", b"v")  # its waits move only its own clock
        must_status(be, live, LOCKED)
        must_commit(be, live)
        # As a writer: its locks expire 60 s from the node's now, not from its own.
        stalled = threading.Event()
        go_on = threading.Event()

        def stall() -> None:
            stalled.set()
            assert go_on.wait(timeout=WAIT)

        at_failpoint(monkeypatch, "commit.after_prewrite", stall)
        mine = world.client.begin()
        mine.set(b"b", b"v", b"mine")
        bounds = expiry_bounds(world, 60_000)
        outcome: list[object] = []
        committer = threading.Thread(target=lambda: outcome.append(mine.commit()))
        committer.start()
        try:
            assert stalled.wait(timeout=WAIT)
            earliest, latest = bounds()
            found = be.read(table, None, [B]).locked  # a reader elsewhere: alive
            assert [(c.row, c.column, c.start_ts) for c in found] == [(*B, mine.start_ts)]
            lock = must_locked(be, new_txn(be, table, {B: b"mine"}, start_ts=mine.start_ts), B)
            assert earliest <= lock.expires_at_ms <= latest
        finally:
            go_on.set()
            committer.join(timeout=WAIT)
        assert not committer.is_alive()
        assert outcome and isinstance(outcome[0], int), outcome
        assert world.client.begin().get(b"b", b"v") == b"mine"


@pytest.mark.parametrize("skew", ["ahead", "behind"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_client_with_a_skewed_clock_cannot_stretch_a_crashed_transactions_lock(
        request: pytest.FixtureRequest, tmp_path: Path, kind: str, skew: str) -> None:
    ttl = 0.5
    skew_ms = DAY_MS if skew == "ahead" else -DAY_MS
    with skewed_world(request, kind, tmp_path / "d", skew_ms, lock_ttl=ttl) as world:
        be, table = world.backend, world.table
        client = world.client
        assert isinstance(client.clock, FakeClock)
        keeper = client.ctx.keeper
        txn = new_txn(be, table, [A, B])
        # Its prewrite and its heartbeats, as its commit driver and keeper send them.
        bounds = expiry_bounds(world, keeper.ttl_ms)
        assert be.prewrite(PrewriteRequest(table, txn.start_ts, txn.primary, keeper.ttl_ms,
                                           txn.parts())) is None
        keeper.hold(table, txn.primary, txn.start_ts)
        client.clock.advance(ttl)  # its own clock says a heartbeat is due
        keeper.refresh_due()
        assert keeper.refreshes >= 1
        lock = must_locked(be, txn, A)
        earliest, latest = bounds()
        assert earliest <= lock.expires_at_ms <= latest, "the expiry is on the node's clock"
        keeper.release(txn.start_ts)  # the client dies: no more heartbeats
        # Past its TTL on the node's clock, anyone rolls it back.
        if kind == "embedded":
            world.advance(ttl)
            must_status(be, txn, ROLLED_BACK)
        else:
            deadline = time.monotonic() + WAIT
            while be.check_txn_status(table, txn.primary, txn.start_ts).state == LOCKED:
                assert time.monotonic() < deadline, "the crashed client's lock stayed alive"
                time.sleep(0.05)
        assert be.read(table, None, [A, B]).values == {A: None, B: None}

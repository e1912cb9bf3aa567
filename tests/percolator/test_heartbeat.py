"""Heartbeats keep a slow commit's primary alive; an expired one is rolled back by readers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bigtable_lite import RowRead, TimeRange
from percolator import Client, CommitConflict, failpoints, layout, records
from percolator.clock import FakeClock
from percolator.mutations import CellWrite, lock_record, prewrite


@pytest.fixture(autouse=True)
def _reset_failpoints() -> Iterator[None]:
    failpoints.reset()
    yield
    failpoints.reset()


def stored_lock(client: Client, row: bytes, column: bytes, start_ts: int) -> records.Lock:
    cells = client.store.read_rows([RowRead(client.table, row, (layout.lock_column(column),), (),
                                            TimeRange(layout.LOCK_SLOT_TS, layout.LOCK_SLOT_TS),
                                            1)])[0]
    assert cells, "lock missing"
    lock = records.decode_lock(cells[0].value)
    assert lock.start_ts == start_ts, "another transaction's lock"
    return lock


def test_refresh_moves_expiry_and_keeps_the_inlined_value(tmp_path: Path) -> None:
    clock = FakeClock()
    with Client.embedded(tmp_path / "d", lock_ttl=3.0, clock=clock) as client:
        start_ts = client.oracle.get_timestamp()
        cell = CellWrite(b"col", records.PUT, b"short value")
        lock = lock_record(cell, start_ts, (b"row", b"col"), client.ctx.keeper.expiry(), True)
        assert client.store.mutate_rows([prewrite(client.table, b"row", [cell], start_ts,
                                                  (b"row", b"col"), lock.expires_at_ms)])[0].applied
        keeper = client.ctx.keeper
        keeper.hold(b"row", b"col", start_ts, cell, lock.expires_at_ms)
        clock.advance(0.5)
        keeper.refresh_due()  # younger than a third of the TTL: nothing to do
        assert stored_lock(client, b"row", b"col", start_ts).expires_at_ms == lock.expires_at_ms
        clock.advance(1.0)
        keeper.refresh_due()
        refreshed = stored_lock(client, b"row", b"col", start_ts)
        assert refreshed.expires_at_ms == clock.now_ms() + 3000
        assert refreshed.value == b"short value" and refreshed.is_primary
        keeper.release(start_ts)


def at_failpoint(monkeypatch: pytest.MonkeyPatch, name: str, action: Callable[[], None]) -> None:
    """Run ``action`` in whichever thread reaches failpoint ``name``."""
    original = failpoints.hit

    def hook(point: str) -> None:
        if point == name:
            action()
        original(point)

    monkeypatch.setattr(failpoints, "hit", hook)


def test_slow_commit_survives_past_its_ttl_thanks_to_heartbeats(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Client.embedded(tmp_path / "d", lock_ttl=0.3) as client:
        with client.transaction() as txn:
            txn.set(b"a", b"v", b"old")
            txn.set(b"b", b"v", b"old")
        locked = threading.Event()
        reader_done = threading.Event()

        def stall() -> None:  # the committer, locks in place, stalls for four TTLs
            locked.set()
            reader_done.wait(timeout=30)
            time.sleep(1.2)

        at_failpoint(monkeypatch, "commit.after_prewrite", stall)
        slow = client.begin()
        slow.set(b"a", b"v", b"new-a")
        slow.set(b"b", b"v", b"new-b")
        outcome: list[object] = []
        committer = threading.Thread(target=lambda: outcome.append(slow.commit()))
        committer.start()
        assert locked.wait(timeout=30)
        reader = client.begin()  # begins after the locks were placed, before commit_ts
        reader_done.set()
        # Meeting the stalled commit's lock, the reader waits (heartbeats keep it alive)
        # instead of rolling it back; it then reads below the commit.
        assert reader.get(b"b", b"v") == b"old"
        committer.join(timeout=30)
        assert not committer.is_alive()
        assert outcome and isinstance(outcome[0], int), outcome
        after = client.begin()
        assert after.get_many([(b"a", b"v"), (b"b", b"v")]) == {
            (b"a", b"v"): b"new-a", (b"b", b"v"): b"new-b"}
        assert client.ctx.keeper.refreshes >= 1


def test_expired_commit_is_rolled_back_and_its_owner_told(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    with Client.embedded(tmp_path / "d", lock_ttl=1.0, clock=clock) as client:
        txn = client.begin()
        txn.set(b"a", b"v", b"x")
        txn.set(b"b", b"v", b"y")

        def stall_and_resolve() -> None:
            # The owner stalls past its TTL without heartbeats (the fake clock jumps),
            # and a reader rolls it back.
            clock.advance(10)
            assert client.begin().get(b"b", b"v") is None

        at_failpoint(monkeypatch, "commit.after_prewrite", stall_and_resolve)
        with pytest.raises(CommitConflict):
            txn.commit()
        fresh = client.begin()
        assert fresh.get(b"a", b"v") is None and fresh.get(b"b", b"v") is None

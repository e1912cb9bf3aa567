"""Prewrite settles locks of decided transactions in its way and tries again.

A prewrite call whose rows meet locks of a transaction already decided (committed, its
secondaries not yet rolled forward) resolves them and retries; it gives up only where
retrying is unsafe -- the primary's part failed while the same call locked others (a
reader meeting those may have sealed the primary) -- or the owner is alive.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from percolator._backend import ROLLED_BACK, PrewriteRequest

from .steps import (  # noqa: F401 - fake_node_fixture registers the fixture
    KINDS,
    TTL_MS,
    World,
    fake_node_fixture,
    must_commit,
    must_locked,
    must_prewrite,
    must_see,
    must_status,
    must_unlocked,
    new_txn,
    open_world,
)

P, Q = (b"p", b"c"), (b"q", b"c")


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    node = request.getfixturevalue("fake_node") if request.param == "remote" else None
    with open_world(request.param, tmp_path / "d", node=node, name=request.node.name,
                    lock_ttl=TTL_MS / 1000) as w:
        yield w


def test_a_prewrite_whose_every_part_meets_a_committed_transactions_locks_succeeds(
        world: World) -> None:
    backend, table = world.backend, world.table
    # x committed at its primary only: its secondaries on p and q are still locked.
    x = new_txn(backend, table, [(b"a", b"c"), P, Q], b"x")
    must_prewrite(backend, x)
    must_commit(backend, x, keys=[])
    must_locked(backend, x, P)
    must_locked(backend, x, Q)
    # y's one prewrite call: the primary's part (p) and q's, both in x's way.
    y = new_txn(backend, table, [P, Q], b"y")
    assert len(y.parts()) == 2
    conflict = backend.prewrite(PrewriteRequest(table, y.start_ts, y.primary, TTL_MS,
                                                y.parts()))
    assert conflict is None, f"x is committed, its locks settle: {conflict}"
    must_locked(backend, y, P)
    must_locked(backend, y, Q)
    ts = must_commit(backend, y)
    must_see(backend, table, P, b"x", ts - 1)  # x's locks were rolled forward, not lost
    must_see(backend, table, Q, b"x", ts - 1)
    must_see(backend, table, P, b"y")
    must_see(backend, table, Q, b"y")


def test_a_primary_failing_beside_parts_its_call_locked_gives_up_all_or_nothing(
        world: World) -> None:
    """y's call locks q (naming p) but p is in x's way: a reader meeting q's lock could
    seal p meanwhile, so the prewrite gives up -- undoing q, sealing p -- rather than
    retry p."""
    backend, table = world.backend, world.table
    x = new_txn(backend, table, [(b"a", b"c"), P], b"x")
    must_prewrite(backend, x)
    must_commit(backend, x, keys=[])
    y = new_txn(backend, table, [P, Q], b"y")
    conflict = backend.prewrite(PrewriteRequest(table, y.start_ts, y.primary, TTL_MS,
                                                y.parts()))
    assert conflict is not None and (conflict.row, conflict.column) == P, conflict
    must_unlocked(backend, table, Q)
    must_unlocked(backend, table, P)  # x's secondary rolled forward by y's prewrite
    must_status(backend, y, ROLLED_BACK)
    must_see(backend, table, P, b"x")
    must_see(backend, table, Q, None)

"""The locks of a chained one-phase commit live as long as a step of its size may take.

A one-phase request whose row is cut into several parts (more cells than one row
mutation takes) is committed by the chained steps at the node: prewrite, then commit,
with nobody heartbeating the primary between them.  Its locks had a fixed 3 s TTL, so
a large request on a loaded store was rolled back under itself by the first reader
that met its primary after 3 s.  Now the TTL grows with the request's size
(``one_phase.chained_ttl_ms``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from percolator import layout
from percolator._backend import LOCKED, CellWrite, CommitOutcome, OnePhaseRequest
from percolator._steps.one_phase import (
    LOCK_TTL_MS,
    MAX_CHAINED_TTL_MS,
    TTL_PER_SQRT_MIB_MS,
    chained_ttl_ms,
)
from percolator.records import PUT

from .steps import World, before_mutation, lock_versions, open_world, touches

ROW = b"big"
CELLS = 300  # more than one row mutation takes (200): the row is cut, the steps chained
VALUE = b"x" * 4096  # 1.2 MiB in all


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with open_world("embedded", tmp_path / "data") as w:
        yield w


def test_a_large_chained_commit_outlives_a_stall_longer_than_the_default_ttl(
        world: World) -> None:
    cells = [CellWrite(b"c%04d" % i, PUT, VALUE) for i in range(CELLS)]
    parts = [(ROW, cells[:200]), (ROW, cells[200:])]
    start_ts = world.backend.timestamps(1)
    stalled: list[str] = []

    def stall_then_check() -> None:
        """The store stalls before the commit point, past the default TTL; a reader
        meeting the primary then must find it alive, not roll it back."""
        world.advance(LOCK_TTL_MS / 1000 + 1.0)
        stalled.append(world.local.check_txn_status(world.table, (ROW, b"c0000"),
                                                    start_ts).state)

    with before_mutation(world, stall_then_check, touches(layout.WRITE, ROW)) as hook:
        outcome = world.backend.commit_one_phase(OnePhaseRequest(world.table, start_ts,
                                                                 parts, []))
    assert hook.ran, "the stall did not happen: the test proves nothing"
    assert stalled == [LOCKED]
    assert isinstance(outcome, CommitOutcome) and outcome.committed, outcome
    assert lock_versions(world.local, world.table) == []
    reader = world.client.begin()
    assert reader.get(ROW, b"c0299") == VALUE


def test_the_chained_ttl_grows_with_the_size_within_bounds() -> None:
    def parts_of(size: int) -> list[tuple[bytes, list[CellWrite]]]:
        return [(b"r", [CellWrite(b"c", PUT, b"x" * (size - 2))])]

    assert chained_ttl_ms(parts_of(100)) == LOCK_TTL_MS
    assert chained_ttl_ms(parts_of(4 << 20)) == 2 * TTL_PER_SQRT_MIB_MS
    assert chained_ttl_ms(parts_of(1 << 30)) == MAX_CHAINED_TTL_MS

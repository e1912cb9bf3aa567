"""A one-phase commit never waits for the oracle while holding its rows' store locks.

The store's row locks are stripes (``bigtable_lite._check_and_mutate.STRIPES``), and the
oracle persists its high-water mark with a store write of its own row -- under the
oracle's lock, taking that row's stripe.  A one-phase commit that took commit_ts while
holding its rows' stripes would deadlock when its row shares the oracle row's stripe
and the oracle must persist a new mark (with itself; or with another thread holding
the oracle's lock: then every timestamp of the node stops).  Here the row is chosen to
share the stripe, and the oracle persists a mark every other timestamp.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

from bigtable_lite import LocalStore
from bigtable_lite._check_and_mutate import STRIPES
from percolator import Client
from percolator._local import LocalBackend
from percolator.oracle import _ROW as MARK_ROW
from percolator.oracle import ORACLE_TABLE, Oracle

WAIT = 30.0
TABLE = b"t"


def test_a_one_phase_commit_on_the_oracle_rows_stripe_completes(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "data"))
    oracle = Oracle(store, block_size=1)  # a mark persisted every other timestamp
    keys = store.engine._mutator._keys

    def stripe(table: bytes, row: bytes) -> int:
        return hash(keys.row_prefix(table, row)) & (STRIPES - 1)

    oracle.get_timestamp()  # the oracle's row (and table) exist
    client = Client(LocalBackend(store, oracle), table=TABLE)
    client.run(lambda txn: txn.set(b"seed", b"c", b"x"))  # TABLE has its prefix
    target = stripe(ORACLE_TABLE, MARK_ROW)
    row = next(r for r in (b"r%d" % i for i in itertools.count())
               if stripe(TABLE, r) == target)
    done: list[Any] = []

    def commits() -> None:
        for i in range(4):  # commit_ts of either parity: one of them persists a mark
            if i == 2:
                client.timestamp()
            with client.transaction() as txn:
                txn.set(row, b"c", b"v%d" % i)
            done.append(i)

    thread = threading.Thread(target=commits, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), (
        f"one-phase commits on row {row!r} (the oracle row's stripe) deadlocked after"
        f" {len(done)} commits")
    assert client.begin().get(row, b"c") == b"v3"
    client.close()

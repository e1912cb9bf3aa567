"""List the table's locks with their owners' status, and resolve the stranded ones.

`percolator locks` lists every cell's lock (``percolator._inspection.list_locks``): the
owner's start_ts, put or delete, its primary, when it expires by the backend's clock
(the node's) or how long ago it expired, and what the owner's primary records:
committed (the lock awaits its roll-forward), rolled back, locked (undecided), no
trace (its prewrite never reached the primary).  A lock record that does not decode is
listed as such (``percolator repair`` removes it).

A lock record holds its expiry, not the time it was written, so a lock's age is
measured from its expiry: ``--older-than SECONDS`` lists only locks that expired at
least that long ago (stranded: their owner stopped renewing them).

``--resolve`` settles the listed locks through the protocol's own step, as a reader
would (``Backend.resolve``: roll forward what committed, roll back what was rolled
back or expired): a live transaction's locks are left alone, never deleted.  Listing
reads the raw store (the ``read`` role); resolving writes through the transaction
protocol (the ``write`` role).

``--json`` prints one JSON object per lock per line (with ``--resolve``, then one per
transaction resolved).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from .._backend import COMMITTED, LOCKED, Key
from .._client import Client
from .._inspection import LockInfo, list_locks
from .arg_types import non_negative_int
from .byte_text import show
from .client_args import add_target_arguments, open_client
from .record_text import lock_json, lock_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--older-than", type=non_negative_int, default=None,
                        metavar="SECONDS", help="only locks that expired at least SECONDS"
                        " ago (0: every expired lock)")
    parser.add_argument("--resolve", action="store_true",
                        help="settle the listed locks through the protocol (roll forward or"
                        " back); locks of live transactions stay")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line instead of text")


def _selected(info: LockInfo, now_ms: int, older_than: int | None) -> bool:
    if older_than is None:
        return True
    left = info.ttl_left_ms(now_ms)
    return left is not None and -left >= older_than * 1000


def run(args: argparse.Namespace) -> int:
    client = open_client(args)
    try:
        now_ms = client.backend.now_ms()
        found = [info for info in list_locks(client.store, client.table)
                 if _selected(info, now_ms, args.older_than)]
        for info in found:
            print(json.dumps(lock_json(info, now_ms)) if args.json else lock_text(info, now_ms))
        if not args.json:
            print(f"{len(found)} lock{'' if len(found) == 1 else 's'}")
        if args.resolve:
            _resolve(client, found, as_json=args.json)
    finally:
        client.close()
    return 0


def _resolve(client: Client, found: Sequence[LockInfo], *, as_json: bool) -> None:
    """Resolve the decodable locks, transaction by transaction; say what became of each."""
    by_txn: dict[tuple[int, Key], list[Key]] = {}
    for info in found:
        lock = info.lock
        if lock is not None:
            by_txn.setdefault((lock.start_ts, (lock.primary_row, lock.primary_column)),
                              []).append((info.record.row, info.record.column))
    step = max(1, client.limits.max_batch_rows // 2)
    for (start_ts, primary), keys in sorted(by_txn.items()):
        still = 0
        for i in range(0, len(keys), step):
            still += client.backend.resolve(client.table, start_ts, keys[i:i + step])
        outcome = _outcome(client, start_ts, primary, still)
        if as_json:
            print(json.dumps({"resolved": start_ts, "cells": len(keys),
                              "still_locked": still, "outcome": outcome}))
        else:
            print(f"transaction {start_ts} (primary ({show(primary[0])}, {show(primary[1])})):"
                  f" {len(keys)} cells, {outcome}")


def _outcome(client: Client, start_ts: int, primary: Key, still: int) -> str:
    if still:
        return f"{still} still locked (the transaction is alive)"
    status = client.backend.check_txn_status(client.table, primary, start_ts)
    if status.state == COMMITTED:
        return f"rolled forward (committed at {status.commit_ts})"
    if status.state == LOCKED:
        return "its primary is still locked (the transaction is alive)"
    return "rolled back"

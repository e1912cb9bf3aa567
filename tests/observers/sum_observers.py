"""Observers whose effect is a sum, for the exactly-once tests (also loaded by worker processes).

``add_value`` adds the row's whole ``value`` to a bucket of the total on every run and
counts its runs per row: it is deliberately not idempotent, so a run too many shows
as a larger sum and a row with ``runs`` 2, a run too few as a smaller one.
"""

from __future__ import annotations

import zlib

from observers import Observer, observer
from percolator import Client, Transaction

VALUE = b"value"
RUNS = b"runs"
TOTAL_ROW = b"~total"
BUCKETS = 8


def bucket(row: bytes) -> bytes:
    return b"b%d" % (zlib.crc32(row) % BUCKETS)


@observer(VALUE)
def add_value(txn: Transaction, row: bytes, column: bytes) -> None:
    v = int(txn.get(row, VALUE) or b"0")
    runs = int(txn.get(row, RUNS) or b"0")
    b = bucket(row)
    total = int(txn.get(TOTAL_ROW, b) or b"0")
    txn.set(TOTAL_ROW, b, b"%d" % (total + v))
    txn.set(row, RUNS, b"%d" % (runs + 1))


OBSERVERS = [add_value]


def total(client: Client) -> int:
    txn = client.begin()
    try:
        values = txn.get_many([(TOTAL_ROW, b"b%d" % i) for i in range(BUCKETS)])
    finally:
        txn.rollback()
    return sum(int(v or b"0") for v in values.values())


def runs(client: Client, rows: list[bytes]) -> dict[bytes, int]:
    txn = client.begin()
    try:
        got = txn.get_many([(r, RUNS) for r in rows])
    finally:
        txn.rollback()
    return {r: int(got[(r, RUNS)] or b"0") for r in rows}


class SlowAdd(Observer):
    """add_value as a class with hooks, for the CLI tests (``SlowAdd`` is a factory spec)."""

    column = VALUE

    def setup(self, client: Client) -> None:
        self.setups = 1

    def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
        add_value(txn, row, column)

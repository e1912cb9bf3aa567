"""Chunked reads: a transaction's batched reads of many cells, in store-sized calls.

A batch observer reads thousands of cells at once (acks, refs, counters), and one
``Transaction.get_many`` is one store call, which the store refuses above its
``max_batch_rows`` (10,000 by default); the transaction layer does not split it.
These helpers do, at :data:`READ_CHUNK` cells per call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from percolator import Transaction

READ_CHUNK = 2048
"""Cells per store call: each cell is one row read, well inside the default limit."""

Cells = Sequence[tuple[bytes, bytes]]
Values = dict[tuple[bytes, bytes], bytes | None]


def _chunked(read: Callable[[Cells], Values], cells: Cells) -> Values:
    if len(cells) <= READ_CHUNK:
        return read(cells)
    out: Values = {}
    for i in range(0, len(cells), READ_CHUNK):
        out.update(read(cells[i:i + READ_CHUNK]))
    return out


def get_many(txn: Transaction, cells: Cells) -> Values:
    """``txn.get_many(cells)``, in calls of at most :data:`READ_CHUNK` cells."""
    return _chunked(txn.get_many, cells)


def get_many_system(txn: Transaction, cells: Cells) -> Values:
    """``txn.get_many_system(cells)``, in calls of at most :data:`READ_CHUNK` cells."""
    return _chunked(txn.get_many_system, cells)

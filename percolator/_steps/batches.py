"""Store calls shared by the protocol steps: batches cut to the store's limits, and the
secondaries' commits and rollbacks settled cell by cell.

A secondary's commit or rollback is conditional on each cell's lock slot still holding
the transaction's lock (condition i guards cell i, whose mutations are 2i and 2i+1).  A row
is one atomic check-and-mutate, so one cell settled meanwhile by a reader (and perhaps
locked again by a later transaction) fails the whole row: :func:`settle_in_calls`
re-sends such a row cell by cell, so the cells still ours are settled and the others
left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from bigtable_lite import Limits, MutationResult, Put, RowMutation, TabletStore

__all__ = ["BYTES_PER_CALL", "mutate_in_calls", "per_cell", "settle_in_calls"]

BYTES_PER_CALL = 16 << 20
"""Bytes of values per store call, well below the default 64 MiB message limit."""


def mutate_in_calls(store: TabletStore, limits: Limits, batch: Sequence[RowMutation]
                    ) -> list[MutationResult]:
    """mutate_rows in as few calls as the store's batch and message limits allow, in order."""
    if len(batch) == 1:
        return store.mutate_rows(batch)
    if len(batch) <= limits.max_batch_rows:  # the common case: one call, if the bytes fit
        size = 0
        for m in batch:
            for x in m.mutations:
                if type(x) is Put:
                    size += len(x.value)
        if size + 64 * len(batch) <= BYTES_PER_CALL:
            return store.mutate_rows(batch)
    results: list[MutationResult] = []
    start, size = 0, 0
    for i, m in enumerate(batch):
        weight = sum(len(getattr(x, "value", b"")) for x in m.mutations) + 64
        if i > start and (i - start >= limits.max_batch_rows or size + weight > BYTES_PER_CALL):
            results += store.mutate_rows(batch[start:i])
            start, size = i, 0
        size += weight
    if start < len(batch):
        results += store.mutate_rows(batch[start:])
    return results


def settle_in_calls(store: TabletStore, limits: Limits, batch: Sequence[RowMutation],
                    results: Sequence[MutationResult] | None = None) -> int:
    """Apply secondaries' commits or rollbacks; a row of several cells that failed is re-sent
    cell by cell.  Returns how many cells were found settled already (not ours any more).

    ``results``: of ``batch``, applied already (e.g. in the commit point's write): only
    the failed rows are re-sent.
    """
    retry: list[RowMutation] = []
    skipped = 0
    if results is None:
        results = mutate_in_calls(store, limits, batch)
    for m, result in zip(batch, results):
        if not result.applied:
            if len(m.conditions) > 1:
                retry += per_cell(m)
            else:
                skipped += 1
    if retry:
        skipped += sum(not r.applied for r in mutate_in_calls(store, limits, retry))
    return skipped


def per_cell(m: RowMutation) -> list[RowMutation]:
    """A secondary's commit or rollback of several cells, one row mutation per cell.

    For a row that failed because one cell's slot is no longer ours (a reader settled
    that cell, and a later transaction may hold it now): re-sent cell by cell, the
    cells still ours are settled and the others left alone.  Condition i guards cell i,
    whose mutations are 2i and 2i+1 (every settling step builds its rows so).
    """
    conditions = m.conditions
    if len(conditions) < 2:
        return [m]
    muts = m.mutations
    return [RowMutation(m.table, m.row, muts[2 * i:2 * i + 2], (cond,))
            for i, cond in enumerate(conditions)]

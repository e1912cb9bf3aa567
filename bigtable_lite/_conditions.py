"""Conditions of a check-and-mutate, evaluated against the current state of a locked row.

The caller holds the row's stripe lock, so what is read here stays true until its write
(docs/storage.md lists each condition, when it holds and what ``found`` carries).
"""

from __future__ import annotations

from collections.abc import Sequence

from ._encoding import Escaped, decode_ts_at, version_key
from ._leveldb import plyvel
from ._model import (
    Cell,
    Condition,
    MutationResult,
    NoValuePrefixAt,
    NoVersionIn,
    ValuePrefixAt,
    VersionAt,
)


def first_failure(db: plyvel.DB, columns: Escaped, conditions: Sequence[Condition],
                  rpfx: bytes, shared: list[plyvel.RawIterator] | None = None
                  ) -> MutationResult | None:
    """The result for the first condition that does not hold, or None if all hold.

    ``columns``: the store's escaped column names.  ``shared``: the caller's iterator for
    range conditions (empty: create it there), which the caller closes; else one of its
    own.  An exact-timestamp condition is a lookup, not a seek: a seek steps over every
    deleted version after its target until a compaction drops them.
    """
    it = shared[0] if shared else None
    index = 0
    try:
        for cond in conditions:
            column = cond.column
            cpfx = rpfx + columns[column]
            if type(cond) is NoVersionIn:
                ts = cond.max_ts
                if cond.min_ts == ts:  # one version: a lookup
                    value = db.get(version_key(cpfx, ts), verify_checksums=True)
                    if value is not None:
                        return MutationResult(False, index, Cell(column, ts, value))
                else:
                    if it is None:
                        it = db.raw_iterator(verify_checksums=True)
                        if shared is not None:
                            shared.append(it)
                    it.seek(version_key(cpfx, ts))
                    if it.valid():
                        key = it.key()
                        if key.startswith(cpfx):
                            ts = decode_ts_at(key, len(cpfx))
                            if ts >= cond.min_ts:
                                return MutationResult(False, index, Cell(column, ts, it.value()))
            elif type(cond) is ValuePrefixAt:
                value = db.get(version_key(cpfx, cond.ts), verify_checksums=True)
                if value is None:
                    return MutationResult(False, index, None)
                if not value.startswith(cond.value_prefix):
                    return MutationResult(False, index, Cell(column, cond.ts, value))
            elif type(cond) is NoValuePrefixAt:
                value = db.get(version_key(cpfx, cond.ts), verify_checksums=True)
                if value is not None and value.startswith(cond.value_prefix):
                    return MutationResult(False, index, Cell(column, cond.ts, value))
            else:
                assert type(cond) is VersionAt
                value = db.get(version_key(cpfx, cond.ts), verify_checksums=True)
                if value is None:
                    return MutationResult(False, index, None)
                if cond.value is not None and value != cond.value:
                    return MutationResult(False, index, Cell(column, cond.ts, value))
            index += 1
        return None
    finally:
        if it is not None and shared is None:
            it.close()

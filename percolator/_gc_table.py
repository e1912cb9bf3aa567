"""The ``_gc`` table: what garbage collection persists (the one owner of its bytes).

A reserved store table, like the oracle's ``_oracle``; only the GC of the store's
backend writes it (``percolator._safe_point``, ``percolator._gc``).  Rows, each one
store column at ts 0, rewritten in place::

    row           column      value
    safe_point    ts          uint64 big-endian: the safe point; only ever raised
    samples       wall_ts     n x (uint64 wall-clock ms, uint64 oracle timestamp), big-endian:
                              when the oracle's next timestamp was what (oldest first)
    last_pass     stats       the last finished pass, UTF-8 JSON (:class:`GcPass`'s fields)
    tables        <table>     empty: a table holding transactional cells (collected)
    leases        <client>    uint64 big-endian: the floor of a remote client's lease (its
                              key: ``_leases.client_key``), at or below every timestamp
                              the client holds (``percolator._leases``)

The safe point is written with ``sync=True`` before anything below it is collected: a
node killed mid-pass restarts refusing every snapshot whose versions may be gone.
A client's lease floor is written with ``sync=True`` before the client first holds
anything, or holds below it (a node killed then restarts holding the safe point at it
for a lease), then with the passes' safe point.  Samples and the last pass are hints
(losing them makes GC more conservative, or the status older); they are written
without fsync.
Persisted: never renumber.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields

from bigtable_lite import (
    DEFAULT_LIMITS,
    DataCorruption,
    DeleteRange,
    Mutation,
    Put,
    RowMutation,
    RowRead,
    TabletStore,
)

__all__ = ["GC_TABLE", "GcPass", "GcStatus", "read_status"]

GC_TABLE = b"_gc"
SAFE_POINT_ROW, SAFE_POINT_COLUMN = b"safe_point", b"ts"
SAMPLES_ROW, SAMPLES_COLUMN = b"samples", b"wall_ts"
LAST_PASS_ROW, LAST_PASS_COLUMN = b"last_pass", b"stats"
TABLES_ROW = b"tables"
LEASES_ROW = b"leases"
LEASES_PER_MUTATION = DEFAULT_LIMITS.max_items_per_row
"""Lease puts and deletes in one row mutation (the store's limit of a row mutation)."""
_U64 = struct.Struct(">Q")
_SAMPLE = struct.Struct(">QQ")

Sample = tuple[int, int]  # (wall-clock ms, the oracle's next timestamp then)


@dataclass(frozen=True, slots=True)
class GcPass:
    """What one collection pass did (``percolator gc`` prints it; ``percolator status``
    shows the last one)."""

    safe_point: int = 0
    started_ms: int = 0           # wall clock
    seconds: float = 0.0          # from start to finish, pauses included
    work_seconds: float = 0.0     # of which working (the rest: rate-limiting pauses)
    tables: int = 0
    rows: int = 0                 # rows read while collecting
    versions_scanned: int = 0
    locks_resolved: int = 0       # locks below the safe point rolled forward or back
    write_records: int = 0        # write records removed
    data: int = 0                 # long values removed (with their record, or orphaned)
    rollback_markers: int = 0     # rollback markers removed
    compactions: int = 0          # tables compacted (their tombstones dropped)
    skipped: str = ""             # why nothing was collected, if nothing was
    held_by: str = ""             # what kept the safe point where it is

    @property
    def removed(self) -> int:
        """Versions removed: write records, data and rollback markers."""
        return self.write_records + self.data + self.rollback_markers

    def describe(self) -> str:
        held = f" (held by {self.held_by})" if self.held_by else ""
        if self.skipped:
            return f"safe point {self.safe_point:,}{held}: nothing collected ({self.skipped})"
        return (f"safe point {self.safe_point:,}{held}: removed {self.removed:,} versions"
                f" ({self.write_records:,} write records, {self.data:,} values,"
                f" {self.rollback_markers:,} rollback markers), resolved"
                f" {self.locks_resolved:,} locks; read {self.rows:,} rows"
                f" ({self.versions_scanned:,} versions) of {self.tables} tables in"
                f" {self.seconds:.2f}s ({self.work_seconds:.2f}s working),"
                f" {self.compactions} tables compacted")

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> GcPass:
        try:
            found = json.loads(raw)
        except ValueError as exc:
            raise DataCorruption(f"GC pass record is not JSON: {exc}") from None
        if not isinstance(found, dict):
            raise DataCorruption("GC pass record is not a JSON object")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in found.items() if k in known})


@dataclass(frozen=True, slots=True)
class GcStatus:
    """The persisted GC state of a store."""

    safe_point: int
    last_pass: GcPass | None
    tables: tuple[bytes, ...]


def u64(raw: bytes, what: str) -> int:
    if len(raw) != _U64.size:
        raise DataCorruption(f"{what} is {len(raw)} bytes, expected 8")
    value: int = _U64.unpack(raw)[0]
    return value


def encode_samples(samples: list[Sample]) -> bytes:
    return b"".join(_SAMPLE.pack(wall, ts) for wall, ts in samples)


def decode_samples(raw: bytes) -> list[Sample]:
    if len(raw) % _SAMPLE.size:
        raise DataCorruption(f"GC samples are {len(raw)} bytes, not a multiple of 16")
    return [(wall, ts) for wall, ts in _SAMPLE.iter_unpack(raw)]


def read_status(store: TabletStore) -> GcStatus:
    """The safe point, the last pass and the collected tables, as persisted (one read)."""
    point, last, tables = store.read_rows([
        RowRead(GC_TABLE, SAFE_POINT_ROW, (SAFE_POINT_COLUMN,), max_versions=1),
        RowRead(GC_TABLE, LAST_PASS_ROW, (LAST_PASS_COLUMN,), max_versions=1),
        RowRead(GC_TABLE, TABLES_ROW, max_versions=1)])
    return GcStatus(u64(point[0].value, "GC safe point") if point else 0,
                    GcPass.decode(last[0].value) if last else None,
                    tuple(cell.column for cell in tables))


def read_samples(store: TabletStore) -> list[Sample]:
    cells = store.read_rows([RowRead(GC_TABLE, SAMPLES_ROW, (SAMPLES_COLUMN,),
                                     max_versions=1)])[0]
    return decode_samples(cells[0].value) if cells else []


def read_leases(store: TabletStore) -> dict[bytes, int]:
    """The persisted floors of the remote clients' leases: client key -> floor."""
    cells = store.read_rows([RowRead(GC_TABLE, LEASES_ROW, max_versions=1)])[0]
    return {cell.column: u64(cell.value, "client lease floor") for cell in cells}


def leases_mutations(puts: Mapping[bytes, int], deletes: Iterable[bytes]
                     ) -> list[RowMutation]:
    """Write the floors ``puts`` (client key -> floor), delete the leases ``deletes``: row
    mutations of the leases row, each within a row mutation's limit (one batch applies
    them in order; each lease is a column of its own, so none depends on another)."""
    mutations: list[Mutation] = [Put(key, 0, _U64.pack(floor)) for key, floor in puts.items()]
    mutations.extend(DeleteRange(key) for key in deletes)
    return [RowMutation(GC_TABLE, LEASES_ROW, tuple(mutations[i:i + LEASES_PER_MUTATION]))
            for i in range(0, len(mutations), LEASES_PER_MUTATION)]


def safe_point_mutation(safe_point: int) -> RowMutation:
    return RowMutation(GC_TABLE, SAFE_POINT_ROW,
                       (Put(SAFE_POINT_COLUMN, 0, _U64.pack(safe_point)),))


def samples_mutation(samples: list[Sample]) -> RowMutation:
    return RowMutation(GC_TABLE, SAMPLES_ROW, (Put(SAMPLES_COLUMN, 0, encode_samples(samples)),))


def last_pass_mutation(done: GcPass) -> RowMutation:
    return RowMutation(GC_TABLE, LAST_PASS_ROW, (Put(LAST_PASS_COLUMN, 0, done.encode()),))


def table_mutation(table: bytes) -> RowMutation:
    return RowMutation(GC_TABLE, TABLES_ROW, (Put(table, 0, b""),))

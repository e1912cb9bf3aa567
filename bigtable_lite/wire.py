"""Wire format: the one place converting between protobuf messages and model types.

Both directions live here so the client (``remote``) and the server (``service``)
cannot drift apart.  Conventions of the proto (see tablet.proto):

- an empty ``start_row``/``end_row``/``table`` filter means "unbounded"/"every table"
  (unambiguous, because an empty row or table is never valid);
- an absent ``TimeRange`` means every timestamp, and ``ALL_TIME`` is sent as absent;
- a ``Condition``/``Mutation`` whose oneof is unset (e.g. a kind added by a newer
  client) is refused with :class:`InvalidArgument` rather than silently ignored.

Decoding only converts; the values are checked afterwards by ``validation``, the same
functions the in-process store uses.

This is the hot path of every call (about 1 us per row each way), so messages are
built with ``add()`` and attribute assignment (measured ~2x faster than keyword
constructors on upb) and read with local-variable lookups.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ._encoding import MAX_TS
from ._model import (
    ALL_TIME,
    APPLIED,
    Cell,
    Condition,
    DeleteRange,
    DeleteVersion,
    Mutation,
    MutationResult,
    NoValuePrefixAt,
    NoVersionIn,
    Put,
    Row,
    RowMutation,
    RowRead,
    ScanRequest,
    TabletInfo,
    TimeRange,
    ValuePrefixAt,
    VersionAt,
)
from .errors import InvalidArgument
from .v1 import tablet_pb2 as pb

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer as Repeated

__all__ = [
    "cells_from_pb", "mutate_request_from_pb", "mutate_request_to_pb", "mutate_response_from_pb",
    "mutate_response_to_pb", "read_request_from_pb", "read_request_to_pb",
    "read_response_from_pb", "read_response_to_pb", "scan_request_from_pb",
    "scan_request_to_pb", "scan_response_from_pb", "scan_response_to_pb", "tablets_from_pb",
    "tablets_to_pb",
]


# --- shared pieces ----------------------------------------------------------------------


def _set_time_range(msg: pb.TimeRange, tr: TimeRange) -> None:
    msg.min_ts = tr.min_ts
    msg.max_ts = tr.max_ts


def _time_range_from_pb(has: bool, msg: pb.TimeRange) -> TimeRange:
    return TimeRange(msg.min_ts, msg.max_ts) if has else ALL_TIME


def _add_cells(field: Repeated[pb.Cell], cells: Iterable[Cell]) -> None:
    add = field.add
    for c in cells:
        m = add()
        m.column = c.column
        m.ts = c.ts
        m.value = c.value


def cells_from_pb(cells: Iterable[pb.Cell]) -> tuple[Cell, ...]:
    return tuple([Cell(c.column, c.ts, c.value) for c in cells])


# --- ReadRows ---------------------------------------------------------------------------


def read_request_to_pb(reads: Sequence[RowRead]) -> pb.ReadRowsRequest:
    req = pb.ReadRowsRequest()
    add = req.reads.add
    for r in reads:
        m = add()
        m.table = r.table
        m.row = r.row
        if r.columns:
            m.filter.columns.extend(r.columns)
        if r.column_prefixes:
            m.filter.prefixes.extend(r.column_prefixes)
        tr = r.time_range
        if tr.min_ts or tr.max_ts != MAX_TS:  # not ALL_TIME (fields: no dataclass __eq__)
            t = m.time_range
            t.min_ts = tr.min_ts
            t.max_ts = tr.max_ts
        m.max_versions = r.max_versions
    return req


def read_request_from_pb(req: pb.ReadRowsRequest) -> list[RowRead]:
    out: list[RowRead] = []
    for m in req.reads:
        f = m.filter
        if m.HasField("time_range"):
            t = m.time_range
            tr = TimeRange(t.min_ts, t.max_ts)
        else:
            tr = ALL_TIME
        prefixes = f.prefixes
        out.append(RowRead(m.table, m.row, tuple(f.columns),
                           tuple(prefixes) if prefixes else (), tr, m.max_versions))
    return out


def read_response_to_pb(rows: Sequence[Sequence[Cell]]) -> pb.ReadRowsResponse:
    resp = pb.ReadRowsResponse()
    add = resp.rows.add
    for cells in rows:
        _add_cells(add().cells, cells)
    return resp


def read_response_from_pb(resp: pb.ReadRowsResponse) -> list[list[Cell]]:
    return [[Cell(c.column, c.ts, c.value) for c in r.cells] for r in resp.rows]


# --- Scan -------------------------------------------------------------------------------


def scan_request_to_pb(s: ScanRequest) -> pb.ScanRequest:
    m = pb.ScanRequest()
    m.table = s.table
    if s.start_row is not None:
        m.start_row = s.start_row
    if s.end_row is not None:
        m.end_row = s.end_row
    if s.columns:
        m.filter.columns.extend(s.columns)
    if s.column_prefixes:
        m.filter.prefixes.extend(s.column_prefixes)
    if s.time_range != ALL_TIME:
        _set_time_range(m.time_range, s.time_range)
    m.max_versions = s.max_versions
    m.limit = s.limit
    if s.keys_only_prefixes:
        m.keys_only_prefixes.extend(s.keys_only_prefixes)
    return m


def scan_request_from_pb(m: pb.ScanRequest) -> ScanRequest:
    f = m.filter
    return ScanRequest(m.table, m.start_row or None, m.end_row or None, tuple(f.columns),
                       tuple(f.prefixes), _time_range_from_pb(m.HasField("time_range"),
                                                              m.time_range),
                       m.max_versions, m.limit, tuple(m.keys_only_prefixes))


def scan_response_to_pb(rows: Iterable[Row]) -> pb.ScanResponse:
    resp = pb.ScanResponse()
    add = resp.rows.add
    for r in rows:
        m = add()
        m.row = r.row
        _add_cells(m.cells, r.cells)
    return resp


def scan_response_from_pb(resp: pb.ScanResponse) -> list[Row]:
    return [Row(r.row, tuple([Cell(c.column, c.ts, c.value) for c in r.cells]))
            for r in resp.rows]


# --- MutateRows -------------------------------------------------------------------------


def _add_condition(field: Repeated[pb.Condition], c: Condition) -> None:
    if type(c) is NoVersionIn:
        n = field.add().no_version_in
        n.column = c.column
        n.min_ts = c.min_ts
        n.max_ts = c.max_ts
    elif type(c) is VersionAt:
        v = field.add().version_at
        v.column = c.column
        v.ts = c.ts
        if c.value is not None:
            v.value = c.value
    elif type(c) is ValuePrefixAt:
        p = field.add().value_prefix_at
        p.column = c.column
        p.ts = c.ts
        p.value_prefix = c.value_prefix
    elif type(c) is NoValuePrefixAt:
        q = field.add().no_value_prefix_at
        q.column = c.column
        q.ts = c.ts
        q.value_prefix = c.value_prefix
    else:
        raise TypeError(f"unknown condition type {type(c).__name__}")


def _add_mutation(field: Repeated[pb.Mutation], x: Mutation) -> None:
    if type(x) is Put:
        p = field.add().put
        p.column = x.column
        p.ts = x.ts
        p.value = x.value
    elif type(x) is DeleteVersion:
        d = field.add().delete_version
        d.column = x.column
        d.ts = x.ts
    elif type(x) is DeleteRange:
        r = field.add().delete_range
        r.column = x.column
        r.min_ts = x.min_ts
        r.max_ts = x.max_ts
    else:
        raise TypeError(f"unknown mutation type {type(x).__name__}")


def mutate_request_to_pb(mutations: Sequence[RowMutation], sync: bool) -> pb.MutateRowsRequest:
    req = pb.MutateRowsRequest()
    req.sync = sync
    add = req.rows.add
    for m in mutations:
        r = add()
        r.table = m.table
        r.row = m.row
        if m.conditions:
            conditions = r.conditions
            for c in m.conditions:
                _add_condition(conditions, c)
        muts = r.mutations
        for x in m.mutations:
            if type(x) is Put:  # the common case, inlined
                p = muts.add().put
                p.column = x.column
                p.ts = x.ts
                p.value = x.value
            else:
                _add_mutation(muts, x)
    return req


def _condition_from_pb(c: pb.Condition) -> Condition:
    kind = c.WhichOneof("kind")
    if kind == "no_version_in":
        n = c.no_version_in
        return NoVersionIn(n.column, n.min_ts, n.max_ts)
    if kind == "version_at":
        v = c.version_at
        return VersionAt(v.column, v.ts, v.value if v.HasField("value") else None)
    if kind == "value_prefix_at":
        p = c.value_prefix_at
        return ValuePrefixAt(p.column, p.ts, p.value_prefix)
    if kind == "no_value_prefix_at":
        q = c.no_value_prefix_at
        return NoValuePrefixAt(q.column, q.ts, q.value_prefix)
    raise InvalidArgument("condition has no kind set (unknown to this server?)")


def _mutation_from_pb(x: pb.Mutation) -> Mutation:
    kind = x.WhichOneof("kind")
    if kind == "put":
        p = x.put
        return Put(p.column, p.ts, p.value)
    if kind == "delete_version":
        d = x.delete_version
        return DeleteVersion(d.column, d.ts)
    if kind == "delete_range":
        r = x.delete_range
        return DeleteRange(r.column, r.min_ts, r.max_ts)
    raise InvalidArgument("mutation has no kind set (unknown to this server?)")


def mutate_request_from_pb(req: pb.MutateRowsRequest) -> list[RowMutation]:
    out: list[RowMutation] = []
    append = out.append
    for r in req.rows:
        muts = r.mutations
        if len(muts) == 1 and muts[0].HasField("put"):  # the common case, inline
            p = muts[0].put
            mutations: tuple[Mutation, ...] = (Put(p.column, p.ts, p.value),)
        else:
            mutations = tuple([_mutation_from_pb(x) for x in muts])
        conditions = r.conditions
        append(RowMutation(r.table, r.row, mutations,
                           tuple([_condition_from_pb(c) for c in conditions]) if conditions
                           else ()))
    return out


def mutate_response_to_pb(results: Sequence[MutationResult]) -> pb.MutateRowsResponse:
    resp = pb.MutateRowsResponse()
    add = resp.results.add
    for res in results:
        m = add()
        if res.applied:
            m.applied = True  # failed_condition stays unset: -1 would cost 10 bytes a row
        else:
            m.failed_condition = res.failed_condition
            if res.found is not None:
                f = m.found
                f.column = res.found.column
                f.ts = res.found.ts
                f.value = res.found.value
    return resp


def mutate_response_from_pb(resp: pb.MutateRowsResponse) -> list[MutationResult]:
    out: list[MutationResult] = []
    for m in resp.results:
        if m.applied:
            out.append(APPLIED)
        else:
            f = m.found
            out.append(MutationResult(False, m.failed_condition,
                                      Cell(f.column, f.ts, f.value) if m.HasField("found")
                                      else None))
    return out


# --- tablets ----------------------------------------------------------------------------


def tablets_to_pb(field: Repeated[pb.Tablet],
                  tablets: Iterable[TabletInfo]) -> None:
    for t in tablets:
        m = field.add()
        m.table = t.table
        m.start_row = t.start_row
        if t.end_row is not None:
            m.end_row = t.end_row
        m.approximate_bytes = t.approximate_bytes


def tablets_from_pb(tablets: Iterable[pb.Tablet]) -> list[TabletInfo]:
    return [TabletInfo(t.table, t.start_row, t.end_row or None, t.approximate_bytes)
            for t in tablets]

"""wire: model -> protobuf -> bytes -> protobuf -> model gives back the same values."""

from __future__ import annotations

from typing import TypeVar

import pytest
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from bigtable_lite import (
    ALL_TIME,
    MAX_TS,
    Cell,
    DeleteRange,
    DeleteVersion,
    InvalidArgument,
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
    wire,
)
from bigtable_lite.v1 import tablet_pb2 as pb

KEY = st.binary(min_size=1, max_size=8)
VALUE = st.binary(max_size=16)
TS = st.one_of(st.sampled_from([0, MAX_TS]), st.integers(0, MAX_TS))
RANGE = st.one_of(st.just(ALL_TIME), st.builds(TimeRange, TS, TS))
CELL = st.builds(Cell, KEY, TS, VALUE)
KEYS = st.lists(KEY, max_size=3).map(tuple)
COND = st.one_of(st.builds(NoVersionIn, KEY, TS, TS),
                 st.builds(VersionAt, KEY, TS, st.one_of(st.none(), VALUE)),
                 st.builds(ValuePrefixAt, KEY, TS, VALUE),
                 st.builds(NoValuePrefixAt, KEY, TS, VALUE))
MUT = st.one_of(st.builds(Put, KEY, TS, VALUE), st.builds(DeleteVersion, KEY, TS),
                st.builds(DeleteRange, KEY, TS, TS))
ROW_MUTATION = st.builds(RowMutation, KEY, KEY, st.lists(MUT, max_size=4).map(tuple),
                         st.lists(COND, max_size=3).map(tuple))
RESULT = st.one_of(st.just(MutationResult(True)),
                   st.builds(MutationResult, st.just(False), st.integers(0, 999),
                             st.one_of(st.none(), CELL)))
EXAMPLES = settings(max_examples=150, deadline=None)
M = TypeVar("M", bound=Message)


def reparse(msg: M) -> M:
    """Through bytes and back, as on the wire."""
    copy: M = type(msg).FromString(msg.SerializeToString())
    return copy


@EXAMPLES
@given(st.lists(st.builds(RowRead, KEY, KEY, KEYS, KEYS, RANGE, st.integers(0, 2**32 - 1)),
                max_size=4))
def test_read_request(reads: list[RowRead]) -> None:
    assert wire.read_request_from_pb(reparse(wire.read_request_to_pb(reads))) == reads


@EXAMPLES
@given(st.lists(st.lists(CELL, max_size=4), max_size=4))
def test_read_response(rows: list[list[Cell]]) -> None:
    assert wire.read_response_from_pb(reparse(wire.read_response_to_pb(rows))) == rows


@EXAMPLES
@given(st.builds(ScanRequest, KEY, st.one_of(st.none(), KEY), st.one_of(st.none(), KEY), KEYS,
                 KEYS, RANGE, st.integers(0, 2**32 - 1), st.integers(0, MAX_TS)))
def test_scan_request(s: ScanRequest) -> None:
    assert wire.scan_request_from_pb(reparse(wire.scan_request_to_pb(s))) == s


@EXAMPLES
@given(st.lists(st.builds(Row, KEY, st.lists(CELL, max_size=3).map(tuple)), max_size=4))
def test_scan_response(rows: list[Row]) -> None:
    assert wire.scan_response_from_pb(reparse(wire.scan_response_to_pb(rows))) == rows


@EXAMPLES
@given(st.lists(ROW_MUTATION, max_size=4), st.booleans())
def test_mutate_request(mutations: list[RowMutation], sync: bool) -> None:
    msg = reparse(wire.mutate_request_to_pb(mutations, sync))
    assert msg.sync == sync
    assert wire.mutate_request_from_pb(msg) == mutations


@EXAMPLES
@given(st.lists(RESULT, max_size=6))
def test_mutate_response(results: list[MutationResult]) -> None:
    assert wire.mutate_response_from_pb(reparse(wire.mutate_response_to_pb(results))) == results


@EXAMPLES
@given(st.lists(st.builds(TabletInfo, KEY, st.one_of(st.just(b""), KEY),
                          st.one_of(st.none(), KEY), st.integers(0, MAX_TS)), max_size=4))
def test_tablets(tablets: list[TabletInfo]) -> None:
    msg = pb.ListTabletsResponse()
    wire.tablets_to_pb(msg.tablets, tablets)
    assert wire.tablets_from_pb(reparse(msg).tablets) == tablets


def test_all_time_is_sent_as_absent() -> None:
    msg = wire.read_request_to_pb([RowRead(b"t", b"r")])
    assert not msg.reads[0].HasField("time_range")
    msg = wire.read_request_to_pb([RowRead(b"t", b"r", time_range=TimeRange(0, 0))])
    assert msg.reads[0].HasField("time_range")


def test_condition_or_mutation_without_kind_is_refused() -> None:
    req = pb.MutateRowsRequest()
    row = req.rows.add(table=b"t", row=b"r")
    row.mutations.add()
    with pytest.raises(InvalidArgument, match="mutation has no kind"):
        wire.mutate_request_from_pb(req)
    del row.mutations[:]
    row.conditions.add()
    with pytest.raises(InvalidArgument, match="condition has no kind"):
        wire.mutate_request_from_pb(req)


def test_value_prefix_conditions_are_refused_by_a_server_that_predates_them() -> None:
    """They are kinds of their own, not fields of VersionAt: a server built from the proto
    before them finds the Condition's kind unset and refuses the row (a field it did not
    know would have been dropped silently, leaving a weaker VersionAt to check)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    old_file = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(old_file)  # into a pool of its own: the same names are free
    condition = next(m for m in old_file.message_type if m.name == "Condition")
    kept = [f for f in condition.field if f.name in ("no_version_in", "version_at")]
    del condition.field[:]
    condition.field.extend(kept)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(old_file)
    old_condition = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("bigtable_lite.v1.Condition"))
    for cond in (ValuePrefixAt(b"l", 0, b"\x02owner"), NoValuePrefixAt(b"l", 0, b"\x02owner")):
        sent = wire.mutate_request_to_pb([RowMutation(b"t", b"r", (), (cond,))], False)
        raw = sent.rows[0].conditions[0].SerializeToString()
        assert old_condition.FromString(raw).WhichOneof("kind") is None
        assert wire.mutate_request_from_pb(reparse(sent))[0].conditions == (cond,)


def test_unknown_model_types_are_type_errors() -> None:
    with pytest.raises(TypeError):
        wire.mutate_request_to_pb([RowMutation(b"t", b"r", ("x",))], False)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wire.mutate_request_to_pb([RowMutation(b"t", b"r", (), ("x",))], False)  # type: ignore[arg-type]

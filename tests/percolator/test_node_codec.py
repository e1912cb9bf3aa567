"""The node trusts no client (percolator._node_codec): every command a foreign client can
send is checked before any I/O, and a bad one fails alone -- INVALID_ARGUMENT, as
``InvalidArgument`` or ``LimitExceeded`` -- having written nothing.

Each case is a valid command with one thing wrong, sent by hand as raw protobuf in a
``Node.Batch`` call to a real node (as a client in another language would build it),
beside a good command; the node's whole store is compared before and after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.message import Message

from bigtable_lite import (
    ALL_TIME,
    DEFAULT_LIMITS,
    InvalidArgument,
    LimitExceeded,
    Put,
    RowMutation,
    RowRead,
    ScanRequest,
    wire,
)
from percolator._node_codec import COMMAND_TAGS, ENTRY_TAG, MAX_TTL_MS, SERVICE_NAME
from percolator._status import command_error
from percolator._transport.framing import field, tags
from percolator.node import Node
from percolator.oracle import MAX_COUNT, ORACLE_TABLE
from percolator.v1 import node_pb2 as pb
from percolator.v1 import oracle_pb2

WAIT = 30.0
T = b"codec"          # the table every case names (when its table is not the fault)
S = 1_000             # a start_ts
LIMITS = DEFAULT_LIMITS
LONG_TABLE = b"t" * (LIMITS.max_table_bytes + 1)
LONG_ROW = b"r" * (LIMITS.max_row_bytes + 1)
LONG_COLUMN = b"c" * LIMITS.max_column_bytes  # one byte of the store's column is the kind's
TOO_MANY = LIMITS.max_batch_rows + 1
UNKNOWN = b"\x98\x06\x01"  # field 99, varint 1: in no message of the contract
IA, LE = "InvalidArgument", "LimitExceeded"


# --- valid commands, and ways to spoil them ------------------------------------------------


def key(row: bytes = b"p", column: bytes = b"c") -> pb.Key:
    return pb.Key(row=row, column=column)


def rc(row: bytes, *columns: bytes) -> pb.RowColumns:
    return pb.RowColumns(row=row, columns=columns)


def cw(column: bytes = b"c", value: bytes = b"v", delete: bool = False) -> pb.CellWrite:
    return pb.CellWrite(column=column, value=value, delete=delete)


def rw(row: bytes, *cells: pb.CellWrite) -> pb.RowWrites:
    return pb.RowWrites(row=row, cells=cells)


def many_keys() -> list[pb.RowColumns]:
    return [rc(b"r%05d" % i, b"c") for i in range(TOO_MANY)]


def many_writes() -> list[pb.RowWrites]:
    return [rw(b"r%05d" % i, cw()) for i in range(TOO_MANY)]


BASES: dict[str, Callable[[], Message]] = {
    "get_timestamps": lambda: oracle_pb2.GetTimestampsRequest(count=2),
    "read": lambda: pb.ReadRequest(table=T, start_ts=S, rows=[rc(b"p", b"c")]),
    "scan": lambda: pb.ScanRequest(table=T, start_ts=S, limit=10),
    "prewrite": lambda: pb.PrewriteRequest(table=T, start_ts=S, primary=key(), ttl_ms=1000,
                                           rows=[rw(b"p", cw()), rw(b"s", cw())]),
    "commit": lambda: pb.CommitRequest(table=T, start_ts=S, primary=key(),
                                       secondaries=[rc(b"s", b"c")]),
    "one_phase": lambda: pb.OnePhaseRequest(table=T, start_ts=S, rows=[rw(b"p", cw())]),
    "resolve": lambda: pb.ResolveRequest(table=T, start_ts=S, cells=[rc(b"s", b"c")]),
    "rollback": lambda: pb.RollbackRequest(table=T, start_ts=S, primary=key(),
                                           cells=[rc(b"s", b"c")]),
    "heartbeat": lambda: pb.HeartbeatRequest(table=T, start_ts=S, primary=key(), ttl_ms=1000),
    "check_txn_status": lambda: pb.CheckTxnStatusRequest(table=T, primary=key(), start_ts=S),
    "register_observed": lambda: pb.RegisterObservedRequest(table=T, columns=[b"obs"]),
    "observed_columns": lambda: pb.ObservedColumnsRequest(table=T),
    "read_rows": lambda: wire.read_request_to_pb([RowRead(T, b"r")]),
    "mutate_rows": lambda: wire.mutate_request_to_pb(
        [RowMutation(T, b"r", (Put(b"c", 1, b"v"),))], False),
    "report_snapshots": lambda: pb.ReportSnapshotsRequest(oldest_start_ts=S, seen_ts=S,
                                                          seq=1),
    "collect_garbage": lambda: pb.CollectGarbageRequest(),
    "clock": lambda: pb.ClockRequest(),
}


@dataclass(frozen=True)
class Case:
    kind: str
    what: str
    spoil: Callable[[Message], bytes | None]  # changes the message; or returns its bytes
    error: str

    @property
    def id(self) -> str:
        return f"{self.kind}: {self.what}"

    def payload(self) -> bytes:
        msg = BASES[self.kind]()
        raw = self.spoil(msg)
        return raw if raw is not None else msg.SerializeToString()


def setting(**fields: object) -> Callable[[Message], None]:
    """Spoil by setting fields (lists replace repeated fields)."""
    def spoil(msg: Message) -> None:
        for name, value in fields.items():
            if isinstance(value, list):
                msg.ClearField(name)
                getattr(msg, name).extend(value)
            elif isinstance(value, Message):
                getattr(msg, name).CopyFrom(value)
            else:
                setattr(msg, name, value)
    return spoil


def unknown_field(msg: Message) -> bytes:
    return msg.SerializeToString() + UNKNOWN


def nested_unknown(name: str, entry: Message) -> Callable[[Message], bytes]:
    """Spoil by adding one more entry to the message field ``name``, carrying an unknown
    field of its own."""
    def spoil(msg: Message) -> bytes:
        tag = tags(msg.DESCRIPTOR)[name]
        return msg.SerializeToString() + field(tag, entry.SerializeToString() + UNKNOWN)
    return spoil


def cleared(*names: str) -> Callable[[Message], None]:
    def spoil(msg: Message) -> None:
        for name in names:
            msg.ClearField(name)
    return spoil


def table_cases(kind: str) -> list[Case]:
    return [Case(kind, "empty table", setting(table=b""), IA),
            Case(kind, "oversize table", setting(table=LONG_TABLE), LE)]


def key_cases(kind: str, name: str) -> list[Case]:
    """A Key field's faults."""
    return [Case(kind, f"{name} with an empty row", setting(**{name: key(b"", b"c")}), IA),
            Case(kind, f"{name} with an empty column", setting(**{name: key(b"p", b"")}), IA),
            Case(kind, f"{name} row oversize", setting(**{name: key(LONG_ROW, b"c")}), LE),
            Case(kind, f"{name} column oversize", setting(**{name: key(b"p", LONG_COLUMN)}),
                 LE),
            Case(kind, f"{name} unset", cleared(name), IA)]


def cells_cases(kind: str, name: str) -> list[Case]:
    """A repeated RowColumns field's faults."""
    return [Case(kind, f"{name}: an empty row", setting(**{name: [rc(b"", b"c")]}), IA),
            Case(kind, f"{name}: an empty column", setting(**{name: [rc(b"s", b"")]}), IA),
            Case(kind, f"{name}: an oversize row", setting(**{name: [rc(LONG_ROW, b"c")]}), LE),
            Case(kind, f"{name}: an oversize column",
                 setting(**{name: [rc(b"s", LONG_COLUMN)]}), LE),
            Case(kind, f"{name}: too many cells", setting(**{name: many_keys()}), LE),
            Case(kind, f"{name}: an unknown field in a row",
                 nested_unknown(name, rc(b"s2", b"c")), IA)]


def unknown_in_cell(msg: Message) -> bytes:
    """A prewrite or one-phase commit one of whose cells carries an unknown field."""
    cell = cw(b"u").SerializeToString() + UNKNOWN
    row = rw(b"s4").SerializeToString() + field(tags(pb.RowWrites.DESCRIPTOR)["cells"], cell)
    return msg.SerializeToString() + field(tags(msg.DESCRIPTOR)["rows"], row)


def writes_cases(kind: str) -> list[Case]:
    """A repeated RowWrites field's faults (prewrite, one_phase)."""
    return [
        Case(kind, "a row without cells", setting(rows=[rw(b"p", cw()), rw(b"s")]), IA),
        Case(kind, "an empty row", setting(rows=[rw(b"p", cw()), rw(b"", cw())]), IA),
        Case(kind, "an oversize row", setting(rows=[rw(b"p", cw()), rw(LONG_ROW, cw())]), LE),
        Case(kind, "an empty column", setting(rows=[rw(b"p", cw(), cw(b""))]), IA),
        Case(kind, "an oversize column", setting(rows=[rw(b"p", cw(), cw(LONG_COLUMN))]), LE),
        Case(kind, "a value over the limit",
             setting(rows=[rw(b"p", cw(value=b"v" * (LIMITS.max_value_bytes + 1)))]), LE),
        Case(kind, "a cell written twice in a row", setting(rows=[rw(b"p", cw(), cw())]), IA),
        Case(kind, "a cell written twice in two entries of its row",
             setting(rows=[rw(b"p", cw()), rw(b"s", cw()), rw(b"s", cw(value=b"w"))]), IA),
        Case(kind, "a delete carrying a value",
             setting(rows=[rw(b"p", cw()), rw(b"s", cw(value=b"x", delete=True))]), IA),
        Case(kind, "too many cells", setting(rows=[rw(b"p", cw()), *many_writes()]), LE),
        Case(kind, "an unknown field in a row", nested_unknown("rows", rw(b"s2", cw())), IA),
        Case(kind, "an unknown field in a cell", unknown_in_cell, IA),
    ]


def start_ts_zero(kind: str) -> Case:
    return Case(kind, "start_ts 0", setting(start_ts=0), IA)


def unknown_top(kind: str) -> Case:
    return Case(kind, "an unknown field", unknown_field, IA)


CASES: list[Case] = [
    Case("get_timestamps", "count 0", setting(count=0), IA),
    Case("get_timestamps", "count over the maximum", setting(count=MAX_COUNT + 1), IA),
    unknown_top("get_timestamps"),
    *table_cases("read"), *cells_cases("read", "rows"), unknown_top("read"),
    *table_cases("scan"), start_ts_zero("scan"),
    Case("scan", "an empty start row", setting(start_row=b""), IA),
    Case("scan", "an oversize end row", setting(end_row=LONG_ROW + b"x"), LE),
    Case("scan", "an empty column", setting(columns=[b"c", b""]), IA),
    Case("scan", "an oversize column", setting(columns=[LONG_COLUMN]), LE),
    Case("scan", "limit 0", setting(limit=0), IA),
    Case("scan", "limit over the rows of a call", setting(limit=TOO_MANY), IA),
    unknown_top("scan"),
    *table_cases("prewrite"), start_ts_zero("prewrite"), *key_cases("prewrite", "primary"),
    Case("prewrite", "no cells", cleared("rows"), IA),
    *writes_cases("prewrite"),
    Case("prewrite", "ttl 0", setting(ttl_ms=0), IA),
    Case("prewrite", "ttl too long", setting(ttl_ms=MAX_TTL_MS + 1), IA),
    Case("prewrite", "the primary second in its row",
         setting(rows=[rw(b"p", cw(b"a"), cw(b"c"))]), IA),
    Case("prewrite", "the primary first in the second row",
         setting(rows=[rw(b"a", cw()), rw(b"p", cw())]), IA),
    unknown_top("prewrite"), Case("prewrite", "an unknown field in the primary",
                                  nested_unknown("primary", key()), IA),
    *table_cases("commit"), start_ts_zero("commit"), *key_cases("commit", "primary"),
    *cells_cases("commit", "secondaries"), *cells_cases("commit", "weak"),
    unknown_top("commit"),
    *table_cases("one_phase"), start_ts_zero("one_phase"),
    Case("one_phase", "nothing to write or notify", cleared("rows"), IA),
    *writes_cases("one_phase"), *cells_cases("one_phase", "weak"), unknown_top("one_phase"),
    *table_cases("resolve"), start_ts_zero("resolve"), *cells_cases("resolve", "cells"),
    unknown_top("resolve"),
    *table_cases("rollback"), start_ts_zero("rollback"), *key_cases("rollback", "primary"),
    *cells_cases("rollback", "cells"), unknown_top("rollback"),
    *table_cases("heartbeat"), start_ts_zero("heartbeat"), *key_cases("heartbeat", "primary"),
    Case("heartbeat", "ttl 0", setting(ttl_ms=0), IA),
    Case("heartbeat", "ttl too long", setting(ttl_ms=MAX_TTL_MS + 1), IA),
    unknown_top("heartbeat"),
    *table_cases("check_txn_status"), start_ts_zero("check_txn_status"),
    *key_cases("check_txn_status", "primary"), unknown_top("check_txn_status"),
    *table_cases("register_observed"),
    Case("register_observed", "no columns", cleared("columns"), IA),
    Case("register_observed", "an empty column", setting(columns=[b"obs", b""]), IA),
    Case("register_observed", "a system column", setting(columns=[b"\x00obs"]), IA),
    Case("register_observed", "an oversize column", setting(columns=[LONG_COLUMN]), LE),
    unknown_top("register_observed"),
    *table_cases("observed_columns"), unknown_top("observed_columns"),
    Case("read_rows", "an empty row", lambda m: wire.read_request_to_pb(
        [RowRead(T, b"r"), RowRead(T, b"")]).SerializeToString(), IA),
    unknown_top("read_rows"),
    Case("mutate_rows", "a value over the limit", lambda m: wire.mutate_request_to_pb(
        [RowMutation(T, b"r", (Put(b"c", 1, b"v" * (LIMITS.max_value_bytes + 1)),))],
        False).SerializeToString(), LE),
    Case("mutate_rows", "an unknown field in a row", nested_unknown(
        "rows", wire.mutate_request_to_pb([RowMutation(T, b"s", (Put(b"c", 1, b"v"),))],
                                          False).rows[0]), IA),
    Case("report_snapshots", "oldest_start_ts 0", setting(oldest_start_ts=0), IA),
    Case("report_snapshots", "no seq", setting(seq=0), IA),
    unknown_top("report_snapshots"),
    unknown_top("collect_garbage"),
    unknown_top("clock"),
]


# --- the node ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with Node(tmp_path_factory.mktemp("codec") / "data", "127.0.0.1:0") as n:
        n.backend.oracle.get_timestamps(2 * S)  # S handed out: steps at it are taken
        yield n


CLIENT_ID = b"codec-test"


def batch_call(node: Node, *commands: bytes, client_id: bytes = CLIENT_ID) -> list[pb.Result]:
    """A Batch call of raw commands (each a serialized ``Command``), built by hand, from
    ``client_id`` (empty: an anonymous client)."""
    raw = b"".join(field(ENTRY_TAG, c) for c in commands)
    if client_id:
        raw += pb.BatchRequest(client_id=client_id).SerializeToString()
    with grpc.insecure_channel(node.address) as channel:
        call = channel.unary_unary(f"/{SERVICE_NAME}/Batch", request_serializer=None,
                                   response_deserializer=pb.BatchResponse.FromString)
        reply: pb.BatchResponse = call(raw, timeout=WAIT)
    assert len(reply.results) == len(commands)
    return list(reply.results)


def command(kind: str, payload: bytes) -> bytes:
    return field(COMMAND_TAGS[kind], payload)


GOOD = command("read", pb.ReadRequest(table=T, start_ts=S, rows=[rc(b"g", b"c")])
               .SerializeToString())


def everything(node: Node) -> dict[bytes, list[tuple[bytes, bytes, int, bytes]]]:
    """Every version of every cell the node stores, by table (the oracle's left out)."""
    out = {}
    for tablet in node.store.list_tablets():
        if tablet.table == ORACLE_TABLE or tablet.table in out:
            continue
        out[tablet.table] = [(row.row, cell.column, cell.ts, cell.value)
                             for row in node.store.scan(ScanRequest(
                                 tablet.table, None, None, (), (), ALL_TIME, 0))
                             for cell in row.cells]
    return out


def test_every_kind_has_cases() -> None:
    assert {c.kind for c in CASES} == set(COMMAND_TAGS)


@pytest.mark.parametrize("kind", sorted(BASES))
def test_the_valid_commands_the_cases_spoil_are_valid(node: Node, kind: str) -> None:
    (result, good) = batch_call(node, command(kind, BASES[kind]().SerializeToString()), GOOD)
    assert result.WhichOneof("kind") == kind, result
    assert good.WhichOneof("kind") == "read"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_command_is_refused_alone_and_writes_nothing(node: Node, case: Case) -> None:
    before = everything(node)
    bad, good = batch_call(node, command(case.kind, case.payload()), GOOD)
    assert bad.WhichOneof("kind") == "error", bad
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], bad.error
    assert bad.error.error == case.error, bad.error
    raised = command_error(bad.error.code, bad.error.message, bad.error.error)
    assert type(raised) is (LimitExceeded if case.error == LE else InvalidArgument)
    assert good.WhichOneof("kind") == "read" and good.read.start_ts == S
    assert everything(node) == before, "a refused command wrote something"


def test_a_report_of_an_anonymous_client_is_refused(node: Node) -> None:
    """Reports hold the safe point for their client: one without a client_id has none."""
    report = command("report_snapshots", BASES["report_snapshots"]().SerializeToString())
    bad, good = batch_call(node, report, GOOD, client_id=b"")
    assert bad.WhichOneof("kind") == "error", bad
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], bad.error
    assert good.WhichOneof("kind") == "read"
    (fine,) = batch_call(node, report)
    assert fine.WhichOneof("kind") == "report_snapshots" and fine.report_snapshots.lease_ms > 0


def test_an_unknown_field_beside_a_known_kind_is_refused(node: Node) -> None:
    """A Command carrying a field this node does not know, beside its kind: the node
    would half-understand it."""
    spoiled = command("prewrite", BASES["prewrite"]().SerializeToString()) + UNKNOWN
    before = everything(node)
    bad, good = batch_call(node, spoiled, GOOD)
    assert bad.WhichOneof("kind") == "error"
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert good.WhichOneof("kind") == "read"
    assert everything(node) == before


def test_a_command_of_no_kind_known_is_refused(node: Node) -> None:
    """A kind from a later contract (field 20 of Command) reaches this node as no kind."""
    future = b"\xa2\x01" + bytes((2,)) + b"\x08\x01"  # field 20, a message of one varint
    bad, good = batch_call(node, future, GOOD)
    assert bad.WhichOneof("kind") == "error" and bad.error.error == IA
    assert good.WhichOneof("kind") == "read"


def test_a_start_ts_past_64_bits_cannot_be_read_and_fails_the_call(node: Node) -> None:
    """A varint of more than 64 bits does not parse: the batch is refused whole (a varint
    of ten bytes is read modulo 2**64, as protobuf reads every varint)."""
    eleven_bytes = b"\x80" * 10 + b"\x01"  # 2**70
    payload = pb.ReadRequest(table=T, rows=[rc(b"p", b"c")]).SerializeToString() + \
        b"\x10" + eleven_bytes  # start_ts, field 2
    before = everything(node)
    with pytest.raises(grpc.RpcError) as info:
        batch_call(node, command("read", payload), GOOD)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert everything(node) == before


def test_a_foreign_encoding_of_known_fields_is_read_as_ours(node: Node) -> None:
    """Not every encoder writes what ours writes (a default value written out, a message
    field in two pieces): the node reads such a batch as any other, and still refuses its
    unknown fields command by command."""
    read = pb.ReadRequest(table=T, rows=[rc(b"p", b"c")]).SerializeToString()
    written_out = read + b"\x10\x00"  # start_ts 0 (a fresh read) written out
    primary = tags(pb.HeartbeatRequest.DESCRIPTOR)["primary"]
    heartbeat = pb.HeartbeatRequest(table=T, start_ts=S, ttl_ms=1000).SerializeToString() + \
        field(primary, pb.Key(row=b"p").SerializeToString()) + \
        field(primary, pb.Key(column=b"c").SerializeToString())  # merged into one Key
    spoiled = command("read", read + UNKNOWN)
    fresh, held, bad, good = batch_call(node, command("read", written_out),
                                        command("heartbeat", heartbeat), spoiled, GOOD)
    assert fresh.WhichOneof("kind") == "read" and fresh.read.start_ts > 0
    assert held.WhichOneof("kind") == "heartbeat"
    assert bad.WhichOneof("kind") == "error" and bad.error.error == IA
    assert good.WhichOneof("kind") == "read"

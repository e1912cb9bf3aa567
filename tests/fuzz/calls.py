"""Every RPC a node serves, called as a client in another language would: by path, with
bytes built by hand (``tests/fuzz/wire.py``), no generated stub in between.

For each method: its path, its shape (unary, server streaming, bidirectional), its
request type, the status codes its contract documents for a failed call (anything
else -- UNKNOWN, INTERNAL, a deadline -- is a finding), and what a reply must satisfy.
``Node.Batch`` appears once per command kind, so that every kind gets its share of
examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from bigtable_lite import MAX_TS
from bigtable_lite.v1 import tablet_pb2
from percolator.v1 import node_pb2, oracle_pb2
from percolator.v1 import notifications_pb2 as notify_pb2
from percolator.v1 import transactions_pb2 as txn_pb2

from .target import CALL_TIMEOUT, PROTECTED_TABLES

Code = grpc.StatusCode

STORE_CODES = frozenset({Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED,
                         Code.FAILED_PRECONDITION})
"""tablet.proto: a malformed or oversize request, a message too large, a row on no
hosted tablet (UNAVAILABLE while shutting down and DATA_LOSS for damaged data are
documented too, but neither happens here)."""
COMMAND_CODES = frozenset({Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED,
                           Code.FAILED_PRECONDITION, Code.OUT_OF_RANGE, Code.DATA_LOSS})
"""A batched command's error (node.proto: the code it would fail with as a call).
DATA_LOSS: a cell raw-written by a fuzzed ``MutateRows`` with bytes that are no lock or
write record (any client may write raw until roles exist) is damaged data to a step."""
REFLECTION_CODES = frozenset({Code.NOT_FOUND, Code.INVALID_ARGUMENT, Code.UNIMPLEMENTED})
"""In-band ``error_response`` codes of the reflection service."""

NOTIFY_CODES = frozenset({Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED})
"""The observers' verbs: bad input, or a Parked listing beyond a reply's budget."""
TXN_CODES = frozenset({Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ABORTED,
                       Code.RESOURCE_EXHAUSTED, Code.FAILED_PRECONDITION})
"""transactions.proto's codes; its UNAVAILABLE is allowed only as the answer of a read
that waited out a live lock (its details' Conflict says LOCKED: :func:`lock_wait`)."""

WRITE_TYPES = frozenset({"bigtable_lite.v1.RowMutation", "percolator.v1.PrewriteRequest",
                         "percolator.v1.OnePhaseRequest", "percolator.v1.TxnBeginRequest"})
"""Messages that write: the fuzz keeps them off :data:`~.target.PROTECTED_TABLES` (a
Transactions session writes, at its Commit, to the table its Begin named)."""

Checker = Callable[[Message, list[bytes]], None]


@dataclass(frozen=True)
class Rpc:
    id: str
    path: str
    shape: str  # "unary", "server_stream", "bidi"
    request: Descriptor
    reply: Descriptor
    codes: frozenset[grpc.StatusCode]
    command: str | None = None  # Node.Batch: the command kind most examples carry
    max_replies: int = 10_000   # a stream is cancelled after this many (Health.Watch: 1)
    check: Checker | None = None


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    replies: list[bytes]
    trailers: tuple[tuple[str, str | bytes], ...] = ()


def message_class(desc: Descriptor) -> type[Message]:
    cls: type[Message] = GetMessageClass(desc)
    return cls


def decode(desc: Descriptor, raw: bytes) -> Message | None:
    """``raw`` as the server's protobuf library reads it, or None if it does not decode."""
    try:
        return message_class(desc).FromString(raw)
    except DecodeError:
        return None


def writes_protected(msg: Message) -> bool:
    """Whether ``msg`` holds, at any depth, a write to a protected table."""
    raw = msg.SerializeToString()
    if not any(table in raw for table in PROTECTED_TABLES):
        return False  # the common case, and a fast one for a message of 60 MiB
    return _writes_protected(msg)


def _writes_protected(msg: Message) -> bool:
    if msg.DESCRIPTOR.full_name in WRITE_TYPES and getattr(msg, "table") in PROTECTED_TABLES:
        return True
    for f, value in msg.ListFields():
        if f.message_type is None:
            continue
        items = value if f.is_repeated else [value]
        if len(items) > 100:  # a huge count is mostly copies: each distinct one once
            items = list({item.SerializeToString(): item for item in items}.values())
        if any(_writes_protected(item) for item in items):
            return True
    return False


# --- replies -------------------------------------------------------------------------------


def _check_timestamps(request: Message, replies: list[bytes]) -> None:
    count = getattr(request, "count")
    for raw in replies:
        reply = oracle_pb2.GetTimestampsResponse.FromString(raw)
        assert reply.count == count and 0 < reply.first and reply.first + count - 1 <= MAX_TS, \
            (count, reply)


def _check_batch(request: Message, replies: list[bytes]) -> None:
    """One result per command, of the command's kind or an error with a documented code."""
    commands = list(getattr(request, "commands"))
    for raw in replies:
        reply = node_pb2.BatchResponse.FromString(raw)
        assert len(reply.results) == len(commands), (len(reply.results), len(commands))
        for command, result in zip(commands, reply.results):
            kind, got = command.WhichOneof("kind"), result.WhichOneof("kind")
            if got == "error":
                code = _code(result.error.code)
                assert code in COMMAND_CODES, (kind, code, result.error)
            else:
                assert got == kind, (kind, got)
            if got == "get_timestamps":
                ts = result.get_timestamps
                assert ts.count == command.get_timestamps.count and ts.first > 0, ts


def lock_wait(trailers: Sequence[tuple[str, str | bytes]]) -> bool:
    """Whether a call's status details hold a Conflict of reason LOCKED (transactions.proto:
    UNAVAILABLE after a read waited out a live lock)."""
    for key, value in trailers:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                conflict = node_pb2.Conflict()
                if detail.Unpack(conflict) and conflict.reason == node_pb2.Conflict.LOCKED:
                    return True
    return False


def _check_txn_stream(request: Message, replies: list[bytes]) -> None:
    """Each reply of the request's kind, or an error with a documented code."""
    kind = request.WhichOneof("call")
    for raw in replies:
        reply = txn_pb2.TxnStreamResponse.FromString(raw)
        got = reply.WhichOneof("result")
        if got == "error":
            code = _code(reply.error.code)
            locked = reply.error.conflict.reason == node_pb2.Conflict.LOCKED
            assert code in TXN_CODES or code is Code.UNAVAILABLE and locked, (kind, reply.error)
        else:
            assert got == kind, (kind, got)


def _check_reflection(request: Message, replies: list[bytes]) -> None:
    for raw in replies:
        reply = reflection_pb2.ServerReflectionResponse.FromString(raw)
        if reply.WhichOneof("message_response") == "error_response":
            code = _code(reply.error_response.error_code)
            assert code in REFLECTION_CODES, reply.error_response


def _check_health(request: Message, replies: list[bytes]) -> None:
    for raw in replies:
        health_pb2.HealthCheckResponse.FromString(raw)


def _code(number: int) -> grpc.StatusCode | int:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return number


def _reply_parses(desc: Descriptor) -> Checker:
    def check(request: Message, replies: list[bytes]) -> None:
        for raw in replies:
            message_class(desc).FromString(raw)
    return check


# --- the catalogue -------------------------------------------------------------------------


def _methods(file: Any, service: str) -> dict[str, Any]:
    return {m.name: m for m in file.DESCRIPTOR.services_by_name[service].methods}


def _shape(method: Any) -> str:
    if method.client_streaming:
        return "bidi"
    return "server_stream" if method.server_streaming else "unary"


def _rpc(file: Any, service: str, name: str, codes: frozenset[grpc.StatusCode], *,
         rpc_id: str | None = None, check: Checker | None = None, **kw: Any) -> Rpc:
    m = _methods(file, service)[name]
    return Rpc(rpc_id or f"{service}.{name}", f"/{m.containing_service.full_name}/{name}",
               _shape(m), m.input_type, m.output_type, codes,
               check=check or _reply_parses(m.output_type), **kw)


def _catalogue() -> list[Rpc]:
    rpcs = [_rpc(tablet_pb2, "TabletService", name, STORE_CODES)
            for name in _methods(tablet_pb2, "TabletService")]
    oracle = frozenset({Code.INVALID_ARGUMENT, Code.OUT_OF_RANGE})
    rpcs += [
        _rpc(oracle_pb2, "TimestampOracle", "GetTimestamps", oracle, check=_check_timestamps),
        # A refused stream: RESOURCE_EXHAUSTED before any request is read.
        _rpc(oracle_pb2, "TimestampOracle", "StreamTimestamps",
             oracle | {Code.RESOURCE_EXHAUSTED}, check=_check_timestamps),
        _rpc(oracle_pb2, "TimestampOracle", "GetOracleStats", frozenset({Code.INVALID_ARGUMENT})),
    ]
    batch = frozenset({Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED})
    rpcs += [_rpc(node_pb2, "Node", "Batch", batch, rpc_id=f"Node.Batch[{f.name}]",
                  check=_check_batch, command=f.name)
             for f in node_pb2.Command.DESCRIPTOR.fields]
    rpcs.append(_rpc(node_pb2, "Node", "BatchStream", batch, check=_check_batch))
    rpcs += [_rpc(txn_pb2, "Transactions", name, TXN_CODES,
                  check=_check_txn_stream if name == "Stream" else None)
             for name in _methods(txn_pb2, "Transactions")]
    rpcs += [_rpc(notify_pb2, "Notifications", name, NOTIFY_CODES)
             for name in _methods(notify_pb2, "Notifications")]
    # Health and reflection: a request over their 16 KiB budget is RESOURCE_EXHAUSTED
    # (bigtable_lite.server.SMALL_REQUEST_BYTES), as over any method's budget.
    health = frozenset({Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.RESOURCE_EXHAUSTED})
    rpcs += [_rpc(health_pb2, "Health", "Check", health, check=_check_health),
             _rpc(health_pb2, "Health", "Watch", health, check=_check_health, max_replies=1)]
    rpcs.append(_rpc(reflection_pb2, "ServerReflection", "ServerReflectionInfo",
                     frozenset({Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED}),
                     check=_check_reflection))
    return rpcs


RPCS = _catalogue()
REQUEST_TYPES = tuple({rpc.request.full_name: rpc.request for rpc in RPCS}.values())


def invoke(channel: grpc.Channel, rpc: Rpc, requests: Sequence[bytes]) -> Outcome:
    """Call ``rpc`` with raw request bytes (one for a unary request, any for a stream)."""
    replies: list[bytes] = []
    try:
        if rpc.shape == "unary":
            reply = channel.unary_unary(rpc.path)(requests[0], timeout=CALL_TIMEOUT)
            replies.append(reply)
        else:
            if rpc.shape == "server_stream":
                call = channel.unary_stream(rpc.path)(requests[0], timeout=CALL_TIMEOUT)
            else:
                call = channel.stream_stream(rpc.path)(iter(requests), timeout=CALL_TIMEOUT)
            for reply in call:
                replies.append(reply)
                if len(replies) >= rpc.max_replies:
                    call.cancel()
                    break
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else Code.UNKNOWN
        if code is Code.CANCELLED and len(replies) >= rpc.max_replies:
            return Outcome(Code.OK, "", replies)  # we cancelled it
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        trailers = tuple(exc.trailing_metadata() or ()) if isinstance(exc, grpc.Call) else ()
        return Outcome(code, details or "", replies, trailers)
    return Outcome(Code.OK, "", replies)


# --- outcomes ------------------------------------------------------------------------------

def check_outcome(rpc: Rpc, requests: Sequence[bytes], outcome: Outcome) -> None:
    """The call ended with a code its contract documents, and its replies are as the
    contract says."""
    if outcome.code is not Code.OK:
        documented = outcome.code in rpc.codes or (
            outcome.code is Code.UNAVAILABLE and rpc.codes is TXN_CODES
            and lock_wait(outcome.trailers))
        assert documented, f"{rpc.id} failed with {outcome.code.name}: {outcome.details}"
    if rpc.check is None:
        return
    decoded = [decode(rpc.request, r) for r in requests]
    if rpc.shape == "server_stream":
        if decoded[0] is not None:
            rpc.check(decoded[0], outcome.replies)
        return
    for request, reply in zip(decoded, outcome.replies):  # unary and bidi: one per request
        if request is None:  # only a stream that answers failures in band may go on
            assert rpc.request is txn_pb2.TxnStreamRequest.DESCRIPTOR, \
                f"{rpc.id} answered a request that does not decode"
            error = txn_pb2.TxnStreamResponse.FromString(reply).error
            assert _code(error.code) is Code.INVALID_ARGUMENT, error
            continue
        rpc.check(request, [reply])

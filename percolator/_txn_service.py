"""Transactions: the node's gRPC service running whole transactions for remote callers.

``percolator.v1.Transactions`` (``proto/percolator/v1/transactions.proto``) lets a
service in any language use transactions without a client library: it begins, reads
and commits, and the node does the rest with the Python client's own code
(:mod:`percolator._sessions` holds each transaction as a real ``Transaction`` over the
node's ``LocalBackend``).  This module only decodes and checks requests (the node
trusts no caller: unknown fields, empty or system columns, cells written twice, limits
-> INVALID_ARGUMENT before anything happens), encodes replies, and maps errors to
status codes (``_status.service_status_for``).

The same requests arrive over two carriers, answered by the same code: gRPC (unary
calls, or messages of one ``Stream``) and TXN frames of the node's native transport
(:meth:`TransactionsService.native_handlers`, bound to the connection's caller when its
HELLO is admitted), for callers to whom gRPC's cost per message matters.

A conflict comes back as ABORTED with a ``google.rpc.Status`` in the standard
``grpc-status-details-bin`` trailer (gRPC's rich error model, read by grpcio-status,
Go's ``status.FromError``, Java's ``StatusProto``, or protobufjs in Node.js) holding a
``percolator.v1.Conflict`` (reason, row, column, the conflicting commit_ts or lock);
a read that waited out the bound on a live lock comes back UNAVAILABLE with a Conflict
of reason LOCKED.  A limit also sets the ``bigtable-lite-error: LimitExceeded`` trailer;
a snapshot below the GC safe point comes back FAILED_PRECONDITION with
``bigtable-lite-error: SnapshotTooOld`` (run the transaction again).

Roles (``bigtable_lite.auth``; issue 16): Begin, Get, BatchGet, Scan and Rollback need
``read`` (a reader holds a snapshot and ends it), Commit needs ``write``.  ``Stream``
is admitted with ``read`` and each of its requests is checked against the caller's
role here, as the node's batch streams are: a Commit sent by a reader is answered
PERMISSION_DENIED alone and the stream goes on.  A transaction is its caller's (the
token that began it: ``_sessions``).  The server's guard bounds each request to the
message limit and cancels a stream whose caller reads nothing; the service admits its
streams itself (``max_streams``).  A reply carries at most a quarter of the
message limit of values, gathered no further than that: a BatchGet naming 1,000 cells
of 4 MiB is refused after reading about 16 MiB, not 4 GiB.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, unknown_fields
from google.protobuf.message import Message
from google.rpc import status_pb2

from bigtable_lite import InvalidArgument, LimitExceeded, PermissionDenied, ReplyTooLarge
from bigtable_lite import status as store_status
from bigtable_lite.auth import Role, caller_of, role_of
from bigtable_lite.reflection import source_descriptors
from bigtable_lite.server import ServiceRegistration

from ._backend import Conflict, Key
from ._local import LocalBackend
from ._sessions import DEFAULT_TTL_MS, MAX_TTL_MS, Sessions, Write
from ._status import error_name, service_status_for
from ._transaction import Transaction
from ._transport import native_wire
from ._transport.native_server import Executor
from ._transport.stream_slots import StreamSlots
from ._waits import MayWait
from .errors import CommitConflict, LockWaitTimeout
from .layout import DEFAULT_TABLE
from .v1 import node_pb2
from .v1 import transactions_pb2 as pb

__all__ = ["MAX_READ_CELLS", "MAX_SCAN_CELLS", "ROLES", "SERVICE_NAME", "TransactionsService"]

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Transactions"].full_name
MAX_READ_CELLS = 1_000
"""Cells one Begin or BatchGet reads."""
MAX_SCAN_CELLS = 1_000
DEFAULT_SCAN_CELLS = 100
DETAILS_KEY = "grpc-status-details-bin"
STREAM_KEY = "percolator-txn-stream"
"""Trailer of a refused Stream call (value ``_transport.stream_slots.REFUSED``)."""
DEFAULT_MAX_STREAMS = 4
ROLES: dict[str, Role] = {"Begin": Role.READ, "Get": Role.READ, "BatchGet": Role.READ,
                          "Scan": Role.READ, "Rollback": Role.READ, "Commit": Role.WRITE,
                          "Stream": Role.READ}
"""The least role of each method; each request of a Stream needs its method's."""

_REASONS = {Conflict.WRITE_CONFLICT: node_pb2.Conflict.WRITE_CONFLICT,
            Conflict.LOCKED: node_pb2.Conflict.LOCKED,
            Conflict.ROLLED_BACK: node_pb2.Conflict.ROLLED_BACK}


class TransactionsService:
    """The Transactions servicer over one node's backend.  Thread-safe."""

    def __init__(self, backend: LocalBackend, sessions: Sessions | None = None, *,
                 max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        self._limits = backend.limits
        self.sessions = sessions or Sessions(backend)
        # Reply bytes a read may fill (room left for keys and framing).
        self._budget = backend.limits.max_message_bytes // 4
        self._streams = StreamSlots(max_streams, STREAM_KEY)
        self._methods: dict[str, tuple[type[Message], Callable[[Any, bytes], Message]]] = {
            "Begin": (pb.TxnBeginRequest, self._begin),
            "Get": (pb.TxnGetRequest, self._get),
            "BatchGet": (pb.TxnBatchGetRequest, self._batch_get),
            "Scan": (pb.TxnScanRequest, self._scan),
            "Commit": (pb.TxnCommitRequest, self._commit),
            "Rollback": (pb.TxnRollbackRequest, self._rollback),
        }
        assert {kind_method(f.name) for f in pb.TxnStreamRequest.DESCRIPTOR.fields} == set(
            self._methods)

    # --- decoded ----------------------------------------------------------------------------

    def _begin(self, msg: pb.TxnBeginRequest, caller: bytes) -> pb.TxnBeginResponse:
        ttl_ms = msg.ttl_ms or DEFAULT_TTL_MS
        if ttl_ms > MAX_TTL_MS:
            raise LimitExceeded(f"ttl_ms {ttl_ms} is over the limit {MAX_TTL_MS}")
        reads = _keys(msg.reads, "reads", MAX_READ_CELLS)
        if msg.read_only:
            start_ts, values = self.sessions.read_once(msg.table or DEFAULT_TABLE,
                                                       lambda txn: self._read(txn, reads))
            return pb.TxnBeginResponse(txn_id=start_ts, values=self._values(reads, values))
        session, values = self.sessions.begin(msg.table or DEFAULT_TABLE, ttl_ms,
                                              lambda txn: self._read(txn, reads), owner=caller)
        return pb.TxnBeginResponse(txn_id=session.txn_id, ttl_ms=ttl_ms,
                                   values=self._values(reads, values))

    def _get(self, msg: pb.TxnGetRequest, caller: bytes) -> pb.TxnGetResponse:
        key = (msg.row, msg.column)
        with self.sessions.active(_txn_id(msg.txn_id), caller) as txn:
            value = txn.get(*key)
        return pb.TxnGetResponse(value=self._values([key], {key: value})[0])

    def _batch_get(self, msg: pb.TxnBatchGetRequest, caller: bytes) -> pb.TxnBatchGetResponse:
        keys = _keys(msg.cells, "cells", MAX_READ_CELLS)
        with self.sessions.active(_txn_id(msg.txn_id), caller) as txn:
            values = self._read(txn, keys)
        return pb.TxnBatchGetResponse(values=self._values(keys, values))

    def _read(self, txn: Transaction, keys: Sequence[Key]) -> dict[Key, bytes | None]:
        """Values of ``keys`` (each cell once), gathered no further than the reply's budget:
        each read asks for no more cells than what is left of it could hold at their
        largest, so what is held stays within the budget plus one value."""
        cells = list(dict.fromkeys(keys))
        largest = self._limits.max_value_bytes
        values: dict[Key, bytes | None] = {}
        size = 0
        start = 0
        while start < len(cells):
            if size > self._budget:
                raise self._too_large(size)
            count = max(1, (self._budget - size) // largest)
            part = txn.get_many(cells[start:start + count])
            size += sum([len(row) + len(column) + len(value or b"")
                         for (row, column), value in part.items()])
            values.update(part)
            start += count
        return values

    def _values(self, keys: Sequence[Key], values: dict[Key, bytes | None]
                ) -> list[pb.TxnValue]:
        """The reply's values in request order (a cell named twice is sent twice): refused
        as soon as they outgrow the budget, before they are copied further."""
        out = []
        size = 0
        for row, column in keys:
            value = values[(row, column)]
            size += len(row) + len(column) + len(value or b"")
            if size > self._budget:
                raise self._too_large(size)
            out.append(pb.TxnValue(row=row, column=column, found=value is not None,
                                   value=value or b""))
        return out

    def _too_large(self, size: int) -> ReplyTooLarge:
        return ReplyTooLarge(f"the values read are over {size - 1} bytes, over the"
                             f" {self._budget} a reply may carry: read fewer cells per call")

    def _scan(self, msg: pb.TxnScanRequest, caller: bytes) -> pb.TxnScanResponse:
        limit = msg.limit or DEFAULT_SCAN_CELLS
        if limit > MAX_SCAN_CELLS:
            raise LimitExceeded(f"limit {limit} is over {MAX_SCAN_CELLS} cells per page")
        start: bytes | None = msg.start_row or None
        after: Key | None = None
        if msg.HasField("after"):
            _check_known(msg.after)
            after = (msg.after.row, msg.after.column)
            if not after[0] or not after[1]:
                raise InvalidArgument("after needs a row and a column")
            if start is None or after[0] > start:
                start = after[0]
        reply = pb.TxnScanResponse()
        size = 0
        with self.sessions.active(_txn_id(msg.txn_id), caller) as txn:
            cells = txn.scan(start, msg.end_row or None,
                             list(msg.columns) if msg.columns else None)
            for row, column, value in cells:
                if after is not None and (row, column) <= after:
                    continue
                reply.cells.append(node_pb2.ScanCell(row=row, column=column, value=value))
                size += len(row) + len(column) + len(value)
                if len(reply.cells) >= limit or size >= self._budget:
                    reply.next.row, reply.next.column = row, column
                    break
        return reply

    def _commit(self, msg: pb.TxnCommitRequest, caller: bytes) -> pb.TxnCommitResponse:
        writes: list[Write] = []
        seen: set[Key] = set()
        for w in msg.writes:
            _check_known(w)
            key = (w.row, w.column)
            if key in seen:
                raise InvalidArgument(f"cell ({w.row!r}, {w.column!r}) is written twice")
            seen.add(key)
            if w.delete and w.value:
                raise InvalidArgument(f"delete of ({w.row!r}, {w.column!r}) has a value")
            writes.append((key, None if w.delete else w.value))
        weak = _keys(msg.notify, "notify", None)
        commit_ts = self.sessions.commit(_txn_id(msg.txn_id), msg.table or DEFAULT_TABLE,
                                         writes, weak, caller)
        return pb.TxnCommitResponse(commit_ts=commit_ts)

    def _rollback(self, msg: pb.TxnRollbackRequest, caller: bytes) -> pb.TxnRollbackResponse:
        self.sessions.rollback(_txn_id(msg.txn_id), caller)
        return pb.TxnRollbackResponse()

    # --- serving ----------------------------------------------------------------------------

    # --- the stream -------------------------------------------------------------------------

    def Stream(self, requests: Iterator[bytes], context: grpc.ServicerContext
               ) -> Iterator[bytes]:
        """Requests of one call, each answered in order.  Holds a server thread while open."""
        slots = self._streams
        slots.admit(context, "no transaction stream free (or the node is stopping): use the"
                    " unary methods")
        role, caller = role_of(context), caller_of(context)
        try:
            for raw in requests:
                yield self._stream_one(raw, role, caller).SerializeToString()
                if slots.stopping:  # end between requests: every request read was answered
                    return
        finally:
            slots.release()

    def _stream_one(self, raw: bytes, role: Role, caller: bytes) -> pb.TxnStreamResponse:
        try:
            request = pb.TxnStreamRequest.FromString(raw)
            _check_known(request)
            kind = request.WhichOneof("call")
            if kind is None:
                raise InvalidArgument("request has no call set (one unknown to this node?)")
            method = kind_method(kind)
            needed = ROLES[method]
            if role < needed:
                raise PermissionDenied(f"{method} needs the {needed.label} role; the call's"
                                       f" token has {role.label}")
            msg = getattr(request, kind)
            _check_known(msg)
            reply = pb.TxnStreamResponse()
            getattr(reply, kind).CopyFrom(self._methods[method][1](msg, caller))
            return reply
        except MayWait:
            raise  # run again where it may wait: not this request's answer
        except Exception as exc:  # noqa: BLE001 - the request's failure is its response
            code, message = _status_of(exc)
            return pb.TxnStreamResponse(error=pb.TxnError(
                code=code.value[0], message=message, conflict=_conflict(exc),
                error=error_name(exc)))

    def native_handlers(self, role: Role, caller: bytes) -> dict[int, Executor]:
        """The executor of a native connection's TXN frames (``_transport.native_wire``),
        bound to the connection's ``role`` and ``caller``: each frame is one
        TxnStreamRequest, answered as on a Stream (a REPLY holding its TxnStreamResponse);
        no stream slot is held.  On the transport's loop a request that would wait (for a
        lock's owner, a busy session: ``percolator._waits``) goes to a pool thread before
        it has any effect; a Commit whose outcome must be learned after a store failure
        goes there to learn it (answered from the data: ``Sessions._commit``)."""
        def execute(raw: bytes, on_loop: bool) -> bytes:
            return self._stream_one(raw, role, caller).SerializeToString()

        return {native_wire.TXN: execute}

    def stop_streams(self) -> None:
        """End open streams after their current request and refuse new ones (shutdown)."""
        self._streams.stop()

    # --- serving ----------------------------------------------------------------------------

    def registration(self) -> ServiceRegistration:
        """This service, for ``bigtable_lite.server.build_server(..., extra=[...])``.

        Requests arrive as bytes and are decoded here: bytes that are no request are
        the caller's mistake (INVALID_ARGUMENT), not a failure of the node."""
        assert set(self._methods) | {"Stream"} == set(ROLES) == set(
            pb.DESCRIPTOR.services_by_name["Transactions"].methods_by_name)
        handlers = {name: grpc.unary_unary_rpc_method_handler(
            _handler(kind, method), response_serializer=_serialize)
            for name, (kind, method) in self._methods.items()}
        handlers["Stream"] = grpc.stream_stream_rpc_method_handler(self.Stream)

        def add(server: grpc.Server) -> None:
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
            server.add_registered_method_handlers(SERVICE_NAME, handlers)

        return ServiceRegistration(SERVICE_NAME, add, ROLES,
                                   sources=source_descriptors("percolator.v1"))


def kind_method(kind: str) -> str:
    """The method a Stream request's oneof field stands for (``batch_get`` -> BatchGet)."""
    return "".join(part.capitalize() for part in kind.split("_"))


def _serialize(msg: Message) -> bytes:
    return msg.SerializeToString()


def _handler(kind: type[Message], method: Callable[[Any, bytes], Message]
             ) -> Callable[[bytes, grpc.ServicerContext], Message]:
    def handle(raw: bytes, context: grpc.ServicerContext) -> Message:
        try:
            request = kind.FromString(raw)
            _check_known(request)
            return method(request, caller_of(context))
        except Exception as exc:  # noqa: BLE001 - the call's failure becomes its status, here
            _abort(context, exc)

    return handle


def _txn_id(txn_id: int) -> int:
    if not txn_id:
        raise InvalidArgument("txn_id is missing (Begin returns one)")
    return txn_id


def _check_known(msg: Message) -> None:
    """Refuse fields this node does not know: it must not half-understand a request."""
    if len(unknown_fields.UnknownFieldSet(msg)):
        raise InvalidArgument(f"request has fields unknown to {msg.DESCRIPTOR.full_name}")


def _keys(cells: Sequence[node_pb2.Key], what: str, limit: int | None) -> list[Key]:
    if limit is not None and len(cells) > limit:
        raise LimitExceeded(f"{what} names {len(cells)} cells; the limit is {limit}")
    keys = []
    for cell in cells:
        _check_known(cell)
        keys.append((cell.row, cell.column))
    return keys


@dataclass(frozen=True)
class _Status(grpc.Status):  # type: ignore[misc]
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    code, message = service_status_for(exc)
    if code is grpc.StatusCode.INTERNAL:  # a bug here; the rest are the callers' outcomes
        store_status.log_failure(log, SERVICE_NAME, code, message, exc)
    else:
        log.debug("%s failed: %s: %s", SERVICE_NAME, code.name, message)
    return code, message


def _abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    code, message = _status_of(exc)
    rich = status_pb2.Status(code=code.value[0], message=message)
    conflict = _conflict(exc)
    if conflict is not None:
        detail = any_pb2.Any()
        detail.Pack(conflict)
        rich.details.append(detail)
    trailers: list[tuple[str, str | bytes]] = [(DETAILS_KEY, rich.SerializeToString())]
    name = error_name(exc)
    if name:
        trailers.append((store_status.ERROR_KEY, name))
    context.abort_with_status(_Status(code, message, tuple(trailers)))
    raise AssertionError("context.abort_with_status returned")  # pragma: no cover


def _conflict(exc: BaseException) -> node_pb2.Conflict | None:
    """The Conflict detail of an error that has one."""
    if isinstance(exc, CommitConflict):
        return node_pb2.Conflict(reason=_REASONS.get(
            exc.reason, node_pb2.Conflict.REASON_UNSPECIFIED), row=exc.row,
                                 column=exc.column, commit_ts=exc.commit_ts,
                                 lock_start_ts=exc.lock_start_ts)
    if isinstance(exc, LockWaitTimeout):
        return node_pb2.Conflict(reason=node_pb2.Conflict.LOCKED, row=exc.row,
                                 column=exc.column, lock_start_ts=exc.lock_start_ts)
    return None

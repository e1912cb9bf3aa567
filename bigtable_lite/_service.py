"""TabletService: the gRPC servicer over a LocalStore.

Each handler takes the raw request bytes and returns raw response bytes, so that
parsing, validation and serialisation all fail inside the handler and are answered
through the one status table in ``bigtable_lite.status`` (a request that does not
parse is INVALID_ARGUMENT, not the INTERNAL grpc would give for a failing
deserializer).  Order inside every handler: parse -> convert (``wire``) -> validate
(inside ``LocalStore``) -> touch the engine, so bad input never writes anything.

Expected outcomes (a condition that did not hold) are fields of the reply; a status
code means the call itself failed.

Bounds: a ReadRows reply gathers at most ``max_reply_bytes`` (checked as it is gathered,
:class:`~bigtable_lite.errors.ReplyTooLarge` beyond it: 1,500 reads of one 1 MiB cell in a
24 KB request once took a node to 9 GB); ``RemoteStore`` then reads the same through
ReadRowsStream, whose pieces are gathered one at a time from one snapshot, as Scan's are.
A row goes in one message whole, so ReadRowsStream and Scan refuse a row over 7/8 of the
message limit (ReplyTooLarge) while it is gathered: an 80 MB row was built whole, ~660 MB
of the node's memory, before gRPC refused to send it.
:data:`ROLES` is the least role each method needs (``bigtable_lite.auth``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError, Message

from . import wire
from ._local import LocalStore
from ._model import Row
from ._reads import cells_bytes
from .auth import Role
from .errors import InvalidArgument
from .guard import note_undecodable
from .status import ERROR_KEY, error_name, log_failure, status_for
from .v1 import tablet_pb2 as pb

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["TabletService"].full_name

SCAN_CHUNK_ROWS = 256
"""Most rows in one ScanResponse."""
CHUNK_BYTES = 1 << 20
"""A streamed response (Scan, ReadRowsStream) is sent once its rows reach about this many
bytes, or a quarter of the message size limit if that is smaller (a single larger row
still goes alone, up to the limit)."""

DEFAULT_MAX_REPLY_BYTES = 16 << 20
"""Most bytes of rows one ReadRows reply gathers (cells counted as ``cells_bytes`` does)."""

ROLES: dict[str, Role | None] = {
    "ReadRows": Role.READ, "ReadRowsStream": Role.READ, "Scan": Role.READ,
    "ListTablets": Role.READ, "MutateRows": Role.ADMIN, "SplitTablet": Role.ADMIN,
    "CompactTable": Role.ADMIN,
}
"""The least role each method needs: raw writes reach around the transaction protocol."""

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


def _parse(cls: type[M], raw: bytes) -> M:
    """Parse a request; refuse fields this server does not know.

    Refusing unknown top-level fields turns bytes of another message type sent to the
    wrong method into INVALID_ARGUMENT, and keeps a newer client's request from being
    half-understood by an older server.
    """
    msg: M = cls.FromString(raw)
    if len(unknown_fields.UnknownFieldSet(msg)):
        raise InvalidArgument(f"request has fields unknown to {cls.DESCRIPTOR.full_name}")
    return msg


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str) -> NoReturn:
    code, message = status_for(exc)
    if isinstance(exc, DecodeError):
        note_undecodable(method, exc)  # once per cause: any client could fill the log
    else:
        log_failure(log, method.removeprefix("/"), code, message, exc)
    name = error_name(exc)
    if name:
        context.set_trailing_metadata(((ERROR_KEY, name),))
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _serialize(msg: Message) -> bytes:
    data: bytes = msg.SerializeToString()
    return data


def _unary(name: str, handler: Callable[[bytes], bytes]) -> grpc.RpcMethodHandler:
    method = f"/{SERVICE_NAME}/{name}"

    def call(raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return handler(raw)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status, here, once
            _abort(context, exc, method)

    return grpc.unary_unary_rpc_method_handler(call)


def _stream(name: str, handler: Callable[[bytes], Iterator[bytes]]) -> grpc.RpcMethodHandler:
    method = f"/{SERVICE_NAME}/{name}"

    def call(raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            yield from handler(raw)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status, here, once
            _abort(context, exc, method)

    return grpc.unary_stream_rpc_method_handler(call)


class TabletService:
    """Serves one LocalStore.  Thread-safe: the store is.

    Methods map request bytes to reply bytes and raise on failure; ``method_handlers``
    wraps them so a failure becomes a status (``bigtable_lite.status``).
    """

    def __init__(self, store: LocalStore, *,
                 max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES) -> None:
        if max_reply_bytes < 1:
            raise ValueError("max_reply_bytes must be positive")
        self._store = store
        self._chunk_bytes = min(CHUNK_BYTES, store.limits.max_message_bytes // 4)
        self._max_reply = min(max_reply_bytes, store.limits.max_message_bytes)
        # A row goes in one message whole: no larger (with room for the encoding's own
        # bytes, which the budgets' count underestimates for tiny cells; a row the
        # encoding still takes over the limit is refused by gRPC, after it was built).
        self._max_row = store.limits.max_message_bytes * 7 // 8

    def ReadRows(self, raw: bytes) -> bytes:
        reads = wire.read_request_from_pb(_parse(pb.ReadRowsRequest, raw))
        rows = self._store.read_rows(reads, max_bytes=self._max_reply)
        return _serialize(wire.read_response_to_pb(rows))

    def ReadRowsStream(self, raw: bytes) -> Iterator[bytes]:
        reads = wire.read_request_from_pb(_parse(pb.ReadRowsRequest, raw))
        chunks = self._store.read_rows_chunks(reads, self._chunk_bytes,  # one snapshot
                                              self._max_row)
        try:
            for chunk in chunks:
                yield _serialize(wire.read_response_to_pb(chunk))
        finally:
            chunks.close()  # release the snapshot now, also when the client went away

    def Scan(self, raw: bytes) -> Iterator[bytes]:
        request = wire.scan_request_from_pb(_parse(pb.ScanRequest, raw))
        rows = self._store.scan(request, self._max_row)
        try:
            chunk: list[Row] = []
            size = 0
            for row in rows:
                n = len(row.row) + cells_bytes(row.cells)
                if chunk and size + n > self._chunk_bytes:  # never grow past the chunk size
                    yield _serialize(wire.scan_response_to_pb(chunk))
                    chunk = []
                    size = 0
                chunk.append(row)
                size += n
                if len(chunk) >= SCAN_CHUNK_ROWS or size >= self._chunk_bytes:
                    yield _serialize(wire.scan_response_to_pb(chunk))
                    chunk = []
                    size = 0
            if chunk:
                yield _serialize(wire.scan_response_to_pb(chunk))
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()  # release the snapshot now, also when the client went away

    def MutateRows(self, raw: bytes) -> bytes:
        req = _parse(pb.MutateRowsRequest, raw)
        results = self._store.mutate_rows(wire.mutate_request_from_pb(req), sync=req.sync)
        return _serialize(wire.mutate_response_to_pb(results))

    def ListTablets(self, raw: bytes) -> bytes:
        req = _parse(pb.ListTabletsRequest, raw)
        resp = pb.ListTabletsResponse()
        wire.tablets_to_pb(resp.tablets, self._store.list_tablets(req.table or None))
        return _serialize(resp)

    def SplitTablet(self, raw: bytes) -> bytes:
        req = _parse(pb.SplitTabletRequest, raw)
        resp = pb.SplitTabletResponse()
        wire.tablets_to_pb(resp.tablets, self._store.split_tablet(req.table, req.row))
        return _serialize(resp)

    def CompactTable(self, raw: bytes) -> bytes:
        req = _parse(pb.CompactTableRequest, raw)
        self._store.compact_table(req.table)
        return _serialize(pb.CompactTableResponse())

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """Handlers by method name, on raw bytes (no grpc-level (de)serialisers)."""
        return {
            "ReadRows": _unary("ReadRows", self.ReadRows),
            "ReadRowsStream": _stream("ReadRowsStream", self.ReadRowsStream),
            "Scan": _stream("Scan", self.Scan),
            "MutateRows": _unary("MutateRows", self.MutateRows),
            "ListTablets": _unary("ListTablets", self.ListTablets),
            "SplitTablet": _unary("SplitTablet", self.SplitTablet),
            "CompactTable": _unary("CompactTable", self.CompactTable),
        }

    def add_to_server(self, server: grpc.Server) -> None:
        handlers = self.method_handlers()
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)

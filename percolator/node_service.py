"""Node.Batch: the node's batched-commands service, executing many clients' steps at once.

A batch holds ReadRows, MutateRows and GetTimestamps commands of any number of client
threads (``percolator/v1/node.proto``).  Commands of one batch are concurrent (their
callers were all waiting when it was sent), so the server may run them in any order;
it runs each kind merged into as few calls as the limits allow:

* every timestamp command: one ``oracle.get_timestamps(total)``, split into one
  contiguous range per command in command order.  The range is taken after the batch
  arrived, so each caller's timestamps are above every timestamp handed out before it
  asked (the client only puts a caller in a batch sent after it asked);
* every read: one ``store.read_rows`` (one snapshot for all of them);
* every non-sync mutation: one ``store.mutate_rows``, rows in command order, so a
  later command's conditions see an earlier command's effects on a shared row, as
  if the calls had arrived one after the other; ``sync`` mutations likewise in a
  second, fsynced call.

One bad command fails only itself: each command is decoded and validated on its own
(the same ``validation`` functions ``LocalStore`` runs) before the merged call, and
answered with its own error result, whose code comes from the same tables as a failed
call's (``bigtable_lite.status`` for the store, ``percolator.oracle_service`` for the
oracle).  A merged read that fails anyway (e.g. corrupt data in one row) is re-run
command by command, so only the culprit fails; a merged mutation is never re-run
(part of it may have been written), so all its commands get the error, whose outcome
is unknown exactly as for a failed MutateRows call.

The reply must fit the message limit even when each read's reply alone would: the
largest read results are answered RESOURCE_EXHAUSTED until it does, and the client
re-reads those alone (through ``ReadRowsStream`` if need be).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import unknown_fields
from google.protobuf.message import Message

from bigtable_lite import Cell, InvalidArgument, LocalStore, MutationResult, \
    RowMutation, RowRead, wire
from bigtable_lite import status as store_status
from bigtable_lite.server import ServiceRegistration
from bigtable_lite.validation import check_batch, check_reads

from . import oracle_service
from .oracle import MAX_COUNT, TimestampSource, check_count
from .v1 import node_pb2

__all__ = ["SERVICE_NAME", "NodeService", "command_error", "command_status", "registration"]

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVICE_NAME: str = node_pb2.DESCRIPTOR.services_by_name["Node"].full_name

_CELL_OVERHEAD = 24  # bytes of field tags, lengths and ts per cell in a reply, at most
_ROW_OVERHEAD = 8    # bytes of a row's tag and length
_REPLY_MARGIN = 1 << 16  # bytes kept free below the message limit for framing


def command_status(exc: BaseException, *, oracle: bool = False) -> tuple[grpc.StatusCode, str]:
    """The status code and message of a failed command: what a call of its own would get.

    ``oracle``: a GetTimestamps command, whose own errors have codes of their own.
    """
    return oracle_service.status_for(exc) if oracle else store_status.status_for(exc)


_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def command_error(code: int, message: str, name: str = "", *, oracle: bool = False) -> Exception:
    """The exception a client raises for a failed command: what the failed call would raise.

    ``code`` is the status code number, ``name`` the server's error class (the
    ``bigtable-lite-error`` trailer of a call); ``oracle``: a GetTimestamps command.
    """
    status_code = _CODES.get(code)
    if oracle and status_code is not None:
        # The oracle's own codes: the table of percolator.oracle_service (read, not copied).
        cls = oracle_service._ORACLE_ERRORS.get(status_code)
        if cls is not None:
            return cls(f"{status_code.name}: {message or 'no details'}")
    return store_status.error_for(status_code, message,
                                  ((store_status.ERROR_KEY, name),) if name else None)


def _fail(result: node_pb2.Result, exc: BaseException, *, oracle: bool = False) -> None:
    """Make ``result`` the error result for ``exc``."""
    code, message = command_status(exc, oracle=oracle)
    if code is grpc.StatusCode.INTERNAL:
        log.error("internal error executing a batched command", exc_info=exc)
    _set_error(result, code, message, store_status.error_name(exc))


def _set_error(result: node_pb2.Result, code: grpc.StatusCode, message: str,
               name: str = "") -> None:
    err = result.error
    err.code = code.value[0]
    err.message = message
    if name:
        err.error = name


def _check_known(msg: Message) -> None:
    """Refuse fields this server does not know (as TabletService does for a call)."""
    if len(unknown_fields.UnknownFieldSet(msg)):
        raise InvalidArgument(f"command has fields unknown to {msg.DESCRIPTOR.full_name}")


def _reply_bytes(rows: Sequence[Sequence[Cell]]) -> int:
    """An upper bound of the encoded size of a read's reply."""
    return _ROW_OVERHEAD * len(rows) + sum(
        [len(c.column) + len(c.value) + _CELL_OVERHEAD for cells in rows for c in cells])


def _chunks(items: list[tuple[int, list[T]]], max_rows: int) -> list[list[tuple[int, list[T]]]]:
    """Consecutive commands grouped so no group has more than ``max_rows`` rows."""
    groups: list[list[tuple[int, list[T]]]] = []
    group: list[tuple[int, list[T]]] = []
    rows = 0
    for item in items:
        n = len(item[1])
        if group and rows + n > max_rows:
            groups.append(group)
            group, rows = [], 0
        group.append(item)
        rows += n
    if group:
        groups.append(group)
    return groups


class NodeService:
    """Executes batches against one node's store and oracle.  Thread-safe: they are."""

    def __init__(self, store: LocalStore, oracle: TimestampSource) -> None:
        self._store = store
        self._oracle = oracle
        self._limits = store.limits
        self._reply_limit = max(1, store.limits.max_message_bytes - _REPLY_MARGIN)

    # --- one batch ------------------------------------------------------------------------

    def execute(self, request: node_pb2.BatchRequest) -> node_pb2.BatchResponse:
        """The results of every command of ``request``, in order (never raises for a command)."""
        response = node_pb2.BatchResponse()
        add = response.results.add
        limits = self._limits
        reads: list[tuple[int, list[RowRead]]] = []
        writes: list[tuple[int, list[RowMutation]]] = []
        synced: list[tuple[int, list[RowMutation]]] = []
        stamps: list[tuple[int, int]] = []
        results = []
        for i, command in enumerate(request.commands):
            results.append(add())
            kind = command.WhichOneof("kind")
            try:
                if kind == "read_rows":
                    msg = command.read_rows
                    _check_known(msg)
                    rr = wire.read_request_from_pb(msg)
                    check_reads(rr, limits)
                    reads.append((i, rr))
                elif kind == "mutate_rows":
                    mmsg = command.mutate_rows
                    _check_known(mmsg)
                    rows = wire.mutate_request_from_pb(mmsg)
                    check_batch(rows, limits)
                    (synced if mmsg.sync else writes).append((i, rows))
                elif kind == "get_timestamps":
                    tmsg = command.get_timestamps
                    _check_known(tmsg)
                    stamps.append((i, check_count(tmsg.count)))
                else:
                    raise InvalidArgument("command has no kind set (unknown to this server?)")
            except Exception as exc:  # noqa: BLE001 - the command's own error result
                _fail(results[i], exc, oracle=kind == "get_timestamps")
        if stamps:
            self._timestamps(stamps, results)
        if reads:
            self._read(reads, results)
        if writes:
            self._mutate(writes, results, sync=False)
        if synced:
            self._mutate(synced, results, sync=True)
        return response

    def _timestamps(self, stamps: list[tuple[int, int]], results: list[node_pb2.Result]) -> None:
        """One oracle call per MAX_COUNT timestamps; each command a contiguous range."""
        groups: list[list[tuple[int, int]]] = [[]]
        total = 0
        for item in stamps:
            if total + item[1] > MAX_COUNT:
                groups.append([])
                total = 0
            groups[-1].append(item)
            total += item[1]
        get = self._oracle.get_timestamps
        for group in groups:
            try:
                first = get(sum([count for _, count in group]))
            except Exception as exc:  # noqa: BLE001 - every command of the call fails with it
                for i, _ in group:
                    _fail(results[i], exc, oracle=True)
                continue
            for i, count in group:
                out = results[i].get_timestamps
                out.first = first
                out.count = count
                first += count

    def _read(self, reads: list[tuple[int, list[RowRead]]],
              results: list[node_pb2.Result]) -> None:
        answered: list[tuple[int, list[list[Cell]]]] = []
        for group in _chunks(reads, self._limits.max_batch_rows):
            answered += self._read_group(group, results)
        sizes = [(_reply_bytes(rows), i) for i, rows in answered]
        too_large = self._too_large(sizes, len(results))
        for i, rows in answered:
            if i in too_large:
                _set_error(results[i], grpc.StatusCode.RESOURCE_EXHAUSTED,
                           "read reply too large to share a batch; read it alone")
            else:
                results[i].read_rows.CopyFrom(wire.read_response_to_pb(rows))

    def _read_group(self, group: list[tuple[int, list[RowRead]]],
                    results: list[node_pb2.Result]) -> list[tuple[int, list[list[Cell]]]]:
        """Rows of each command, from one merged read (or, if it fails, one read each)."""
        read = self._store.read_rows
        try:
            rows = read([r for _, rr in group for r in rr])
        except Exception as exc:  # noqa: BLE001 - find the culprit: re-run command by command
            if len(group) == 1:
                _fail(results[group[0][0]], exc)
                return []
            out = []
            for i, rr in group:
                try:
                    out.append((i, read(rr)))
                except Exception as one:  # noqa: BLE001 - this command's error
                    _fail(results[i], one)
            return out
        out = []
        pos = 0
        for i, rr in group:
            out.append((i, rows[pos:pos + len(rr)]))
            pos += len(rr)
        return out

    def _too_large(self, sizes: list[tuple[int, int]], commands: int) -> set[int]:
        """Commands whose read results to refuse, largest first, so the reply fits."""
        budget = self._reply_limit - 64 * commands  # the other results are small
        total = sum([s for s, _ in sizes])
        refused: set[int] = set()
        for size, i in sorted(sizes, reverse=True):
            if total <= budget:
                break
            refused.add(i)
            total -= size
        return refused

    def _mutate(self, writes: list[tuple[int, list[RowMutation]]],
                results: list[node_pb2.Result], *, sync: bool) -> None:
        mutate = self._store.mutate_rows
        for group in _chunks(writes, self._limits.max_batch_rows):
            merged = [m for _, rows in group for m in rows]
            try:
                done: list[MutationResult] = mutate(merged, sync=sync)
            except Exception as exc:  # noqa: BLE001 - never re-run: part may be written
                for i, _ in group:
                    _fail(results[i], exc)
                continue
            pos = 0
            for i, rows in group:
                results[i].mutate_rows.CopyFrom(
                    wire.mutate_response_to_pb(done[pos:pos + len(rows)]))
                pos += len(rows)

    # --- gRPC -----------------------------------------------------------------------------

    def Batch(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            request = node_pb2.BatchRequest.FromString(raw)
            if len(unknown_fields.UnknownFieldSet(request)):
                raise InvalidArgument("request has fields unknown to percolator.v1.BatchRequest")
            data: bytes = self.execute(request).SerializeToString()
            return data
        except Exception as exc:  # noqa: BLE001 - the call's failure becomes a status, here
            _abort(context, exc)

    def add_to_server(self, server: grpc.Server) -> None:
        handlers = {"Batch": grpc.unary_unary_rpc_method_handler(self.Batch)}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)


def _abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    code, message = store_status.status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("internal error serving a batch", exc_info=exc)
    name = store_status.error_name(exc)
    if name:
        context.set_trailing_metadata(((store_status.ERROR_KEY, name),))
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def registration(store: LocalStore, oracle: TimestampSource) -> ServiceRegistration:
    """The Node service, for ``bigtable_lite.server.build_server(..., extra=[...])``."""
    service = NodeService(store, oracle)
    add: Callable[[grpc.Server], None] = service.add_to_server
    return ServiceRegistration(SERVICE_NAME, add)

"""Node.Batch: the node's batched-commands service, executing many clients' steps at once.

A batch holds ReadRows, MutateRows, GetTimestamps, Commit and FreshRead commands of any
number of client threads (``percolator/v1/node.proto``).  Commands of one batch are concurrent
(their callers were all waiting when it was sent), so the server may run them in any
order; it runs each kind merged into as few calls as the limits allow:

* every timestamp command and fresh read: one ``oracle.get_timestamps(total)``, split
  into one contiguous range per command in command order.  The range is taken after the batch
  arrived, so each caller's timestamps are above every timestamp handed out before it
  asked (the client only puts a caller in a batch sent after it asked);
* every read: one ``store.read_rows`` (one snapshot for all of them); every fresh read,
  at its timestamp, in another (``percolator.fresh_read``);
* every non-sync mutation: one ``store.mutate_rows``, rows in command order, so a
  later command's conditions see an earlier command's effects on a shared row, as
  if the calls had arrived one after the other; ``sync`` mutations likewise in a
  second, fsynced call;
* every commit step (``percolator.commit``): one oracle call for all their
  commit_ts, one store call for all their primaries, one for the secondaries of
  those that committed.  Commits run last, after the batch's mutations.

One bad command fails only itself: each command is decoded and validated on its own
(the same ``validation`` functions ``LocalStore`` runs) before the merged call, and
answered with its own error result, whose code comes from the same tables as a failed
call's (``bigtable_lite.status`` for the store, ``percolator.oracle_service`` for the
oracle).  A merged read that fails anyway (e.g. corrupt data in one row) is re-run
command by command, so only the culprit fails; a merged mutation is never re-run
(part of it may have been written), so all its commands get the error, and their
outcome is unknown exactly as for a failed MutateRows call.

The reply must fit the message limit even when each read's reply alone would: the
largest read results are answered RESOURCE_EXHAUSTED until it does, and the client
re-reads those alone (through ``ReadRowsStream`` if need be).

Wire framing (this module owns it; ``node_client`` uses it for requests): a protobuf
message's encoding is the concatenation of its fields' encodings, and a field holding
a message is ``tag, varint length, bytes``.  So a BatchRequest is the concatenation of
framed commands and a BatchResponse of framed results; each side serializes every
command's or result's inner message once with the generated code and joins bytes,
instead of building Command/Result messages and copying the inner messages into them
(measured ~2x cheaper per command).  tests/percolator/test_node_batch.py checks the
framing against the generated code.

=====================  ======  ==============================================
field                  tag     holds
=====================  ======  ==============================================
BatchRequest.commands  0x0a    Command
BatchResponse.results  0x0a    Result
Command.read_rows      0x0a    bigtable_lite.v1.ReadRowsRequest
Command.mutate_rows    0x12    bigtable_lite.v1.MutateRowsRequest
Command.get_timestamps 0x1a    GetTimestampsRequest
Command.commit         0x22    CommitRequest
Command.fresh_read     0x2a    FreshReadRequest
Result.read_rows       0x0a    bigtable_lite.v1.ReadRowsResponse
Result.mutate_rows     0x12    bigtable_lite.v1.MutateRowsResponse
Result.get_timestamps  0x1a    GetTimestampsResponse
Result.error           0x22    CommandError
Result.commit          0x2a    CommitResponse
Result.fresh_read      0x32    FreshReadResponse
FreshRead*.read        0x0a    bigtable_lite.v1.ReadRows{Request,Response}
=====================  ======  ==============================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import unknown_fields
from google.protobuf.message import Message

from bigtable_lite import Cell, InvalidArgument, LocalStore, RowMutation, RowRead, wire
from bigtable_lite import status as store_status
from bigtable_lite.auth import Role
from bigtable_lite.server import ServiceRegistration
from bigtable_lite.validation import check_batch, check_reads

from . import mutations, oracle_service, records
from .commit import CommitOutcome, CommitRequest, check_commit_request, commit_many
from .fresh_read import at_timestamp, check_fresh_reads
from .oracle import MAX_COUNT, TimestampSource, check_count
from .stream_slots import REFUSED, StreamSlots
from .v1 import node_pb2, oracle_pb2

__all__ = [
    "COMMAND_TAGS", "DEFAULT_MAX_STREAMS", "ENTRY_TAG", "SERVICE_NAME", "STREAM_KEY",
    "STREAM_REFUSED", "NodeService", "command_error", "command_status",
    "commit_request_from_pb", "commit_request_to_pb", "field", "frame",
]

log = logging.getLogger(__name__)

SERVICE_NAME: str = node_pb2.DESCRIPTOR.services_by_name["Node"].full_name

T = TypeVar("T")

DEFAULT_MAX_STREAMS = 16
"""Most BatchStream calls open at once (each holds a server thread); ``Node`` uses half
its worker threads."""
STREAM_KEY = "percolator-batch-stream"
"""Trailer of a refused BatchStream call; the value is :data:`STREAM_REFUSED`."""
STREAM_REFUSED = REFUSED

# Field tags (field number << 3 | 2, "length-delimited"); see the table above.
ENTRY_TAG = b"\x0a"           # BatchRequest.commands, BatchResponse.results
READ_ROWS_TAG = b"\x0a"       # Command.read_rows, Result.read_rows
MUTATE_ROWS_TAG = b"\x12"     # Command.mutate_rows, Result.mutate_rows
GET_TIMESTAMPS_TAG = b"\x1a"  # Command.get_timestamps, Result.get_timestamps
COMMIT_TAG = b"\x22"          # Command.commit
ERROR_TAG = b"\x22"           # Result.error
COMMIT_RESULT_TAG = b"\x2a"   # Result.commit
FRESH_READ_TAG = b"\x2a"      # Command.fresh_read
FRESH_RESULT_TAG = b"\x32"    # Result.fresh_read
FRESH_READ_FIELD = b"\x0a"    # FreshReadRequest.read (FreshReadResponse.read is 0x12)
COMMAND_TAGS = {"read_rows": READ_ROWS_TAG, "mutate_rows": MUTATE_ROWS_TAG,
                "get_timestamps": GET_TIMESTAMPS_TAG, "commit": COMMIT_TAG,
                "fresh_read": FRESH_READ_TAG}
UNKNOWN_COMMAND = "command has no kind set (unknown to this server?)"
"""The error message of a command whose kind this node does not know: a client that
gets it for a kind added later knows the node predates it."""

_SMALL = [bytes((n,)) for n in range(128)]  # one-byte varints


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """``payload`` (a serialized message) as the length-delimited field ``tag``."""
    return tag + _varint(len(payload)) + payload


def frame(tag: bytes, payload: bytes) -> bytes:
    """``payload`` (a serialized message) as field ``tag`` of a BatchRequest.commands or
    BatchResponse.results entry: the bytes to join into the whole message."""
    inner = tag + _varint(len(payload)) + payload
    return ENTRY_TAG + _varint(len(inner)) + inner


# --- errors, per command ---------------------------------------------------------------------


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
    if oracle:
        own = oracle_service.oracle_error_for(status_code, message)
        if own is not None:
            return own
    return store_status.error_for(status_code, message,
                                  ((store_status.ERROR_KEY, name),) if name else None)


def _error_result(code: grpc.StatusCode, message: str, name: str = "") -> bytes:
    err = node_pb2.CommandError(code=code.value[0], message=message, error=name)
    return frame(ERROR_TAG, err.SerializeToString())


def _failed(exc: BaseException, *, oracle: bool = False) -> bytes:
    """The framed error result for ``exc``."""
    code, message = command_status(exc, oracle=oracle)
    if code is grpc.StatusCode.INTERNAL:
        log.error("internal error executing a batched command", exc_info=exc)
    return _error_result(code, message, store_status.error_name(exc))


# --- the commit command's message <-> percolator.commit.CommitRequest ------------------------


def commit_request_to_pb(request: CommitRequest) -> node_pb2.CommitRequest:
    """Values travel only where the write record inlines them (the rest is in data cells)."""
    Cell, Row = node_pb2.CommitCell, node_pb2.CommitRow
    inline = mutations.inline_value
    return node_pb2.CommitRequest(
        table=request.table, start_ts=request.start_ts, primary_column=request.primary_column,
        rows=[Row(row=row, cells=[Cell(column=column, delete=op == records.DELETE,
                                       inline_value=inline(op, value))
                                  for column, op, value in cells])
              for row, cells in request.rows])


def commit_request_from_pb(msg: node_pb2.CommitRequest) -> CommitRequest:
    put, delete = records.PUT, records.DELETE
    return CommitRequest(
        msg.table, msg.start_ts, msg.primary_column,
        tuple((r.row, tuple((c.column, delete if c.delete else put,
                             c.inline_value if c.HasField("inline_value") else None)
                            for c in r.cells))
              for r in msg.rows))


def _check_known(msg: Message) -> None:
    """Refuse fields this server does not know (as TabletService does for a call)."""
    if len(unknown_fields.UnknownFieldSet(msg)):
        raise InvalidArgument(f"command has fields unknown to {msg.DESCRIPTOR.full_name}")


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

    def __init__(self, store: LocalStore, oracle: TimestampSource, *,
                 max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        self._store = store
        self._oracle = oracle
        self._streams = StreamSlots(max_streams, STREAM_KEY)
        self._limits = store.limits
        # Room left for framing and for the results that are not reads.
        self._reply_limit = store.limits.max_message_bytes - (1 << 16)

    # --- one batch ------------------------------------------------------------------------

    def execute(self, request: node_pb2.BatchRequest) -> bytes:
        """The serialized BatchResponse: a result for every command, in order.

        Never raises for a command: its failure is its result.
        """
        limits = self._limits
        results: list[bytes] = [b""] * len(request.commands)
        reads: list[tuple[int, list[RowRead]]] = []
        writes: list[tuple[int, list[RowMutation]]] = []
        synced: list[tuple[int, list[RowMutation]]] = []
        stamps: list[tuple[int, int]] = []
        commits: list[tuple[int, CommitRequest]] = []
        fresh: list[tuple[int, list[RowRead]]] = []
        for i, command in enumerate(request.commands):
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
                elif kind == "commit":
                    cmsg = command.commit
                    _check_known(cmsg)
                    commit = commit_request_from_pb(cmsg)
                    check_commit_request(commit, limits)
                    commits.append((i, commit))
                elif kind == "fresh_read":
                    fmsg = command.fresh_read
                    _check_known(fmsg)
                    _check_known(fmsg.read)
                    fr = wire.read_request_from_pb(fmsg.read)
                    check_reads(fr, limits)
                    check_fresh_reads(fr)
                    fresh.append((i, fr))
                else:
                    raise InvalidArgument(UNKNOWN_COMMAND)
            except Exception as exc:  # noqa: BLE001 - the command's own error result
                results[i] = _failed(exc, oracle=kind in ("get_timestamps", "commit",
                                                          "fresh_read"))
        answered: list[int] = []  # commands with a read result
        if stamps or fresh:
            at = self._timestamps(stamps + [(i, 1) for i, _ in fresh], results)
            fresh = [(i, at_timestamp(fr, at[i])) for i, fr in fresh if i in at]
        if reads:
            answered = self._read(reads, results, lambda i, rows: _read_result(rows))
        if fresh:
            answered += self._read(fresh, results, lambda i, rows: _fresh_result(at[i], rows))
        if writes:
            self._mutate(writes, results, sync=False)
        if synced:
            self._mutate(synced, results, sync=True)
        if commits:
            self._commit(commits, results)
        self._fit(results, answered)
        return b"".join(results)

    def _timestamps(self, stamps: list[tuple[int, int]], results: list[bytes]
                    ) -> dict[int, int]:
        """One oracle call per MAX_COUNT timestamps; each command a contiguous range.

        Returns the first timestamp of each command that got its range; answers the
        GetTimestamps commands (the others are fresh reads, answered with their rows).
        """
        groups: list[list[tuple[int, int]]] = [[]]
        total = 0
        for item in stamps:
            if total + item[1] > MAX_COUNT:
                groups.append([])
                total = 0
            groups[-1].append(item)
            total += item[1]
        get = self._oracle.get_timestamps
        firsts: dict[int, int] = {}
        for group in groups:
            try:
                first = get(sum([count for _, count in group]))
            except Exception as exc:  # noqa: BLE001 - every command of the call fails with it
                for i, _ in group:
                    results[i] = _failed(exc, oracle=True)
                continue
            for i, count in group:
                firsts[i] = first
                first += count
        for i, count in stamps:
            if i in firsts and not results[i]:
                reply = oracle_pb2.GetTimestampsResponse(first=firsts[i], count=count)
                results[i] = frame(GET_TIMESTAMPS_TAG, reply.SerializeToString())
        return firsts

    def _commit(self, commits: list[tuple[int, CommitRequest]], results: list[bytes]) -> None:
        """Every commit step at once: one oracle call per MAX_COUNT of them, then their
        primaries and secondaries (percolator.commit.commit_many)."""
        for start in range(0, len(commits), MAX_COUNT):
            group = commits[start:start + MAX_COUNT]
            try:
                outcomes = commit_many(self._store, self._oracle, self._limits,
                                       [request for _, request in group])
            except Exception as exc:  # noqa: BLE001 - every command of the group fails with it
                for i, _ in group:
                    results[i] = _failed(exc, oracle=True)
                continue
            for (i, _), outcome in zip(group, outcomes):
                results[i] = _commit_result(outcome)

    def _read(self, reads: list[tuple[int, list[RowRead]]], results: list[bytes],
              encode: Callable[[int, list[list[Cell]]], bytes]) -> list[int]:
        """Merged reads, command i's rows answered by ``encode(i, rows)``; returns the
        commands answered with rows."""
        read = self._store.read_rows
        answered: list[int] = []
        for group in _chunks(reads, self._limits.max_batch_rows):
            try:
                rows = read([r for _, rr in group for r in rr])
            except Exception:  # noqa: BLE001 - find the culprit: re-run command by command
                for i, rr in group:
                    try:
                        results[i] = encode(i, read(rr))
                        answered.append(i)
                    except Exception as exc:  # noqa: BLE001 - this command's error
                        results[i] = _failed(exc)
                continue
            pos = 0
            for i, rr in group:
                results[i] = encode(i, rows[pos:pos + len(rr)])
                answered.append(i)
                pos += len(rr)
        return answered

    def _fit(self, results: list[bytes], answered: list[int]) -> None:
        """Refuse the largest read results (RESOURCE_EXHAUSTED) until the reply fits the
        message limit; the client re-reads those alone.  Mutation results are never
        refused (they are applied): a batch whose mutation results alone overflow fails
        as a MutateRows call with that many results would."""
        total = sum([len(r) for r in results])
        if total <= self._reply_limit:
            return
        for i in sorted(answered, key=lambda i: len(results[i]), reverse=True):
            total -= len(results[i])
            results[i] = _error_result(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       "read reply too large to share a batch; read alone")
            total += len(results[i])
            if total <= self._reply_limit:
                return

    def _mutate(self, writes: list[tuple[int, list[RowMutation]]], results: list[bytes], *,
                sync: bool) -> None:
        mutate = self._store.mutate_rows
        for group in _chunks(writes, self._limits.max_batch_rows):
            try:
                done = mutate([m for _, rows in group for m in rows], sync=sync)
            except Exception as exc:  # noqa: BLE001 - never re-run: part may be written
                for i, _ in group:
                    results[i] = _failed(exc)
                continue
            pos = 0
            for i, rows in group:
                reply = wire.mutate_response_to_pb(done[pos:pos + len(rows)])
                results[i] = frame(MUTATE_ROWS_TAG, reply.SerializeToString())
                pos += len(rows)

    # --- gRPC -----------------------------------------------------------------------------

    def Batch(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return self.execute(_parse(raw))
        except Exception as exc:  # noqa: BLE001 - the call's failure becomes a status, here
            _abort(context, exc)

    def BatchStream(self, requests: Iterator[bytes], context: grpc.ServicerContext
                    ) -> Iterator[bytes]:
        """Batches of one stream, in order.  Holds a server thread while open, hence the cap."""
        slots = self._streams
        slots.admit(context, "no batch stream free (or the node is stopping): send batches by"
                    " Batch")
        try:
            for raw in requests:
                try:
                    reply = self.execute(_parse(raw))
                except Exception as exc:  # noqa: BLE001 - the stream's failure becomes a status
                    _abort(context, exc)
                yield reply
                if slots.stopping:  # end between batches: every batch read was answered
                    return
        finally:
            slots.release()

    def stop_streams(self) -> None:
        """End open streams after their current batch and refuse new ones (node shutdown)."""
        self._streams.stop()

    @property
    def open_streams(self) -> int:
        return self._streams.open

    def add_to_server(self, server: grpc.Server) -> None:
        handlers = {"Batch": grpc.unary_unary_rpc_method_handler(self.Batch),
                    "BatchStream": grpc.stream_stream_rpc_method_handler(self.BatchStream)}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)

    def registration(self) -> ServiceRegistration:
        """This service, for ``bigtable_lite.server.build_server(..., extra=[...])``."""
        add: Callable[[grpc.Server], None] = self.add_to_server
        # write for both until each command's role is checked here (bigtable_lite.auth.role_of)
        return ServiceRegistration(SERVICE_NAME, add, {"Batch": Role.WRITE,
                                                       "BatchStream": Role.WRITE})


def _parse(raw: bytes) -> node_pb2.BatchRequest:
    request = node_pb2.BatchRequest.FromString(raw)
    if len(unknown_fields.UnknownFieldSet(request)):
        raise InvalidArgument("request has fields unknown to percolator.v1.BatchRequest")
    return request


def _commit_result(outcome: CommitOutcome) -> bytes:
    reply = node_pb2.CommitResponse(committed=outcome.committed, commit_ts=outcome.commit_ts)
    return frame(COMMIT_RESULT_TAG, reply.SerializeToString())


def _fresh_result(ts: int, rows: list[list[Cell]]) -> bytes:
    read = wire.read_response_to_pb(rows).SerializeToString()
    return frame(FRESH_RESULT_TAG, _TS_FIELD + _varint(ts) + field(_ROWS_FIELD, read))


_TS_FIELD = b"\x08"    # FreshReadResponse.ts (varint)
_ROWS_FIELD = b"\x12"  # FreshReadResponse.read


def _read_result(rows: list[list[Cell]]) -> bytes:
    return frame(READ_ROWS_TAG, wire.read_response_to_pb(rows).SerializeToString())


def _abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    code, message = store_status.status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("internal error serving a batch", exc_info=exc)
    name = store_status.error_name(exc)
    if name:
        context.set_trailing_metadata(((store_status.ERROR_KEY, name),))
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover

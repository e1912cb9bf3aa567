"""NodeClient: one client of a node whose reads, writes and timestamp requests travel together.

As TiKV's client batches commands (client-go ``BatchCommands``): every thread of the
process that needs the node — a read, a prewrite, a commit, a ``start_ts`` or a
``commit_ts`` — joins the batch being gathered, and one ``Node.Batch`` call carries
them all (``percolator/v1/node.proto``).  A lone caller goes at once; while
``max_in_flight`` batches are on the wire, new callers wait and go together in the
next one (:class:`percolator.batching.Coalescer`).  A gRPC call costs ~0.3 ms of CPU on
each side whatever it carries; gathering across kinds, not per kind, is what makes
batches large enough to pay for it (figures in ``docs/architecture.md``).

NodeClient is both a :class:`~bigtable_lite.TabletStore` and a
:class:`~percolator.oracle.TimestampSource`, with their contracts unchanged:

* arguments are checked with the same ``validation`` functions as ``LocalStore``
  before any I/O; the server's errors come back per command, translated by the
  tables in ``percolator.node_service`` (which defer to ``bigtable_lite.status`` and
  ``percolator.oracle_service``); ``grpc.RpcError`` never leaks; a mutation that
  fails with ``Unavailable`` has an unknown outcome;
* timestamps are linearizable: a caller only joins a batch that has not been sent,
  so its range comes from a request sent after it asked, and the server takes the
  range after the batch arrived;
* scans, tablet listing and splitting, ``sync=True`` writes (an fsync would hold up
  every command of a batch) and commands too large to share a batch go through a
  :class:`~bigtable_lite.RemoteStore` on the same channel.

A node that does not offer ``percolator.v1.Node`` (an older ``percolator serve``)
answers UNIMPLEMENTED, which has no effect on the node; the client then switches for
good to the per-service path (``CoalescingStore`` over ``RemoteStore``, and
``RemoteOracle``) and re-sends there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Self

import grpc

from bigtable_lite import DEFAULT_LIMITS, MAX_TS, Cell, Limits, MutationResult, Row, \
    RowMutation, RowRead, ScanRequest, StorageError, StoreClosed, TabletInfo, wire
from bigtable_lite.remote import RemoteStore, channel_options
from bigtable_lite.status import error_from_rpc
from bigtable_lite.store import StoreOps
from bigtable_lite.validation import check_batch, check_reads

from .batching import Coalescer, CoalescingStore
from .errors import OracleError
from .node_service import SERVICE_NAME, command_error
from .oracle import OracleStats, check_count
from .oracle_client import RemoteOracle
from .v1 import node_pb2

__all__ = ["DEFAULT_MAX_COMMANDS", "DEFAULT_MAX_IN_FLIGHT", "NodeClient"]

DEFAULT_MAX_IN_FLIGHT = 2
"""Batches one client keeps on the wire at once."""
DEFAULT_MAX_COMMANDS = 64
"""Most commands in one batch."""

# Field tags of the wire framing below (field number << 3 | 2, "length-delimited").
_COMMANDS = b"\x0a"        # BatchRequest.commands = 1
_READ_ROWS = b"\x0a"       # Command.read_rows = 1
_MUTATE_ROWS = b"\x12"     # Command.mutate_rows = 2
_GET_TIMESTAMPS = b"\x1a"  # Command.get_timestamps = 3
_READ, _MUTATE, _STAMPS = range(3)  # a command's kind, client-side


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def frame_command(tag: bytes, request: bytes) -> bytes:
    """One ``BatchRequest.commands`` entry holding ``request`` (a serialized ReadRowsRequest,
    MutateRowsRequest or GetTimestampsRequest) in the Command field ``tag``.

    A protobuf message's encoding is the concatenation of its fields' encodings, so a
    BatchRequest is the concatenation of its framed commands: each caller serializes
    its own command once and the sender only joins bytes (measured ~2x cheaper than
    building Command messages and copying them into a BatchRequest).
    tests/percolator/test_node_batch.py checks the framing against the generated code.
    """
    command = tag + _varint(len(request)) + request
    return _COMMANDS + _varint(len(command)) + command


def _serialize(data: bytes) -> bytes:
    return data


class NodeClient(StoreOps):
    """TabletStore and TimestampSource of one node, over ``Node.Batch``.

    ``target`` is "HOST:PORT" (the client owns the channel it opens) or a channel (left
    open on :meth:`close`).  ``timeout`` bounds every call; a caller waits at most about
    twice that for its batch.  ``limits`` should match the node's.
    """

    def __init__(self, target: str | grpc.Channel, *, timeout: float = 30.0,
                 limits: Limits = DEFAULT_LIMITS, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 max_commands: int = DEFAULT_MAX_COMMANDS) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if max_in_flight < 1 or max_commands < 1:
            raise ValueError("max_in_flight and max_commands must be at least 1")
        if isinstance(target, grpc.Channel):
            self._channel = target
            self._owns_channel = False
        elif isinstance(target, str):
            self._channel = grpc.insecure_channel(target, options=channel_options(limits))
            self._owns_channel = True
        else:
            raise TypeError(f"target must be str or grpc.Channel, not {type(target).__name__}")
        self.limits = limits
        self.timeout = timeout
        # A command larger than this goes alone, so a full batch always fits a message.
        self._alone_bytes = limits.max_message_bytes // (2 * max_commands)
        self.remote = RemoteStore(self._channel, timeout=timeout, limits=limits)
        self._batch = self._channel.unary_unary(
            f"/{SERVICE_NAME}/Batch", request_serializer=_serialize,
            response_deserializer=node_pb2.BatchResponse.FromString, _registered_method=True)
        self._coalescer: Coalescer[tuple[int, bytes], node_pb2.Result] = Coalescer(
            self._send, max_in_flight=max_in_flight, max_items=max_commands)
        self._lock = threading.Lock()
        self._closed = False
        self._served = 0        # timestamps returned to callers
        self._stamp_calls = 0   # Batch calls that carried timestamp commands
        self._fallback: tuple[CoalescingStore, RemoteOracle] | None = None

    # --- the batch ------------------------------------------------------------------------

    def _send(self, commands: list[tuple[int, bytes]]) -> list[node_pb2.Result]:
        """One Batch call for the merged commands of a Coalescer batch."""
        if self._closed:
            raise StoreClosed("NodeClient is closed")
        try:
            reply = self._batch(b"".join([data for _, data in commands]), timeout=self.timeout)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                raise _NotOffered() from exc
            raise error_from_rpc(exc) from exc
        except ValueError as exc:  # grpc: "Cannot invoke RPC on closed channel!"
            raise StoreClosed("NodeClient is closed") if self._closed else exc
        results = list(reply.results)
        if len(results) != len(commands):
            raise StorageError(f"protocol error: node answered {len(results)} results for"
                               f" {len(commands)} commands")
        if any(kind == _STAMPS for kind, _ in commands):
            with self._lock:
                self._stamp_calls += 1
        return results

    def _submit(self, kind: int, tag: bytes, request: bytes) -> node_pb2.Result | None:
        """The command's result, or None if the node does not offer the Node service."""
        if self._fallback is not None:
            return None
        if self._closed:
            raise StoreClosed("NodeClient is closed")
        try:
            return self._coalescer.submit([(kind, frame_command(tag, request))])[0]
        except _NotOffered:
            self._fall_back()
            return None

    def _fall_back(self) -> None:
        with self._lock:
            if self._fallback is None:
                self._fallback = (CoalescingStore(self.remote),
                                  RemoteOracle(self._channel, timeout=self.timeout))

    # --- TabletStore ----------------------------------------------------------------------

    def read_rows(self, reads: Sequence[RowRead]) -> list[list[Cell]]:
        check_reads(reads, self.limits)
        request = wire.read_request_to_pb(reads).SerializeToString()
        if len(request) > self._alone_bytes:
            return self.remote.read_rows(reads)
        result = self._submit(_READ, _READ_ROWS, request)
        if result is None:
            return self._fallback_store().read_rows(reads)
        if result.WhichOneof("kind") != "read_rows":
            if _reply_too_large(result):
                return self.remote.read_rows(reads)  # alone, streamed if need be
            raise _result_error(result)
        rows = wire.read_response_from_pb(result.read_rows)
        _check_count(len(reads), len(rows))
        return rows

    def mutate_rows(self, mutations: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        if sync:  # an fsync would hold up every command of a batch
            return self.remote.mutate_rows(mutations, sync=True)
        check_batch(mutations, self.limits)
        request = wire.mutate_request_to_pb(mutations, False).SerializeToString()
        if len(request) > self._alone_bytes:
            return self.remote.mutate_rows(mutations)
        result = self._submit(_MUTATE, _MUTATE_ROWS, request)
        if result is None:
            return self._fallback_store().mutate_rows(mutations)
        if result.WhichOneof("kind") != "mutate_rows":
            raise _result_error(result)
        out = wire.mutate_response_from_pb(result.mutate_rows)
        _check_count(len(mutations), len(out))
        return out

    def scan(self, request: ScanRequest) -> Iterator[Row]:
        return self.remote.scan(request)

    def list_tablets(self, table: bytes | None = None) -> list[TabletInfo]:
        return self.remote.list_tablets(table)

    def split_tablet(self, table: bytes, row: bytes) -> list[TabletInfo]:
        return self.remote.split_tablet(table, row)

    # --- TimestampSource ------------------------------------------------------------------

    def get_timestamp(self) -> int:
        return self._take(1)

    def get_timestamps(self, count: int) -> int:
        return self._take(check_count(count))

    def _take(self, count: int) -> int:
        result = self._submit(_STAMPS, _GET_TIMESTAMPS, _STAMP_REQUESTS.get(count)
                              or _stamp_request(count))
        if result is None:
            return self._fallback_oracle().get_timestamps(count)
        if result.WhichOneof("kind") != "get_timestamps":
            raise _result_error(result, oracle=True)
        reply = result.get_timestamps
        first = reply.first
        if reply.count != count or first < 1 or first + count - 1 > MAX_TS:
            raise OracleError(f"oracle answered {reply.count} timestamps from {first} to a"
                              f" request for {count}")
        with self._lock:
            self._served += count
        return first

    def stats(self) -> OracleStats:
        """Client-side figures: timestamps returned to callers, Batch calls that carried them."""
        with self._lock:
            served, calls = self._served, self._stamp_calls
        if self._fallback is not None:
            legacy = self._fallback[1].stats()
            served += legacy.timestamps_served
            calls += legacy.requests
        return OracleStats(served, calls)

    def batch_stats(self) -> dict[str, float]:
        """Batch calls sent and mean commands per call."""
        c = self._coalescer
        return {"batch_calls": c.calls, "batch_mean_commands": c.items / c.calls if c.calls
                else 0.0}

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new calls; close the channel if this client opened it.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._fallback is not None:
            self._fallback[1].close()
        self.remote.close()
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fallback_store(self) -> CoalescingStore:
        assert self._fallback is not None
        return self._fallback[0]

    def _fallback_oracle(self) -> RemoteOracle:
        assert self._fallback is not None
        return self._fallback[1]


class _NotOffered(Exception):
    """The node answered UNIMPLEMENTED: it does not offer the Node service."""


def _stamp_request(count: int) -> bytes:
    from .v1 import oracle_pb2

    data: bytes = oracle_pb2.GetTimestampsRequest(count=count).SerializeToString()
    return data


_STAMP_REQUESTS = {1: _stamp_request(1)}  # the common request, serialized once


def _result_error(result: node_pb2.Result, *, oracle: bool = False) -> Exception:
    if result.WhichOneof("kind") != "error":
        return StorageError(f"protocol error: node answered a {result.WhichOneof('kind')}"
                            " result to another command")
    err = result.error
    return command_error(err.code, err.message, err.error, oracle=oracle)


def _reply_too_large(result: node_pb2.Result) -> bool:
    return bool(result.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])


def _check_count(sent: int, got: int) -> None:
    if sent != got:
        raise StorageError(f"protocol error: node answered {got} results for {sent} requests")


"""RemoteStore: the tablet store over gRPC, with the same contract as LocalStore.

Arguments are checked client-side with the same ``validation`` functions as the
in-process store, so caller mistakes raise ValueError/TypeError before any I/O.  Every
grpc.RpcError is translated at this boundary by ``bigtable_lite.status``; none leaks.

A mutation that fails with :class:`Unavailable` (deadline, lost connection) has an
unknown outcome: it may have been applied.  A stream the server refused because all its
stream slots were taken is tried again, with back-off, within the call's timeout.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from typing import Any, Self

import grpc
import grpc.experimental  # not imported by `import grpc`; channel_options needs it

from . import wire
from ._model import (
    DEFAULT_LIMITS,
    Cell,
    Limits,
    MutationResult,
    Row,
    RowMutation,
    RowRead,
    ScanRequest,
    TabletInfo,
)
from ._service import SERVICE_NAME
from ._store import StoreOps
from .errors import LimitExceeded, StorageError, StoreClosed
from .status import error_from_rpc, stream_refused
from .v1 import tablet_pb2 as pb
from .validation import check_batch, check_key, check_reads, check_scan

__all__ = ["RemoteStore", "channel_options", "open_channel"]

_FIRST_PAUSE = 0.005  # seconds before a refused stream is tried again; doubled each time
_LAST_PAUSE = 0.25


def channel_options(limits: Limits) -> list[tuple[str, int]]:
    """Channel arguments for a client of the store (also for channels made by callers).

    SingleThreadedUnaryStream runs a scan on the calling thread instead of handing each
    message over from a grpc thread: measured 2-3x more short scans per second.
    Reconnects are retried every 0.1-0.5 s (gRPC's default backs off to 120 s): a client
    is busy again within a second of a restarted server taking calls.  The minimum
    reconnect backoff is left alone: gRPC takes it as the time one connection attempt
    may take (20 s), and 100 ms failed connects to a loaded but healthy server.
    """
    return [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500),
    ]


def open_channel(target: str | grpc.Channel, limits: Limits) -> tuple[grpc.Channel, bool]:
    """(channel, owned): a new channel to "HOST:PORT" (the client's to close), or the
    caller's channel as is (the caller's to close)."""
    if isinstance(target, grpc.Channel):
        return target, False
    if isinstance(target, str):
        return grpc.insecure_channel(target, options=channel_options(limits)), True
    raise TypeError(f"target must be str or grpc.Channel, not {type(target).__name__}")


def _method(channel: grpc.Channel, name: str, response: Any, stream: bool = False) -> Any:
    path = f"/{SERVICE_NAME}/{name}"
    make = channel.unary_stream if stream else channel.unary_unary
    return make(path, request_serializer=_serialize, response_deserializer=response.FromString,
                _registered_method=True)


def _serialize(msg: Any) -> bytes:
    data: bytes = msg.SerializeToString()
    return data


class RemoteStore(StoreOps):
    """A TabletStore client.  ``address`` is "HOST:PORT" or an existing grpc.Channel.

    A channel passed in stays the caller's: ``close()`` does not close it.  ``limits``
    should match the server's; they bound message sizes and client-side validation
    (the server checks again with its own).  ``timeout`` (seconds) bounds every call,
    a whole scan included.
    """

    def __init__(self, address: str | grpc.Channel, *, timeout: float = 30.0,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self._channel, self._owns_channel = open_channel(address, limits)
        self.address = address if isinstance(address, str) else ""
        self.limits = limits
        self.timeout = timeout
        self._closed = False
        ch = self._channel
        self._read_rows = _method(ch, "ReadRows", pb.ReadRowsResponse)
        self._read_rows_stream = _method(ch, "ReadRowsStream", pb.ReadRowsResponse, stream=True)
        self._scan = _method(ch, "Scan", pb.ScanResponse, stream=True)
        self._mutate_rows = _method(ch, "MutateRows", pb.MutateRowsResponse)
        self._list_tablets = _method(ch, "ListTablets", pb.ListTabletsResponse)
        self._split_tablet = _method(ch, "SplitTablet", pb.SplitTabletResponse)
        self._compact_table = _method(ch, "CompactTable", pb.CompactTableResponse)

    def _call(self, method: Any, request: Any) -> Any:
        if self._closed:
            raise StoreClosed("RemoteStore is closed")
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        except ValueError as exc:  # grpc: "Cannot invoke RPC on closed channel!"
            if self._closed:
                raise StoreClosed("RemoteStore is closed") from exc
            raise

    def read_rows(self, reads: Sequence[RowRead]) -> list[list[Cell]]:
        check_reads(reads, self.limits)
        request = wire.read_request_to_pb(reads)
        try:
            rows = wire.read_response_from_pb(self._call(self._read_rows, request))
        except LimitExceeded as exc:
            if not self._reply_too_large(exc, request):
                raise
            rows = self._read_rows_streamed(request)
        _check_count(len(reads), len(rows))
        return rows

    def _reply_too_large(self, exc: LimitExceeded, request: pb.ReadRowsRequest) -> bool:
        """RESOURCE_EXHAUSTED for a request that fits: it was the reply that did not."""
        cause = exc.__cause__
        return (isinstance(cause, grpc.Call)
                and cause.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                and request.ByteSize() <= self.limits.max_message_bytes)

    def _read_rows_streamed(self, request: pb.ReadRowsRequest) -> list[list[Cell]]:
        """The same read, its reply in several messages (still one snapshot on the server)."""
        rows: list[list[Cell]] = []
        for resp in self._responses(self._read_rows_stream, request):
            rows += wire.read_response_from_pb(resp)
        return rows

    def scan(self, request: ScanRequest) -> Iterator[Row]:
        check_scan(request, self.limits)
        if self._closed:
            raise StoreClosed("RemoteStore is closed")
        return self._stream_scan(wire.scan_request_to_pb(request))

    def _stream_scan(self, msg: pb.ScanRequest) -> Iterator[Row]:
        for resp in self._responses(self._scan, msg):
            yield from wire.scan_response_from_pb(resp)

    def _responses(self, method: Any, request: Any) -> Iterator[Any]:
        """The replies of a streaming call, all within ``timeout``.

        A call the server refused for want of a stream slot (nothing read, nothing sent)
        is made again after a growing, jittered pause, until the timeout.
        """
        deadline = time.monotonic() + self.timeout
        pause = _FIRST_PAUSE
        while True:
            try:
                call = method(request, timeout=max(deadline - time.monotonic(), 0.001))
            except ValueError as exc:  # grpc: "Cannot invoke RPC on closed channel!"
                raise StoreClosed("RemoteStore is closed") from exc
            received = False
            try:
                for resp in call:
                    received = True
                    yield resp
                return
            except grpc.RpcError as exc:
                if received or not stream_refused(exc) or time.monotonic() + pause > deadline:
                    raise error_from_rpc(exc) from exc
            finally:
                call.cancel()  # the consumer may stop early; free the server's snapshot now
            time.sleep(random.uniform(pause / 2, pause))  # back-off: every slot was taken
            pause = min(pause * 2, _LAST_PAUSE)

    def mutate_rows(self, mutations: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        check_batch(mutations, self.limits)
        resp = self._call(self._mutate_rows, wire.mutate_request_to_pb(mutations, bool(sync)))
        results = wire.mutate_response_from_pb(resp)
        _check_count(len(mutations), len(results))
        return results

    def list_tablets(self, table: bytes | None = None) -> list[TabletInfo]:
        req = pb.ListTabletsRequest()
        if table is not None:
            check_key(table, "table", self.limits.max_table_bytes)
            req.table = table
        return wire.tablets_from_pb(self._call(self._list_tablets, req).tablets)

    def split_tablet(self, table: bytes, row: bytes) -> list[TabletInfo]:
        check_key(table, "table", self.limits.max_table_bytes)
        check_key(row, "row", self.limits.max_row_bytes)
        req = pb.SplitTabletRequest()
        req.table = table
        req.row = row
        return wire.tablets_from_pb(self._call(self._split_tablet, req).tablets)

    def compact_table(self, table: bytes) -> None:
        """Have the server drop the table's deleted entries from disk (LocalStore.compact_table)."""
        check_key(table, "table", self.limits.max_table_bytes)
        req = pb.CompactTableRequest()
        req.table = table
        self._call(self._compact_table, req)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_count(sent: int, got: int) -> None:
    if sent != got:
        raise StorageError(f"protocol error: server answered {got} results for {sent} requests")

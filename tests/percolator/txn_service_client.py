"""A small Python client of the Transactions service, as a caller in any language writes one.

It uses only the generated stubs of ``proto/percolator/v1/transactions.proto`` and
gRPC's rich error details (grpcio-status): none of the native client's protocol code.
The tests and bench/bench_bank_peers.py drive the service through it.  ``stream=True``:
every call travels as a message of one ``Stream`` call (one thread's client), falling
back to the unary methods if the node refuses the stream.  ``native=True``: every call
travels as a TXN frame of the node's native transport (:class:`NativeFrames`, written
from docs/grpc.md's description of the frames alone, as a caller in another language
would write it), found with ``Node.Describe``.
"""

from __future__ import annotations

import queue
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import grpc
from grpc_status import rpc_status

from percolator.v1 import node_pb2, node_pb2_grpc, transactions_pb2_grpc
from percolator.v1 import transactions_pb2 as pb

T = TypeVar("T")
Key = tuple[bytes, bytes]


class ServiceError(Exception):
    """A failed call: its status code, details and the Conflict in its status details."""

    def __init__(self, code: grpc.StatusCode, details: str,
                 conflict: node_pb2.Conflict | None, trailers: dict[str, str | bytes]) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.conflict = conflict
        self.trailers = trailers


def _error(exc: grpc.RpcError) -> ServiceError:
    assert isinstance(exc, grpc.Call)
    conflict = None
    status = rpc_status.from_call(exc)
    if status is not None:
        for detail in status.details:
            if detail.Is(node_pb2.Conflict.DESCRIPTOR):
                conflict = node_pb2.Conflict()
                detail.Unpack(conflict)
    trailers = {k: v for k, v in (exc.trailing_metadata() or ())}
    return ServiceError(exc.code(), exc.details() or "", conflict, trailers)


STREAM_FIELDS = {"Begin": "begin", "Get": "get", "BatchGet": "batch_get", "Scan": "scan",
                 "Commit": "commit", "Rollback": "rollback"}
CODES = {code.value[0]: code for code in grpc.StatusCode}


HEADER = struct.Struct(">IB")  # payload length (big-endian), frame kind
HELLO, WELCOME, REPLY, CLOSE, TXN = 1, 3, 4, 5, 6


class NativeFrames:
    """TXN frames on one connection to the node's native transport: a request frame out,
    its REPLY (or the CLOSE that ends the connection) in."""

    def __init__(self, host: str, port: int, timeout: float, token: str = "") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        try:
            kind, payload = self.exchange(HELLO, node_pb2.NativeHello(
                version=1, token=token).SerializeToString())
            if kind != WELCOME:
                raise ConnectionError(f"native HELLO answered with frame kind {kind}")
        except BaseException:
            self.sock.close()
            raise

    def exchange(self, kind: int, payload: bytes) -> tuple[int, bytes]:
        self.sock.sendall(HEADER.pack(len(payload), kind) + payload)
        buf = self._buf
        while len(buf) < HEADER.size or len(buf) < HEADER.size + HEADER.unpack_from(buf)[0]:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the node closed the native connection")
            buf += chunk
        length, got = HEADER.unpack_from(buf)
        end = HEADER.size + length
        self._buf = buf[end:]
        return got, buf[HEADER.size:end]

    def close(self) -> None:
        self.sock.close()


class ServiceClient:
    def __init__(self, address: str, *, timeout: float = 30.0, stream: bool = False,
                 native: bool = False, channel: grpc.Channel | None = None,
                 frames: NativeFrames | None = None) -> None:
        """``channel``: one to use (and close) instead of a plain one to ``address``;
        ``frames``: a native connection to use (and close) instead of the node's."""
        self.channel = grpc.insecure_channel(address) if channel is None else channel
        self.stub = transactions_pb2_grpc.TransactionsStub(  # type: ignore[no-untyped-call]
            self.channel)
        self.timeout = timeout
        self.stream = stream
        self._requests: queue.SimpleQueue[pb.TxnStreamRequest | None] = queue.SimpleQueue()
        self._responses: Iterator[pb.TxnStreamResponse] | None = None
        self.frames = frames
        if native and frames is None:
            described = node_pb2_grpc.NodeStub(self.channel).Describe(  # type: ignore[no-untyped-call]
                node_pb2.DescribeRequest(), timeout=timeout)
            if not described.native_port:
                raise ConnectionError(f"the node at {address} serves no native transport")
            self.frames = NativeFrames(address.rpartition(":")[0].strip("[]"),
                                       described.native_port, timeout)

    def call(self, method: str, request: object) -> object:
        if self.frames is not None:
            return self._on_frames(method, request)
        if self.stream:
            return self._on_stream(method, request)
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def _on_stream(self, method: str, request: object) -> object:
        field = STREAM_FIELDS[method]
        message = pb.TxnStreamRequest()
        getattr(message, field).CopyFrom(request)
        if self._responses is None:
            self._responses = self.stub.Stream(iter(self._requests.get, None))
        self._requests.put(message)
        try:
            reply = next(self._responses)
        except grpc.RpcError as exc:
            self._responses = None
            if (exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    and ("percolator-txn-stream", "refused") in (
                        exc.trailing_metadata() or ())):
                self.stream = False
                return self.call(method, request)
            raise _error(exc) from None
        return _result(reply, field)

    def _on_frames(self, method: str, request: object) -> object:
        field = STREAM_FIELDS[method]
        message = pb.TxnStreamRequest()
        getattr(message, field).CopyFrom(request)
        assert self.frames is not None
        kind, payload = self.frames.exchange(TXN, message.SerializeToString())
        if kind == CLOSE:
            e = node_pb2.CommandError.FromString(payload)
            raise ServiceError(CODES[e.code], e.message, None,
                               {"bigtable-lite-error": e.error} if e.error else {})
        assert kind == REPLY, kind
        return _result(pb.TxnStreamResponse.FromString(payload), field)

    def begin(self, reads: Iterable[Key] = (), *, ttl_ms: int = 0, table: bytes = b"",
              read_only: bool = False) -> ServiceTxn:
        """``read_only``: the node ends the transaction in the same call, after ``reads``."""
        reply = self.call("Begin", pb.TxnBeginRequest(
            ttl_ms=ttl_ms, table=table, read_only=read_only,
            reads=[node_pb2.Key(row=r, column=c) for r, c in reads]))
        assert isinstance(reply, pb.TxnBeginResponse)
        return ServiceTxn(self, reply.txn_id, table, _values(reply.values))

    def run(self, fn: Callable[[ServiceTxn], T], *, reads: Iterable[Key] = (),
            max_attempts: int = 50, ttl_ms: int = 0) -> T:
        """fn(txn) then commit, again in a new transaction on ABORTED (a conflict) or
        FAILED_PRECONDITION named SnapshotTooOld (its snapshot fell below the GC safe
        point)."""
        cells = list(reads)
        for attempt in range(max_attempts):
            txn = self.begin(cells, ttl_ms=ttl_ms)
            result = fn(txn)
            try:
                txn.commit()
                return result
            except ServiceError as exc:
                again = exc.code == grpc.StatusCode.ABORTED or (
                    exc.code == grpc.StatusCode.FAILED_PRECONDITION
                    and exc.trailers.get("bigtable-lite-error") == "SnapshotTooOld")
                if not again or attempt + 1 == max_attempts:
                    raise
            time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))
        raise AssertionError("unreachable")

    def end_stream(self) -> None:
        """Half-close the Stream and wait until the node ends it (bounded by the timeout)."""
        if self._responses is None:
            return
        self._requests.put(None)
        responses, self._responses = self._responses, None
        failed: list[grpc.RpcError] = []

        def drain() -> None:
            try:
                for _ in responses:
                    pass
            except grpc.RpcError as exc:
                failed.append(exc)

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        drainer.join(self.timeout)
        if drainer.is_alive():
            raise TimeoutError(f"the node did not end the Stream in {self.timeout}s")
        if failed:
            raise _error(failed[0]) from None

    def close(self) -> None:
        self._requests.put(None)
        if self.frames is not None:
            self.frames.close()
        self.channel.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _result(reply: pb.TxnStreamResponse, field: str) -> object:
    """The response of a Stream message or TXN frame; its error raised."""
    if reply.WhichOneof("result") == "error":
        e = reply.error
        raise ServiceError(CODES[e.code], e.message,
                           e.conflict if e.HasField("conflict") else None,
                           {"bigtable-lite-error": e.error} if e.error else {})
    return getattr(reply, field)


def _values(values: Iterable[pb.TxnValue]) -> dict[Key, bytes | None]:
    return {(v.row, v.column): v.value if v.found else None for v in values}


class ServiceTxn:
    """A transaction held by the node: reads go there; writes are sent with Commit."""

    def __init__(self, client: ServiceClient, txn_id: int, table: bytes,
                 values: dict[Key, bytes | None]) -> None:
        self.client = client
        self.txn_id = txn_id
        self.table = table
        self.values = values  # Begin's reads
        self.writes: dict[Key, bytes | None] = {}
        self.weak: list[Key] = []

    def get(self, row: bytes, column: bytes) -> bytes | None:
        reply = self.client.call("Get", pb.TxnGetRequest(txn_id=self.txn_id, row=row,
                                                          column=column))
        assert isinstance(reply, pb.TxnGetResponse)
        return reply.value.value if reply.value.found else None

    def batch_get(self, cells: Iterable[Key]) -> dict[Key, bytes | None]:
        reply = self.client.call("BatchGet", pb.TxnBatchGetRequest(
            txn_id=self.txn_id, cells=[node_pb2.Key(row=r, column=c) for r, c in cells]))
        assert isinstance(reply, pb.TxnBatchGetResponse)
        return _values(reply.values)

    def scan(self, start_row: bytes = b"", end_row: bytes = b"",
             columns: Iterable[bytes] = (), page: int = 0) -> Iterator[tuple[bytes, bytes, bytes]]:
        request = pb.TxnScanRequest(txn_id=self.txn_id, start_row=start_row, end_row=end_row,
                                    columns=list(columns), limit=page)
        while True:
            reply = self.client.call("Scan", request)
            assert isinstance(reply, pb.TxnScanResponse)
            for cell in reply.cells:
                yield cell.row, cell.column, cell.value
            if not reply.HasField("next"):
                return
            request.after.CopyFrom(reply.next)

    def set(self, row: bytes, column: bytes, value: bytes) -> None:
        self.writes[(row, column)] = value

    def delete(self, row: bytes, column: bytes) -> None:
        self.writes[(row, column)] = None

    def notify(self, row: bytes, column: bytes) -> None:
        self.weak.append((row, column))

    def commit_request(self) -> pb.TxnCommitRequest:
        return pb.TxnCommitRequest(
            txn_id=self.txn_id, table=self.table,
            writes=[pb.TxnWrite(row=r, column=c, value=v or b"", delete=v is None)
                    for (r, c), v in self.writes.items()],
            notify=[node_pb2.Key(row=r, column=c) for r, c in self.weak])

    def commit(self) -> int:
        reply = self.client.call("Commit", self.commit_request())
        assert isinstance(reply, pb.TxnCommitResponse)
        return reply.commit_ts

    def rollback(self) -> None:
        self.client.call("Rollback", pb.TxnRollbackRequest(txn_id=self.txn_id))

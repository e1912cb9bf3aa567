"""NodeClient: the Backend of a remote node, its steps sent as batched commands.

Every thread of the process that needs the node -- a read, a prewrite, a commit, a
timestamp -- joins the batch being gathered (``_transport.batcher``), and one message
carries them all (``percolator/v1/node.proto``); batches travel on a
``Node.BatchStream`` while the node takes one (``_transport.streams``).  The node runs
each command with its own ``LocalBackend``: the same steps an embedded client runs.

Contracts are those of :class:`~percolator._backend.Backend`: arguments were checked by
the transaction code before any I/O (the node checks them again: it trusts no client);
a command's failure comes back as its own error, translated by the tables of
``percolator._status``; ``grpc.RpcError`` never leaks; a step that fails with
``Unavailable`` after it was sent has an unknown outcome.  Timestamps are
linearizable: a caller only joins a batch not yet sent, so its range comes from a
request sent after it asked, and the node takes the range after the batch arrived.

``store`` is the node's raw tablet store, for the observers layer's side tables: point
reads and writes as commands of the same batches, scans and tablets through a
:class:`~bigtable_lite.RemoteStore` on the same channel.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Literal, Self

import grpc
from google.protobuf.message import DecodeError, Message

from bigtable_lite import (
    DEFAULT_LIMITS,
    MAX_TS,
    Cell,
    Limits,
    MutationResult,
    Row,
    RowMutation,
    RowRead,
    StorageError,
    StoreClosed,
    StoreOps,
    TabletInfo,
    TabletStore,
    Unavailable,
    wire,
)
from bigtable_lite import ScanRequest as StoreScan
from bigtable_lite.credentials import client_context, connect_channel
from bigtable_lite.remote import RemoteStore, channel_options, open_channel
from bigtable_lite.status import error_from_rpc
from bigtable_lite.validation import check_batch, check_reads

from . import _node_codec as codec
from ._backend import (
    CommitOutcome,
    CommitRequest,
    Conflict,
    Key,
    OnePhaseRequest,
    PrewriteRequest,
    ReadResult,
    ScanChunk,
    ScanRequest,
    TxnStatus,
)
from ._gc_table import GcPass
from ._node_codec import CLIENT_ID_TAG, COMMAND_TAGS, ENTRY_TAG, SERVICE_NAME, STREAM_KEY
from ._notify.client import RemoteNotifications
from ._snapshots import ActiveSnapshots, Reporter, SnapshotReport
from ._status import command_error
from ._transport import native_client
from ._transport.batcher import Batcher, Command
from ._transport.framing import field, frame
from ._transport.native_client import NativeCalls
from ._transport.native_wire import VERSION as NATIVE_VERSION
from ._transport.stream_slots import REFUSED
from ._transport.streams import StreamedCalls
from .errors import OracleError, SnapshotTooOld
from .metrics import CLIENT_BATCH_COMMANDS, CLIENT_BATCH_SECONDS
from .oracle import OracleStats, check_count
from .v1 import node_pb2 as pb
from .v1 import oracle_pb2

__all__ = ["DEFAULT_MAX_COMMANDS", "DEFAULT_MAX_IN_FLIGHT", "TRANSPORTS", "NodeClient",
           "Transport"]

Transport = Literal["auto", "native", "grpc"]
TRANSPORTS: tuple[Transport, ...] = ("auto", "native", "grpc")
"""How batches travel: the node's native transport when it serves one, else gRPC
("auto"); only native ("native": Unavailable while there is no native connection); only
gRPC ("grpc")."""

DEFAULT_MAX_IN_FLIGHT = 1
"""Batches one client keeps on the wire at once.  With one, 8 threads settle into two
groups whose batches alternate (~4.4 commands each); with two, batches held ~2.9
commands for ~15% more CPU per transaction and no more transactions/s."""
DEFAULT_MAX_COMMANDS = 256
"""Most commands in one batch."""

_RESULT_OF = {"get_timestamps": "get_timestamps", "read": "read", "scan": "scan",
              "prewrite": "prewrite", "commit": "commit", "one_phase": "one_phase",
              "resolve": "resolve", "rollback": "rollback", "heartbeat": "heartbeat",
              "check_txn_status": "check_txn_status",
              "register_observed": "register_observed",
              "observed_columns": "observed_columns", "read_rows": "read_rows",
              "mutate_rows": "mutate_rows", "report_snapshots": "report_snapshots",
              "collect_garbage": "collect_garbage",
              "clock": "clock"}


_BATCH_COMMANDS = CLIENT_BATCH_COMMANDS.labels()
_BATCH_OK = CLIENT_BATCH_SECONDS.labels("OK")
_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
_READS = frozenset(("read", "scan", "read_rows"))  # no side effects: re-sent alone if too large


def _identity(data: bytes) -> bytes:
    return data


class NodeClient:
    """A :class:`~percolator._backend.Backend` of one node, over ``Node.BatchStream``.

    ``target`` is "HOST:PORT" (the client owns the channel it opens, with the
    credentials given: ``bigtable_lite.credentials.connect_channel``) or a channel (left
    open on :meth:`close`; made with its credentials already).  ``timeout`` bounds every
    call: a batch fails (``Unavailable``) at most 1.5 timeouts after it was sent (a
    stream's deadline).  ``limits`` should match the node's.
    """

    def __init__(self, target: str | grpc.Channel, *, timeout: float = 30.0,
                 limits: Limits = DEFAULT_LIMITS, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 max_commands: int = DEFAULT_MAX_COMMANDS, transport: Transport = "auto",
                 token: str | None = None, tls_ca: str | os.PathLike[str] | None = None,
                 tls_cert: str | os.PathLike[str] | None = None,
                 tls_key: str | os.PathLike[str] | None = None) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not"
                             f" {transport!r}")
        if transport == "native" and not isinstance(target, str):
            raise ValueError("the native transport needs the node's address, not a channel")
        credentials = (token, tls_ca, tls_cert, tls_key) != (None, None, None, None)
        if isinstance(target, str):
            self._channel = connect_channel(target, channel_options(limits), token=token,
                                            tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
            self._owns_channel = True
        elif credentials:
            raise ValueError("credentials go with an address: a channel has its own")
        else:
            self._channel, self._owns_channel = open_channel(target, limits)
        self.limits = limits
        self.timeout = timeout
        # A command larger than this goes alone, so a full batch always fits a message.
        self._alone_bytes = limits.max_message_bytes // (2 * max_commands)
        self.remote = RemoteStore(self._channel, timeout=timeout, limits=limits)
        # The node's notification verbs (observers' registration, feed, parking).
        self.notifications = RemoteNotifications(self._channel, timeout=timeout)
        self._calls: StreamedCalls[bytes, pb.BatchResponse] = StreamedCalls(
            self._channel.stream_stream(
                f"/{SERVICE_NAME}/BatchStream", request_serializer=_identity,
                response_deserializer=pb.BatchResponse.FromString, _registered_method=True),
            self._channel.unary_unary(
                f"/{SERVICE_NAME}/Batch", request_serializer=_identity,
                response_deserializer=pb.BatchResponse.FromString, _registered_method=True),
            timeout=timeout, trailer_key=STREAM_KEY, refusal=REFUSED)
        self._describe = self._channel.unary_unary(
            f"/{SERVICE_NAME}/Describe",
            request_serializer=pb.DescribeRequest.SerializeToString,
            response_deserializer=pb.NodeDescription.FromString, _registered_method=True)
        self._native: NativeCalls | None = None
        if transport != "grpc" and isinstance(target, str):
            # The same TLS (CA, client certificate, host name checked) and token as the
            # channel's: connect_channel refused a token bound for another host in clear.
            self._native = NativeCalls(
                target.rpartition(":")[0], self._native_port, timeout=timeout,
                max_frame=limits.max_message_bytes, required=transport == "native",
                tls=client_context(tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key),
                token=token)
        self._batcher: Batcher[bytes, pb.Result] = Batcher(
            self._send, max_in_flight=max_in_flight, max_commands=max_commands,
            batch_bound=max(self._calls.bound, self._native.bound if self._native else 0.0)
            + self._calls.bound)
        self._lock = threading.Lock()
        self._closing = False
        self._closed = False
        self._served = 0        # timestamps returned to callers
        self._stamp_calls = 0   # timestamp commands sent
        self._store = _RawStore(self)
        # GC: this process's id on every batch, its running transactions, their reports,
        # and the node's safe point as last heard (only ever lower than the node's own).
        self.client_id = os.urandom(16)
        self._client_field = field(CLIENT_ID_TAG, self.client_id)
        self.snapshots = ActiveSnapshots()
        self.safe_point = 0
        self._reporter = Reporter(self.snapshots, self.report_snapshots,
                                  safe_point=lambda: self.safe_point)

    # --- the batch ------------------------------------------------------------------------

    def _native_port(self) -> int:
        """The node's native port (0: none), asked over gRPC."""
        try:
            reply = self._describe(pb.DescribeRequest(),
                                   timeout=min(self.timeout, native_client.CONNECT_TIMEOUT))
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return int(reply.native_port) if reply.native_version == NATIVE_VERSION else 0

    def _send(self, batch: list[Command[bytes, pb.Result]]) -> None:
        """Send one batch; settles every command of it (raises nothing but BaseException)."""
        began = time.perf_counter()
        _BATCH_COMMANDS.observe(len(batch))
        try:
            if self._closed:
                raise StoreClosed("NodeClient is closed")
            data = self._client_field + b"".join([c.data for c in batch])
            raw = self._native.call(data) if self._native is not None else None
            reply = self._calls.call(data) if raw is None else pb.BatchResponse.FromString(raw)
            _BATCH_OK.observe(time.perf_counter() - began)
            results = reply.results
            if len(results) != len(batch):
                raise StorageError(f"protocol error: node answered {len(results)} results for"
                                   f" {len(batch)} commands")
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            CLIENT_BATCH_SECONDS.labels(
                code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
            ).observe(time.perf_counter() - began)
            self._fail(batch, error_from_rpc(exc))
            return
        except StorageError as exc:
            self._fail(batch, exc)
            return
        except DecodeError as exc:
            self._fail(batch, StorageError(f"protocol error: node's reply undecodable ({exc})"))
            return
        except ValueError as exc:  # grpc: "Cannot invoke RPC on closed channel!"
            self._fail(batch, StoreClosed(f"NodeClient is closed ({exc})") if self._closed
                       else StorageError(f"batched call failed: {exc}"))
            return
        for c, result in zip(batch, results):
            c.result = result

    def _fail(self, batch: list[Command[bytes, pb.Result]], exc: StorageError) -> None:
        if self._closed and isinstance(exc, Unavailable):  # the channel closed under it
            exc = StoreClosed(f"NodeClient is closed ({exc})")
        for c in batch:  # each caller raises its own exception object
            c.error = type(exc)(*exc.args)
            c.error.__cause__ = exc.__cause__

    def _submit(self, kind: str, request: Message, *, alone: bool = False) -> Message:
        """The result of one command of ``kind``; its error raised.  ``alone``: in a
        batch of its own (also when it is too large to share one)."""
        if self._closed:
            raise StoreClosed("NodeClient is closed")
        data = frame(ENTRY_TAG, COMMAND_TAGS[kind], request.SerializeToString())
        result = self._run(Command(data), alone=alone or len(data) > self._alone_bytes)
        got = result.WhichOneof("kind")
        if got == "error" and result.error.code == _EXHAUSTED and kind in _READS:
            result = self._run(Command(data), alone=True)  # its reply did not fit a batch's
            got = result.WhichOneof("kind")
        if got != _RESULT_OF[kind]:
            if got == "error":
                err = result.error
                raise command_error(err.code, err.message, err.error)
            raise StorageError(f"protocol error: node answered {got} to a {kind} command")
        reply: Message = getattr(result, got)
        return reply

    def _run(self, command: Command[bytes, pb.Result], *, alone: bool) -> pb.Result:
        if alone:
            self._send([command])  # a batch of one, so every batch fits a message
        else:
            self._batcher.run(command)
        if command.error is not None:
            raise command.error
        assert command.result is not None
        return command.result

    # --- Backend --------------------------------------------------------------------------

    @property
    def store(self) -> TabletStore:
        return self._store

    def timestamps(self, count: int = 1) -> int:
        reply = self._submit("get_timestamps",
                             oracle_pb2.GetTimestampsRequest(count=check_count(count)))
        assert isinstance(reply, oracle_pb2.GetTimestampsResponse)
        first: int = reply.first
        if reply.count != count or first < 1 or first + count - 1 > MAX_TS:
            raise OracleError(f"oracle answered {reply.count} timestamps from {first} to a"
                              f" request for {count}")
        self.snapshots.saw(first + count - 1)
        self._reporter.kick()
        self._learn(reply.safe_point)
        with self._lock:
            self._served += count
            self._stamp_calls += 1
        return first

    def _learn(self, safe_point: int) -> None:
        if safe_point > self.safe_point:
            self.safe_point = safe_point  # an int: only ever raised

    def _check(self, start_ts: int) -> None:
        """SnapshotTooOld at once if ``start_ts`` is below the safe point last heard (the
        node would refuse it: its safe point is at least that)."""
        if start_ts < self.safe_point:
            raise SnapshotTooOld.below(start_ts, self.safe_point)

    def read(self, table: bytes, start_ts: int | None, keys: Sequence[Key]) -> ReadResult:
        if start_ts is not None:
            self._check(start_ts)
        reply = self._submit("read", codec.read_request(table, start_ts, keys))
        assert isinstance(reply, pb.ReadResponse)
        self._learn(reply.safe_point)
        result, unread = codec.read_read(keys, reply)
        while unread:  # past the reply's byte budget: the rest at the same start_ts
            more = self._submit("read", codec.read_request(table, result.start_ts, unread))
            assert isinstance(more, pb.ReadResponse)
            part, unread = codec.read_read(unread, more)
            result.values.update(part.values)
            result.locked.extend(part.locked)
        if start_ts is None:
            if not 0 < result.start_ts <= MAX_TS:
                raise OracleError(f"node answered a fresh read at timestamp {result.start_ts}")
            self.snapshots.saw(result.start_ts)
            self._reporter.kick()
            with self._lock:
                self._served += 1
                self._stamp_calls += 1
        return result

    def scan(self, request: ScanRequest) -> ScanChunk:
        self._check(request.start_ts)
        reply = self._submit("scan", codec.scan_request(request))
        assert isinstance(reply, pb.ScanResponse)
        return codec.read_scan(reply)

    def prewrite(self, request: PrewriteRequest) -> Conflict | None:
        self._check(request.start_ts)
        reply = self._submit("prewrite", codec.prewrite_request(request))
        assert isinstance(reply, pb.PrewriteResponse)
        return codec.read_prewrite(reply)

    def commit(self, request: CommitRequest) -> CommitOutcome:
        self._check(request.start_ts)
        reply = self._submit("commit", codec.commit_request(request))
        assert isinstance(reply, pb.CommitResponse)
        return codec.read_commit(reply)

    def commit_one_phase(self, request: OnePhaseRequest) -> CommitOutcome | Conflict:
        self._check(request.start_ts)
        reply = self._submit("one_phase", codec.one_phase_request(request))
        assert isinstance(reply, pb.OnePhaseResponse)
        return codec.read_one_phase(reply)

    def resolve(self, table: bytes, start_ts: int, keys: Sequence[Key]) -> int:
        reply = self._submit("resolve", pb.ResolveRequest(table=table, start_ts=start_ts,
                                                          cells=codec.rows_of(keys)))
        assert isinstance(reply, pb.ResolveResponse)
        return int(reply.still_locked)

    def rollback(self, table: bytes, start_ts: int, primary: Key, keys: Sequence[Key]) -> None:
        self._submit("rollback", pb.RollbackRequest(
            table=table, start_ts=start_ts, primary=pb.Key(row=primary[0], column=primary[1]),
            cells=codec.rows_of(keys)))

    def heartbeat(self, table: bytes, start_ts: int, primary: Key, ttl_ms: int) -> bool:
        reply = self._submit("heartbeat", pb.HeartbeatRequest(
            table=table, start_ts=start_ts, primary=pb.Key(row=primary[0], column=primary[1]),
            ttl_ms=ttl_ms))
        assert isinstance(reply, pb.HeartbeatResponse)
        return bool(reply.held)

    def check_txn_status(self, table: bytes, primary: Key, start_ts: int) -> TxnStatus:
        reply = self._submit("check_txn_status", pb.CheckTxnStatusRequest(
            table=table, primary=pb.Key(row=primary[0], column=primary[1]), start_ts=start_ts))
        assert isinstance(reply, pb.TxnStatus)
        return codec.read_status(reply)

    def register_observed(self, table: bytes, columns: Sequence[bytes]) -> int:
        reply = self._submit("register_observed", pb.RegisterObservedRequest(
            table=table, columns=columns))
        assert isinstance(reply, pb.RegisterObservedResponse)
        return int(reply.ts)

    def observed_columns(self, table: bytes) -> frozenset[bytes]:
        reply = self._submit("observed_columns", pb.ObservedColumnsRequest(table=table))
        assert isinstance(reply, pb.ObservedColumnsResponse)
        return frozenset(reply.columns)

    def report_snapshots(self, report: SnapshotReport) -> int:
        """Report this process's running transactions (``Reporter``); returns the lease
        in ms."""
        reply = self._submit("report_snapshots", codec.report_request(report))
        assert isinstance(reply, pb.ReportSnapshotsResponse)
        safe_point, lease_ms = codec.read_report(reply)
        self._learn(safe_point)
        return lease_ms

    def collect_garbage(self) -> GcPass:
        """One GC pass at the node, now."""
        reply = self._submit("collect_garbage", pb.CollectGarbageRequest())
        assert isinstance(reply, pb.GcPass)
        return codec.read_gc_pass(reply)

    def now_ms(self) -> int:
        reply = self._submit("clock", pb.ClockRequest())
        assert isinstance(reply, pb.ClockResponse)
        return int(reply.now_ms)

    # --- figures --------------------------------------------------------------------------

    def stats(self) -> OracleStats:
        """Client-side figures: timestamps returned to callers, commands that took them."""
        with self._lock:
            return OracleStats(self._served, self._stamp_calls)

    def batch_stats(self) -> dict[str, float]:
        """Batches sent, commands per batch, gRPC streams and native connections opened."""
        b = self._batcher
        return {"batches": b.calls, "batch_mean_commands": b.commands / b.calls if b.calls
                else 0.0, "streams_opened": self._calls.streams_opened,
                "native_connections": self._native.connections_opened if self._native
                else 0}

    @property
    def queued(self) -> int:
        """Commands waiting for a batch to be sent (not yet on the wire)."""
        return self._batcher.queued

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new calls; close the channel if this client opened it.  Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._reporter.close()  # releases what this client held at the node
        with self._lock:
            self._closed = True
        if self._native is not None:
            self._native.close()
        self._calls.close()
        self.remote.close()
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RawStore(StoreOps):
    """The node's raw tablet store: point reads and writes batched with the steps."""

    def __init__(self, node: NodeClient) -> None:
        self._node = node
        self.limits = node.limits

    def read_rows(self, reads: Sequence[RowRead]) -> list[list[Cell]]:
        check_reads(reads, self.limits)
        reply = self._node._submit("read_rows", wire.read_request_to_pb(reads))
        rows = wire.read_response_from_pb(reply)  # type: ignore[arg-type]
        if len(rows) != len(reads):
            raise StorageError(f"protocol error: {len(rows)} rows for {len(reads)} reads")
        return rows

    def mutate_rows(self, mutations: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        check_batch(mutations, self.limits)
        # Alone when synced: an fsync would hold up every other command of a batch.
        reply = self._node._submit("mutate_rows", wire.mutate_request_to_pb(mutations, sync),
                                   alone=sync)
        out = wire.mutate_response_from_pb(reply)  # type: ignore[arg-type]
        if len(out) != len(mutations):
            raise StorageError(f"protocol error: {len(out)} results for {len(mutations)} rows")
        return out

    def scan(self, request: StoreScan) -> Iterator[Row]:
        return self._node.remote.scan(request)

    def list_tablets(self, table: bytes | None = None) -> list[TabletInfo]:
        return self._node.remote.list_tablets(table)

    def split_tablet(self, table: bytes, row: bytes) -> list[TabletInfo]:
        return self._node.remote.split_tablet(table, row)

    def compact_table(self, table: bytes) -> None:
        self._node.remote.compact_table(table)

    def close(self) -> None:
        """Closed with its NodeClient."""

"""Node.Batch: the node's service, executing many clients' protocol steps at once.

A batch holds commands of any number of client threads (``percolator/v1/node.proto``);
each command is one step of ``percolator._backend.Backend``, run by the node's own
:class:`~percolator._local.LocalBackend` -- the same steps an embedded client runs.
Commands of one batch are concurrent (their callers were all waiting when it was
sent), so the node may run them in any order; it merges where that saves work:

* every timestamp command: one ``oracle.get_timestamps(total)``, split into one
  contiguous range per command, taken after the batch arrived (so each caller's
  timestamps are above every timestamp handed out before it asked);
* every commit step: one oracle call for all their commit_ts (``LocalBackend.commit_many``).

The other commands run one by one, in batch order, before those (so a later command
sees an earlier one's write to a shared row); a fresh read takes its own timestamp.

One bad command fails only itself: each is decoded and checked on its own
(``percolator._node_codec``: the node trusts no client; a field it does not know, at
any depth, fails its command) and answered with its own error result, whose code
comes from the tables of ``percolator._status``.  The caller's role is checked per
command (``percolator._node_roles``): a command above it is PERMISSION_DENIED alone.

A batch's reply is budgeted while it is gathered, not after: once its results reach
the message limit, the reads after them are not run but answered RESOURCE_EXHAUSTED,
and their clients send them again alone (reads have no side effects; the other
commands always run).  A ``read`` or ``scan`` gathers at most a quarter of the limit
(the values past it are left for the client to read again, a scan chunk ends there), a
raw ``read_rows`` at most what is left of the limit (beyond it: refused, its client
reads alone), so one batch holds at most about the limit plus one read: 1,500 reads of
a 1 MiB cell in one 24 KB request once took a node to gigabytes.  If the reply still
would not fit, the largest read results are answered RESOURCE_EXHAUSTED the same way.
"""

from __future__ import annotations

import functools
import logging
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf import unknown_fields
from google.protobuf.message import Message

from bigtable_lite import InvalidArgument, LimitExceeded, Limits, ReplyTooLarge, RowMutation, wire
from bigtable_lite import status as store_status
from bigtable_lite.auth import Role, TokenTable, caller_of, role_of
from bigtable_lite.reflection import source_descriptors
from bigtable_lite.server import ServiceRegistration
from bigtable_lite.validation import check_batch, check_reads

from . import _node_codec as codec
from ._backend import CommitRequest
from ._leases import client_key
from ._local import LocalBackend
from ._node_codec import COMMAND_TAGS, ENTRY_TAG, RESULT_TAGS, SERVICE_NAME, STREAM_KEY
from ._node_metrics import CommandMetrics, outcome_of
from ._node_roles import check_command
from ._status import error_name, status_for
from ._transport import native_auth, native_wire
from ._transport.framing import frame
from ._transport.native_server import Executor, Handlers
from ._transport.native_wire import VERSION as NATIVE_VERSION
from ._transport.stream_slots import StreamSlots
from ._waits import MayWait
from .metrics import ORACLE_BATCH
from .oracle import MAX_COUNT, check_count
from .v1 import node_pb2 as pb
from .v1 import oracle_pb2

__all__ = ["DEFAULT_MAX_STREAMS", "NativeService", "NodeService"]

log = logging.getLogger(__name__)

DEFAULT_MAX_STREAMS = 16
"""Most BatchStream calls open at once (each holds a server thread); ``Node`` uses half
its worker threads."""
NativeService = Callable[[Role, bytes], Handlers]
"""Another service on the native transport: its executors (by frame kind) for a
connection of this caller's role and identity."""

_READ_RESULTS = frozenset(("read", "scan", "read_rows"))  # may be refused for size
# Commands a native connection's batch runs on a pool thread, not on the transport's
# loop (``native_loop``): a pass over the whole store, a wait for writers...  Reads of
# ranges stay on the loop, bounded by their reply budget (on pool threads the workers'
# scans fought the loop for the GIL, 4 workers costing the node 1.7x one's CPU a paper),
# and so do writes on a node that fsyncs them (the loop's writes share the fsyncs of
# ``bigtable_lite._log_sync``, and their replies wait for them there).
_WAITING = frozenset(("register_observed", "collect_garbage"))
UNKNOWN_COMMAND = "command has no kind set (a kind unknown to this node?)"
_ORACLE_BATCH = ORACLE_BATCH.labels()


def _has_unknown_fields(msg: Message) -> bool:
    """Whether ``msg`` carries, at any depth, a field this node does not know (it must not
    half-understand a step); discards them."""
    size = msg.ByteSize()
    msg.DiscardUnknownFields()  # recursive: the size drops iff some field was unknown
    return msg.ByteSize() != size


def _error_result(code: grpc.StatusCode, message: str, name: str = "") -> bytes:
    err = pb.CommandError(code=code.value[0], message=message, error=name)
    return frame(ENTRY_TAG, RESULT_TAGS["error"], err.SerializeToString())


def _failed(exc: BaseException) -> bytes:
    """The framed error result for ``exc``."""
    code, message = status_for(exc)
    store_status.log_failure(log, f"{SERVICE_NAME} command", code, message, exc)
    return _error_result(code, message, error_name(exc))


_TOO_LARGE = _error_result(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           "read reply too large to share a batch; read alone")


def _result(kind: str, msg: Message) -> bytes:
    return frame(ENTRY_TAG, RESULT_TAGS[kind], msg.SerializeToString())


class NodeService:
    """Executes batches with one node's LocalBackend.  Thread-safe: it is.

    ``tokens``: the node's, for the HELLO of native connections (gRPC calls are
    authenticated by the server's guard before they get here); None: none checked."""

    def __init__(self, backend: LocalBackend, *, max_streams: int = DEFAULT_MAX_STREAMS,
                 tokens: TokenTable | None = None) -> None:
        self._backend = backend
        self._tokens = tokens  # of native connections (gRPC calls pass the server's guard)
        self._limits = backend.limits
        self._streams = StreamSlots(max_streams, STREAM_KEY)
        self.native_port = 0  # where the node serves the native transport (0: it does not)
        # Room left for framing and for the results that are not reads.
        self._reply_limit = backend.limits.max_message_bytes - (1 << 16)
        self._budget = backend.limits.max_message_bytes // 4  # one read's values
        self.metrics = CommandMetrics()
        # Each step takes its message and the batch's client_id.
        self._steps: dict[str, Callable[[Any, bytes], Message]] = {
            "read": self._read, "scan": self._scan, "prewrite": self._prewrite,
            "one_phase": self._one_phase, "resolve": self._resolve,
            "rollback": self._rollback, "heartbeat": self._heartbeat,
            "check_txn_status": self._status, "register_observed": self._register,
            "observed_columns": self._observed, "report_snapshots": self._report,
            "collect_garbage": self._collect_garbage, "clock": self._clock,
        }

    # --- one batch ------------------------------------------------------------------------

    def execute(self, request: pb.BatchRequest, *, known: bool = False,
                role: Role = Role.ADMIN, caller: bytes = b"") -> bytes:
        """The serialized BatchResponse: a result for every command, in order.

        Never raises for a command: its failure is its result.  ``known``: the request
        carries no field unknown to this node (else each command is checked for some).
        ``role``: the caller's (``_node_roles``); a command above it is refused alone.
        ``caller``: who (``bigtable_lite.auth.caller_of``): the batch's client_id names
        a client of its own (``_leases.client_key``), whose GC lease no other can move.
        """
        client = client_key(caller, codec.parse_client_id(request.client_id))
        results: list[bytes] = [b""] * len(request.commands)
        stamps: list[tuple[int, int]] = []
        commits: list[tuple[int, CommitRequest]] = []
        checked = role is not Role.ADMIN
        gathered = 0  # bytes of the results so far
        metrics = self.metrics
        metrics.batch(len(results))
        clock = time.perf_counter
        for i, command in enumerate(request.commands):
            kind = command.WhichOneof("kind")
            if kind in _READ_RESULTS and gathered >= self._reply_limit:
                results[i] = _TOO_LARGE  # not read: its client sends it again alone
                continue
            began = clock()
            try:
                if kind is None:
                    raise InvalidArgument(UNKNOWN_COMMAND)
                if checked:
                    check_command(kind, role)
                if not known and _has_unknown_fields(command):
                    raise InvalidArgument(f"{kind} command has fields unknown to this node")
                msg = getattr(command, kind)
                if kind == "get_timestamps":
                    stamps.append((i, check_count(msg.count)))
                elif kind == "commit":
                    commits.append((i, codec.parse_commit(msg, self._limits)))
                elif kind == "mutate_rows":
                    results[i] = _result(kind, self._mutate_rows(msg))
                    metrics.done(kind, "ok", clock() - began)
                elif kind == "read_rows":
                    try:
                        reply = self._read_rows(msg, self._reply_limit - gathered)
                    except ReplyTooLarge:
                        if not gathered:
                            raise  # too large for a batch of its own too
                        reply = None  # it might fit alone
                    if reply is None:
                        results[i] = _TOO_LARGE
                    else:
                        results[i] = _result(kind, reply)
                        metrics.done(kind, "ok", clock() - began)
                else:
                    reply = self._steps[kind](msg, client)
                    results[i] = _result(kind, reply)
                    metrics.done(kind, outcome_of(kind, reply), clock() - began)
            except Exception as exc:  # noqa: BLE001 - the command's own error result
                results[i] = _failed(exc)
                metrics.failed(kind, exc, clock() - began)
            gathered += len(results[i])
        if stamps:
            self._timestamps(stamps, results, client)
        if commits:
            self._commit(commits, results)
        self._fit(request, results)
        return b"".join(results)

    def _timestamps(self, stamps: list[tuple[int, int]], results: list[bytes], client: bytes
                    ) -> None:
        """One oracle call per MAX_COUNT timestamps; each command a contiguous range, with
        the safe point; pinned for ``client`` (``SafePoint.timestamps``)."""
        groups: list[list[tuple[int, int]]] = [[]]
        total = 0
        for item in stamps:
            if total + item[1] > MAX_COUNT:
                groups.append([])
                total = 0
            groups[-1].append(item)
            total += item[1]
        for group in groups:
            began = time.perf_counter()
            total = sum([count for _, count in group])
            _ORACLE_BATCH.observe(total)
            try:
                first = self._backend.timestamps(total, client)
            except Exception as exc:  # noqa: BLE001 - every command of the call fails with it
                for i, _ in group:
                    results[i] = _failed(exc)
                    self.metrics.failed("get_timestamps", exc, time.perf_counter() - began)
                continue
            safe_point = self._backend.safe_point.value
            seconds = time.perf_counter() - began
            for i, count in group:
                reply = oracle_pb2.GetTimestampsResponse(first=first, count=count,
                                                         safe_point=safe_point)
                results[i] = _result("get_timestamps", reply)
                self.metrics.done("get_timestamps", "ok", seconds)
                first += count

    def _commit(self, commits: list[tuple[int, CommitRequest]], results: list[bytes]) -> None:
        """Every commit step at once: one oracle call per MAX_COUNT of them; each command
        answered with its own transaction's outcome or error."""
        for start in range(0, len(commits), MAX_COUNT):
            group = commits[start:start + MAX_COUNT]
            began = time.perf_counter()
            try:
                outcomes = self._backend.commit_many([request for _, request in group])
            except Exception as exc:  # noqa: BLE001 - every command of the group fails with it
                for i, _ in group:
                    results[i] = _failed(exc)
                    self.metrics.failed("commit", exc, time.perf_counter() - began)
                continue
            seconds = time.perf_counter() - began
            for (i, _), outcome in zip(group, outcomes):
                if isinstance(outcome, Exception):
                    results[i] = _failed(outcome)
                    self.metrics.failed("commit", outcome, seconds)
                    continue
                results[i] = _result("commit", codec.commit_result(outcome))
                self.metrics.done("commit", "ok" if outcome.committed else "rolled_back",
                                  seconds)

    def _fit(self, request: pb.BatchRequest, results: list[bytes]) -> None:
        """Refuse the largest read results (RESOURCE_EXHAUSTED) until the reply fits the
        message limit; their clients read again alone.  Other results are never refused
        (their steps were applied)."""
        total = sum([len(r) for r in results])
        if total <= self._reply_limit:
            return
        reads = [i for i, c in enumerate(request.commands) if c.WhichOneof("kind") in
                 _READ_RESULTS]
        for i in sorted(reads, key=lambda i: len(results[i]), reverse=True):
            total -= len(results[i])
            results[i] = _TOO_LARGE
            total += len(results[i])
            if total <= self._reply_limit:
                return

    # --- the steps ------------------------------------------------------------------------

    def _read(self, msg: pb.ReadRequest, client: bytes) -> pb.ReadResponse:
        table, start_ts, keys = codec.parse_read(msg, self._limits)
        budget = self._budget
        backend = self._backend
        result = backend.read(table, start_ts, keys, client, budget=budget)
        return codec.read_result(keys, result, budget, backend.safe_point.value)

    def _scan(self, msg: pb.ScanRequest, client: bytes) -> pb.ScanResponse:
        return codec.scan_result(self._backend.scan(codec.parse_scan(msg, self._limits)))

    def _prewrite(self, msg: pb.PrewriteRequest, client: bytes) -> pb.PrewriteResponse:
        return codec.prewrite_result(
            self._backend.prewrite(codec.parse_prewrite(msg, self._limits)))

    def _one_phase(self, msg: pb.OnePhaseRequest, client: bytes) -> pb.OnePhaseResponse:
        return codec.one_phase_result(
            self._backend.commit_one_phase(codec.parse_one_phase(msg, self._limits)))

    def _resolve(self, msg: pb.ResolveRequest, client: bytes) -> pb.ResolveResponse:
        table, start_ts, keys = codec.parse_resolve(msg, self._limits)
        return pb.ResolveResponse(still_locked=self._backend.resolve(table, start_ts, keys))

    def _rollback(self, msg: pb.RollbackRequest, client: bytes) -> pb.RollbackResponse:
        table, start_ts, primary, keys = codec.parse_rollback(msg, self._limits)
        self._backend.rollback(table, start_ts, primary, keys)
        return pb.RollbackResponse()

    def _heartbeat(self, msg: pb.HeartbeatRequest, client: bytes) -> pb.HeartbeatResponse:
        table, start_ts, primary, ttl_ms = codec.parse_heartbeat(msg, self._limits)
        return pb.HeartbeatResponse(held=self._backend.heartbeat(table, start_ts, primary,
                                                                 ttl_ms))

    def _status(self, msg: pb.CheckTxnStatusRequest, client: bytes) -> pb.TxnStatus:
        table, primary, start_ts = codec.parse_status(msg, self._limits)
        return codec.status_result(self._backend.check_txn_status(table, primary, start_ts))

    def _register(self, msg: pb.RegisterObservedRequest, client: bytes
                  ) -> pb.RegisterObservedResponse:
        table, columns = codec.parse_register(msg, self._limits)
        return pb.RegisterObservedResponse(ts=self._backend.register_observed(table, columns))

    def _observed(self, msg: pb.ObservedColumnsRequest, client: bytes
                  ) -> pb.ObservedColumnsResponse:
        table = codec.parse_table(msg.table, self._limits)
        return pb.ObservedColumnsResponse(
            columns=sorted(self._backend.observed_columns(table)))

    def _clock(self, msg: pb.ClockRequest, client: bytes) -> pb.ClockResponse:
        return pb.ClockResponse(now_ms=self._backend.now_ms())

    def _read_rows(self, msg: Any, budget: int) -> Message:
        reads = wire.read_request_from_pb(msg)
        check_reads(reads, self._limits)
        return wire.read_response_to_pb(
            self._backend.local_store.read_rows(reads, max_bytes=budget))

    def _mutate_rows(self, msg: Any) -> Message:
        rows: list[RowMutation] = wire.mutate_request_from_pb(msg)
        check_batch(rows, self._limits)
        return wire.mutate_response_to_pb(
            self._backend.local_store.mutate_rows(rows, sync=bool(msg.sync)))

    def _report(self, msg: pb.ReportSnapshotsRequest, client: bytes
                ) -> pb.ReportSnapshotsResponse:
        client_id, report = codec.parse_report(msg, client)
        safe_point = self._backend.report_snapshots(client_id, report)
        return pb.ReportSnapshotsResponse(safe_point=safe_point,
                                          lease_ms=self._backend.safe_point.lease_ms)

    def _collect_garbage(self, msg: pb.CollectGarbageRequest, client: bytes) -> pb.GcPass:
        return codec.gc_pass_result(self._backend.collect_garbage())

    def execute_raw(self, raw: bytes, role: Role = Role.ADMIN, caller: bytes = b"") -> bytes:
        """The serialized BatchResponse to the serialized BatchRequest ``raw`` of
        ``caller``, of ``role``; raises InvalidArgument if ``raw`` is not one."""
        request, known = _parse(raw, self._limits)
        return self.execute(request, known=known, role=role, caller=caller)

    # --- the native transport -------------------------------------------------------------

    def _execute_native(self, raw: bytes, on_loop: bool, *, role: Role, caller: bytes
                        ) -> bytes:
        """``execute_raw`` for a native connection: on the transport's loop, a batch that
        may wait (``_may_wait``) is refused with MayWait before any command runs."""
        request, known = _parse(raw, self._limits)
        if on_loop and self._may_wait(request):
            raise MayWait()
        return self.execute(request, known=known, role=role, caller=caller)

    def _may_wait(self, request: pb.BatchRequest) -> bool:
        """Whether a command of ``request`` may wait: for an fsync it asks for itself, or
        through a long pass (``_WAITING``)."""
        for command in request.commands:
            kind = command.WhichOneof("kind")
            if kind in _WAITING:
                return True
            if kind == "mutate_rows" and command.mutate_rows.sync:
                return True
        return False

    def open_native(self, hello: pb.NativeHello, tls: ssl.SSLSocket | None, *,
                    services: Sequence[NativeService] = ()) -> Handlers:
        """Admit a native connection (``_transport.native_server``; TLS, mutual TLS
        included, was checked by its handshake): the executors of its requests, all bound
        to the caller and role of the HELLO's token (as ``role_of`` and ``caller_of`` give
        a gRPC call's): its batches' (each command checked against the role as ``Batch``
        checks a gRPC caller's), and each of ``services``' (the Transactions service's TXN
        frames).  Unauthenticated without a valid token on a node with tokens."""
        admitted = native_auth.admit(self._tokens, hello)
        handlers: dict[int, Executor] = {
            native_wire.BATCH: functools.partial(self._execute_native, role=admitted.role,
                                                 caller=admitted.caller)}
        for service in services:
            handlers.update(service(admitted.role, admitted.caller))
        return handlers

    # --- gRPC -----------------------------------------------------------------------------

    def Batch(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return self.execute_raw(raw, role_of(context), caller_of(context))
        except Exception as exc:  # noqa: BLE001 - the call's failure becomes a status, here
            _abort(context, exc)

    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext
                 ) -> pb.NodeDescription:
        return pb.NodeDescription(native_port=self.native_port,
                                  native_version=NATIVE_VERSION if self.native_port else 0)

    def BatchStream(self, requests: Iterator[bytes], context: grpc.ServicerContext
                    ) -> Iterator[bytes]:
        """Batches of one stream, in order.  Holds a server thread while open, hence the cap."""
        slots = self._streams
        slots.admit(context, "no batch stream free (or the node is stopping): send batches by"
                    " Batch")
        role, caller = role_of(context), caller_of(context)
        try:
            for raw in requests:
                try:
                    reply = self.execute_raw(raw, role, caller)
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
                    "BatchStream": grpc.stream_stream_rpc_method_handler(self.BatchStream),
                    "Describe": grpc.unary_unary_rpc_method_handler(
                        self.Describe, request_deserializer=pb.DescribeRequest.FromString,
                        response_serializer=pb.NodeDescription.SerializeToString)}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)

    def registration(self) -> ServiceRegistration:
        """This service, for ``bigtable_lite.server.build_server(..., extra=[...])``."""
        add: Callable[[grpc.Server], None] = self.add_to_server
        # read admits a batch; each command is checked against the caller's role here.
        # Describe (where the native transport is) is a reader's too: any client asks it.
        return ServiceRegistration(SERVICE_NAME, add, {"Batch": Role.READ,
                                                       "BatchStream": Role.READ,
                                                       "Describe": Role.READ},
                                   sources=source_descriptors("percolator.v1"))


assert set(COMMAND_TAGS) == {f.name for f in pb.Command.DESCRIPTOR.fields}


def _parse(raw: bytes, limits: Limits) -> tuple[pb.BatchRequest, bool]:
    """The request, and whether it carries no field unknown to this node.

    At most ``limits.max_batch_rows`` commands (clients send a few hundred): the message
    limit alone let one call of a million cheap commands hold a server thread for
    minutes.

    Fast path (any canonical encoding, as ours): with the unknown fields discarded, the
    request serializes to exactly ``raw``'s length (a canonical encoding is never longer
    than another of the same fields) -- else the commands are checked one by one.
    """
    request = pb.BatchRequest.FromString(raw)
    if len(request.commands) > limits.max_batch_rows:
        raise LimitExceeded(f"a batch of {len(request.commands)} commands; the limit is"
                            f" {limits.max_batch_rows}")
    if len(unknown_fields.UnknownFieldSet(request)):
        raise InvalidArgument("request has fields unknown to percolator.v1.BatchRequest")
    request.DiscardUnknownFields()
    if request.ByteSize() == len(raw):
        return request, True
    return pb.BatchRequest.FromString(raw), False


def _abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    code, message = status_for(exc)
    store_status.log_failure(log, SERVICE_NAME, code, message, exc)
    name = error_name(exc)
    if name:
        context.set_trailing_metadata(((store_status.ERROR_KEY, name),))
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover

"""NodeClient: one client of a node whose reads, writes and timestamp requests travel together.

As TiKV's client batches commands (client-go ``BatchCommands``): every thread of the
process that needs the node — a read, a prewrite, a commit, a ``start_ts`` or a
``commit_ts`` — joins the batch being gathered, and one message to the node carries
them all (``percolator/v1/node.proto``).  A lone caller goes at once; while
``max_in_flight`` batches are on the wire, new callers wait and go together in the
next one.  A gRPC call costs far more CPU on each side than a small command (figures
in ``docs/architecture.md``); gathering across kinds, not per kind, is what makes
batches large enough to pay for it.

NodeClient is both a :class:`~bigtable_lite.TabletStore` and a
:class:`~percolator.oracle.TimestampSource`, with their contracts unchanged:

* arguments are checked with the same ``validation`` functions as ``LocalStore``
  before any I/O; the server's errors come back per command and are translated by
  the tables in ``percolator.node_service`` (which defer to ``bigtable_lite.status``
  and ``percolator.oracle_service``); ``grpc.RpcError`` never leaks; a mutation that
  fails with ``Unavailable`` has an unknown outcome;
* timestamps are linearizable: a caller only joins a batch that has not been sent,
  so its range comes from a request sent after it asked, and the server takes the
  range after the batch arrived;
* scans, tablet listing and splitting, ``sync=True`` writes (an fsync would hold up
  every command of a batch) and commands too large to share a batch go through a
  :class:`~bigtable_lite.RemoteStore` on the same channel (``inner``).

NodeClient is also a :class:`~percolator.commit.CommitService`: a transaction's commit
step (commit_ts, the primary's commit, the secondaries') runs at the node as one
command, so a commit costs the client one hop and one command instead of three; and
:class:`~percolator.fresh_read.FreshReads`: a transaction's first read takes its
start_ts with it, one command instead of two.

Transport.  Batches travel on a ``Node.BatchStream`` call rather than as ``Node.Batch``
calls: measured on the reference machine (2 cores, grpcio 1.75.1, 8-thread transfers),
a stream message cost the server ~30% less CPU than a unary call, and the client no
more (the caller that sends a batch reads its reply: no reader thread), for ~20% more
transfers/s.  The stream (:class:`~percolator.request_stream.RequestStream`, as the
oracle client's) is half-closed once ``_STREAM_IDLE`` passes without a batch, since an
open stream holds a server thread, and takes no batches after half a ``timeout``, so
each batch still has a whole ``timeout`` before the stream's deadline and every wait
stays bounded.  A node that refuses a stream (its share of threads is taken) answers
before reading any batch; such batches go by ``Node.Batch``.

A node that does not offer ``percolator.v1.Node`` (an older ``percolator serve``)
answers UNIMPLEMENTED, which has no effect on the node; the client then switches for
good to the per-service path (``CoalescingStore`` over ``RemoteStore``, and
``RemoteOracle``) and re-sends there.
"""

from __future__ import annotations

import _thread
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Self

import grpc

from bigtable_lite import (
    DEFAULT_LIMITS,
    MAX_TS,
    Cell,
    Limits,
    MutationResult,
    Row,
    RowMutation,
    RowRead,
    ScanRequest,
    StorageError,
    StoreClosed,
    TabletInfo,
    Unavailable,
    wire,
)
from bigtable_lite.remote import RemoteStore, open_channel
from bigtable_lite.status import error_from_rpc
from bigtable_lite.store import StoreOps
from bigtable_lite.validation import check_batch, check_reads

from . import failpoints
from .batching import CoalescingStore
from .commit import CommitOutcome, CommitRequest, LocalCommit, check_commit_request
from .errors import OracleError
from .fresh_read import LocalFreshReads, check_fresh_reads
from .node_service import (
    COMMIT_TAG,
    FRESH_READ_FIELD,
    FRESH_READ_TAG,
    GET_TIMESTAMPS_TAG,
    MUTATE_ROWS_TAG,
    READ_ROWS_TAG,
    SERVICE_NAME,
    STREAM_KEY,
    STREAM_REFUSED,
    UNKNOWN_COMMAND,
    command_error,
    commit_request_to_pb,
    field,
    frame,
)
from .oracle import OracleStats, check_count
from .oracle_client import RemoteOracle
from .request_stream import RequestStream, StreamEnded
from .v1 import node_pb2, oracle_pb2

__all__ = ["DEFAULT_MAX_COMMANDS", "DEFAULT_MAX_IN_FLIGHT", "NodeClient"]

DEFAULT_MAX_IN_FLIGHT = 1
"""Batches one client keeps on the wire at once.  With one, 8 threads settle into two
groups whose batches alternate (~4.4 commands each); with two, batches held ~2.9
commands for ~15% more CPU per transaction and no more transactions/s."""
DEFAULT_MAX_COMMANDS = 256
"""Most commands in one batch."""

_HANDOFF_MARGIN = 5.0  # seconds a caller waits beyond two batches' deadlines before giving up
_STREAM_LIFE = 0.5     # a stream takes batches for this many timeouts, then is replaced
_STREAM_BACKOFF = 1.0  # seconds without streams after the node refused one
_STREAM_IDLE = 0.2     # seconds without a batch after which the stream is closed
_READ, _MUTATE, _STAMPS, _COMMIT, _FRESH = range(5)  # a command's kind
_BatchStream = RequestStream[bytes, node_pb2.BatchResponse]


class _Command:
    """One caller's command: its framed bytes, then its result or error.

    ``wake`` is held until the command is settled, or until its caller is promoted to
    send the next batch (``batch`` set, holding this command first).
    """

    __slots__ = ("batch", "data", "error", "kind", "result", "wake")

    def __init__(self, kind: int, data: bytes) -> None:
        self.kind = kind
        self.data = data
        self.result: node_pb2.Result | None = None
        self.error: BaseException | None = None
        self.batch: list[_Command] | None = None
        self.wake = _thread.allocate_lock()
        self.wake.acquire()


class _Batcher:
    """Gathers concurrent commands into batches; at most ``max_in_flight`` on the wire.

    The scheme of :class:`percolator.batching.Coalescer` (no thread of its own: the first
    caller of a batch sends it; when a batch returns, its sender promotes the first
    queued caller to send the next one), with what a batch of mixed commands needs: a
    result or an error per command, a raw lock per caller instead of a
    ``threading.Event`` (a Condition and a lock: profiled at ~8 us to create and ~4 us
    more to wake, per command), and bounded waits.
    """

    def __init__(self, call: Callable[[list[_Command]], None], *, max_in_flight: int,
                 max_commands: int, wait: float) -> None:
        self._call = call
        self._max_in_flight = max_in_flight
        self._max_commands = max_commands
        self._wait = wait
        self._lock = threading.Lock()
        self._queue: deque[_Command] = deque()
        self._in_flight = 0
        self.calls = 0
        self.commands = 0

    @property
    def queued(self) -> int:
        """Commands waiting for a batch to be sent."""
        return len(self._queue)

    def run(self, me: _Command) -> None:
        """Return once ``me`` is settled (``result`` or ``error`` set)."""
        with self._lock:
            self._queue.append(me)
            batch = None
            if self._in_flight < self._max_in_flight:
                self._in_flight += 1
                batch = self._take([])
        if batch is None:
            if not me.wake.acquire(True, self._wait):
                self._timed_out(me)
            if me.batch is None:
                return  # settled
            with self._lock:  # promoted: send the next batch, with whoever queued meanwhile
                batch = self._take(me.batch)
        self._send(batch, me)

    def _take(self, batch: list[_Command]) -> list[_Command]:
        """``batch`` filled from the queue, up to max_commands (the caller holds the lock)."""
        queue = self._queue
        for _ in range(min(len(queue), self._max_commands - len(batch))):
            batch.append(queue.popleft())
        if batch:
            self.calls += 1
            self.commands += len(batch)
        return batch

    def _send(self, batch: list[_Command], me: _Command) -> None:
        try:
            self._call(batch)
        except BaseException as exc:  # e.g. KeyboardInterrupt: settle the batch, pass the turn
            for c in batch:
                if c.result is None and c.error is None:
                    c.error = Unavailable(f"batched call interrupted: {exc!r}")
            raise
        finally:
            with self._lock:
                nxt = self._queue.popleft() if self._queue else None
                if nxt is not None:
                    nxt.batch = [nxt]  # it inherits our place on the wire
                else:
                    self._in_flight -= 1
            for c in batch:
                if c is not me:
                    c.wake.release()
            # The next sender wakes last and takes its batch when it runs: callers woken
            # just before it can rejoin the queue in time for it (measured ~4.4 -> ~5.0
            # commands per batch and ~15% more transfers/s with 8 threads).
            if nxt is not None:
                nxt.wake.release()

    def _timed_out(self, me: _Command) -> None:
        """``me`` waited longer than it can take to send two batches: give up unless it must
        send one."""
        with self._lock:
            if me.batch is not None:
                return  # promoted just now: send it (it holds a place on the wire)
            if me in self._queue:  # never sent: nothing happened
                self._queue.remove(me)
                raise Unavailable("timed out waiting to send a batched call")
        if me.wake.acquire(True, _HANDOFF_MARGIN):
            return
        raise Unavailable("timed out waiting for a batched call (its outcome is unknown)")


class NodeClient(StoreOps):
    """TabletStore and TimestampSource of one node, over ``Node.BatchStream`` (or ``Batch``).

    ``inner`` is the :class:`~bigtable_lite.RemoteStore` on the same channel that serves
    what is not batched (scans, tablets, ``sync`` writes, compaction: wrappers of a store
    expose what they wrap as ``inner``, as ``CoalescingStore`` does).

    ``target`` is "HOST:PORT" (the client owns the channel it opens) or a channel (left
    open on :meth:`close`).  ``timeout`` bounds every call: a batch fails (``Unavailable``)
    at most 1.5 timeouts after it was sent (a stream's deadline), so a caller waits at
    most about three (the batch ahead of its own, then its own).  ``limits`` should
    match the node's.  ``max_in_flight`` and ``max_commands`` bound the batches on the
    wire and the commands in one.
    """

    def __init__(self, target: str | grpc.Channel, *, timeout: float = 30.0,
                 limits: Limits = DEFAULT_LIMITS, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 max_commands: int = DEFAULT_MAX_COMMANDS) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if max_in_flight < 1 or max_commands < 1:
            raise ValueError("max_in_flight and max_commands must be at least 1")
        self._channel, self._owns_channel = open_channel(target, limits)
        self.limits = limits
        self.timeout = timeout
        # A command larger than this goes alone, so a full batch always fits a message.
        self._alone_bytes = limits.max_message_bytes // (2 * max_commands)
        self.inner = RemoteStore(self._channel, timeout=timeout, limits=limits)
        self._batch = self._channel.unary_unary(
            f"/{SERVICE_NAME}/Batch", request_serializer=_identity,
            response_deserializer=node_pb2.BatchResponse.FromString, _registered_method=True)
        self._batch_stream = self._channel.stream_stream(
            f"/{SERVICE_NAME}/BatchStream", request_serializer=_identity,
            response_deserializer=node_pb2.BatchResponse.FromString, _registered_method=True)
        # A batch waits for at most one batch ahead of it, each bounded by a stream's
        # deadline (life + timeout).
        self._batcher = _Batcher(self._call, max_in_flight=max_in_flight,
                                 max_commands=max_commands,
                                 wait=2 * (_STREAM_LIFE * timeout + timeout) + _HANDOFF_MARGIN)
        self._lock = threading.Lock()
        self._stream: _BatchStream | None = None
        self._streams_from = 0.0      # monotonic time before which no stream is opened
        self._streams_opened = 0
        self._closed = False
        self._served = 0        # timestamps returned to callers
        self._stamp_calls = 0   # batches that carried timestamp commands
        self._fallback: tuple[CoalescingStore, RemoteOracle] | None = None
        self._commits_offered = True  # False once the node turned out to predate commit commands
        self._fresh_offered = True    # ... and fresh reads

    # --- the batch ------------------------------------------------------------------------

    def _call(self, batch: list[_Command]) -> None:
        """Send one batch; settles every command of it (raises nothing but BaseException).

        Batches travel on a BatchStream (cheaper per batch than a Batch call), by Batch
        when the node refuses streams.
        """
        try:
            if self._closed:
                raise StoreClosed("NodeClient is closed")
            data = b"".join([c.data for c in batch])
            reply = self._over_stream(data)
            if reply is None:
                try:
                    reply = self._batch(data, timeout=self.timeout)
                except grpc.RpcError as exc:
                    if isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                        for c in batch:  # an older node: nothing happened; use the old path
                            c.error = _NotOffered()
                        return
                    raise error_from_rpc(exc) from exc
            results = reply.results
            if len(results) != len(batch):
                raise StorageError(f"protocol error: node answered {len(results)} results for"
                                   f" {len(batch)} commands")
        except StorageError as exc:
            if self._closed and isinstance(exc, Unavailable):  # the channel closed under it
                exc = StoreClosed(f"NodeClient is closed ({exc})")
            for c in batch:  # each caller raises its own exception object
                c.error = type(exc)(*exc.args)
                c.error.__cause__ = exc.__cause__
            return
        except ValueError as exc:  # grpc: "Cannot invoke RPC on closed channel!"
            error = StoreClosed if self._closed else StorageError
            for c in batch:
                c.error = error(f"batched call failed: {exc}")
            return
        stamps = False
        for c, result in zip(batch, results):
            c.result = result
            stamps = stamps or c.kind == _STAMPS or c.kind == _FRESH
        if stamps:
            with self._lock:
                self._stamp_calls += 1

    def _over_stream(self, data: bytes) -> node_pb2.BatchResponse | None:
        """The reply to a batch sent on the open stream (opening one if need be); None if
        no stream took it, which leaves it unsent: send it by Batch."""
        with self._lock:
            placed = self._put_on_stream(data)
        if placed is None:
            return None
        stream, ticket = placed
        try:
            return stream.reply(ticket)
        except BaseException as exc:  # a stream that failed once takes no more batches
            self._drop_stream(stream)
            if isinstance(exc, StreamEnded):
                raise Unavailable("the node ended the batch stream before this batch"
                                  " (stopping?); it was not executed") from None
            if isinstance(exc, grpc.RpcError):
                if _stream_refused(exc):  # nothing was read: send it by Batch; no streams a while
                    with self._lock:
                        self._streams_from = time.monotonic() + _STREAM_BACKOFF
                    return None
                raise error_from_rpc(exc) from exc
            raise

    def _put_on_stream(self, data: bytes) -> tuple[_BatchStream, int] | None:
        """Put a batch on the open stream, or on a new one (the client's lock is held)."""
        for _ in range(2):  # an expired stream is replaced once
            stream = self._stream
            if stream is None:
                if self._closed or time.monotonic() < self._streams_from:
                    return None
                stream = self._stream = RequestStream(
                    self._batch_stream, life=_STREAM_LIFE * self.timeout, timeout=self.timeout,
                    idle=_STREAM_IDLE)
                self._streams_opened += 1
            ticket = stream.put(data)
            if ticket is not None:
                return stream, ticket
            self._stream = None
        return None

    def _drop_stream(self, stream: _BatchStream) -> None:
        with self._lock:
            if self._stream is stream:
                self._stream = None
        stream.end()

    def _end_stream(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.end()

    def _submit(self, kind: int, tag: bytes, request: bytes) -> node_pb2.Result | None:
        """The command's result, or None if the node does not offer the Node service."""
        if self._fallback is not None:
            return None
        if self._closed:
            raise StoreClosed("NodeClient is closed")
        command = _Command(kind, frame(tag, request))
        self._batcher.run(command)
        if command.error is not None:
            if isinstance(command.error, _NotOffered):
                self._fall_back()
                return None
            raise command.error
        assert command.result is not None
        return command.result

    def _fall_back(self) -> None:
        with self._lock:
            if self._fallback is None:
                self._fallback = (CoalescingStore(self.inner),
                                  RemoteOracle(self._channel, timeout=self.timeout))

    # --- TabletStore ----------------------------------------------------------------------

    def read_rows(self, reads: Sequence[RowRead]) -> list[list[Cell]]:
        check_reads(reads, self.limits)
        request = wire.read_request_to_pb(reads).SerializeToString()
        if len(request) > self._alone_bytes:
            return self.inner.read_rows(reads)
        result = self._submit(_READ, READ_ROWS_TAG, request)
        if result is None:
            return self._fallback_store().read_rows(reads)
        if result.WhichOneof("kind") != "read_rows":
            if _reply_too_large(result):
                return self.inner.read_rows(reads)  # alone, streamed if need be
            raise _result_error(result)
        rows = wire.read_response_from_pb(result.read_rows)
        _check_count(len(reads), len(rows))
        return rows

    def mutate_rows(self, mutations: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        if sync:  # an fsync would hold up every command of a batch
            return self.inner.mutate_rows(mutations, sync=True)
        check_batch(mutations, self.limits)
        request = wire.mutate_request_to_pb(mutations, False).SerializeToString()
        if len(request) > self._alone_bytes:
            return self.inner.mutate_rows(mutations)
        result = self._submit(_MUTATE, MUTATE_ROWS_TAG, request)
        if result is None:
            return self._fallback_store().mutate_rows(mutations)
        if result.WhichOneof("kind") != "mutate_rows":
            raise _result_error(result)
        out = wire.mutate_response_from_pb(result.mutate_rows)
        _check_count(len(mutations), len(out))
        return out

    def scan(self, request: ScanRequest) -> Iterator[Row]:
        return self.inner.scan(request)

    def list_tablets(self, table: bytes | None = None) -> list[TabletInfo]:
        return self.inner.list_tablets(table)

    def split_tablet(self, table: bytes, row: bytes) -> list[TabletInfo]:
        return self.inner.split_tablet(table, row)

    # --- TimestampSource ------------------------------------------------------------------

    def get_timestamp(self) -> int:
        return self._take(1)

    def get_timestamps(self, count: int) -> int:
        return self._take(check_count(count))

    def _take(self, count: int) -> int:
        request = _ONE_TIMESTAMP if count == 1 else \
            oracle_pb2.GetTimestampsRequest(count=count).SerializeToString()
        result = self._submit(_STAMPS, GET_TIMESTAMPS_TAG, request)
        if result is None:
            return self._fallback_oracle().get_timestamps(count)
        if result.WhichOneof("kind") != "get_timestamps":
            raise _result_error(result, oracle=True)
        reply = result.get_timestamps
        first: int = reply.first
        if reply.count != count or first < 1 or first + count - 1 > MAX_TS:
            raise OracleError(f"oracle answered {reply.count} timestamps from {first} to a"
                              f" request for {count}")
        with self._lock:
            self._served += count
        return first

    # --- CommitService --------------------------------------------------------------------

    def commit(self, request: CommitRequest) -> CommitOutcome:
        """The commit step at the node, as one command (``percolator.commit``).

        Against a node without the command, or for a commit too large to share a batch,
        the step runs here, over this client's store and oracle.  Raises ``Unavailable``
        when the outcome is unknown.
        """
        check_commit_request(request, self.limits)
        data = commit_request_to_pb(request).SerializeToString()
        result = None
        if self._commits_offered and len(data) <= self._alone_bytes:
            result = self._submit(_COMMIT, COMMIT_TAG, data)
        if result is None:
            return LocalCommit(self, self, self.limits).commit(request)
        if result.WhichOneof("kind") != "commit":
            if result.error.message == UNKNOWN_COMMAND:  # a node older than the command
                self._commits_offered = False
                return LocalCommit(self, self, self.limits).commit(request)
            raise _result_error(result, oracle=True)
        # The client's view of the step's phases: both are done once the reply is here.
        failpoints.hit("commit.after_commit_primary")
        failpoints.hit("commit.after_commit_secondary")
        reply = result.commit
        return CommitOutcome(True, reply.commit_ts) if reply.committed else CommitOutcome(False)

    # --- FreshReads -------------------------------------------------------------------------

    def read_at_fresh_timestamp(self, reads: Sequence[RowRead]
                                ) -> tuple[int, list[list[Cell]]]:
        """A timestamp and the reads at it, as one command (``percolator.fresh_read``).

        Against a node without the command, or for reads too large to share a batch,
        two steps: a timestamp, then the reads.
        """
        check_reads(reads, self.limits)
        check_fresh_reads(reads)
        request = wire.read_request_to_pb(reads).SerializeToString()
        result = None
        if self._fresh_offered and len(request) <= self._alone_bytes:
            result = self._submit(_FRESH, FRESH_READ_TAG, field(FRESH_READ_FIELD, request))
        if result is None:
            return LocalFreshReads(self, self).read_at_fresh_timestamp(reads)
        if result.WhichOneof("kind") != "fresh_read":
            if result.error.message == UNKNOWN_COMMAND:  # a node older than the command
                self._fresh_offered = False
                return LocalFreshReads(self, self).read_at_fresh_timestamp(reads)
            if _reply_too_large(result):  # read alone, streamed if need be
                return LocalFreshReads(self, self).read_at_fresh_timestamp(reads)
            raise _result_error(result, oracle=True)
        reply = result.fresh_read
        rows = wire.read_response_from_pb(reply.read)
        _check_count(len(reads), len(rows))
        ts: int = reply.ts
        if not 0 < ts <= MAX_TS:
            raise OracleError(f"node answered a fresh read at timestamp {ts}")
        with self._lock:
            self._served += 1
        return ts, rows

    def stats(self) -> OracleStats:
        """Client-side figures: timestamps returned to callers, batches that carried them."""
        with self._lock:
            served, calls = self._served, self._stamp_calls
        if self._fallback is not None:
            legacy = self._fallback[1].stats()
            served += legacy.timestamps_served
            calls += legacy.requests
        return OracleStats(served, calls)

    def batch_stats(self) -> dict[str, float]:
        """Batches sent, commands per batch, streams opened for back-to-back batches."""
        b = self._batcher
        return {"batches": b.calls, "batch_mean_commands": b.commands / b.calls if b.calls
                else 0.0, "streams_opened": self._streams_opened}

    @property
    def queued(self) -> int:
        """Commands waiting for a batch to be sent (not yet on the wire)."""
        return self._batcher.queued

    @property
    def batching(self) -> bool:
        """False once the node turned out not to offer the Node service: then every call
        takes the per-service path."""
        return self._fallback is None

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new calls; close the channel if this client opened it.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._end_stream()
        if self._fallback is not None:
            self._fallback[1].close()
        self.inner.close()
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


_ONE_TIMESTAMP: bytes = oracle_pb2.GetTimestampsRequest(count=1).SerializeToString()


def _identity(data: bytes) -> bytes:
    return data


def _result_error(result: node_pb2.Result, *, oracle: bool = False) -> Exception:
    kind = result.WhichOneof("kind")
    if kind != "error":
        return StorageError(f"protocol error: node answered a {kind} result to another command")
    err = result.error
    return command_error(err.code, err.message, err.error, oracle=oracle)


def _stream_refused(exc: grpc.RpcError) -> bool:
    """The node refused a BatchStream before reading anything (too many open, stopping),
    or does not offer it."""
    if not isinstance(exc, grpc.Call):
        return False
    if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
        return True
    return exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and any(
        key == STREAM_KEY and value == STREAM_REFUSED for key, value in
        exc.trailing_metadata() or ())


def _reply_too_large(result: node_pb2.Result) -> bool:
    return bool(result.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])


def _check_count(sent: int, got: int) -> None:
    if sent != got:
        raise StorageError(f"protocol error: node answered {got} results for {sent} requests")

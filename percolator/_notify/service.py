"""The node's ``percolator.v1.Notifications`` service: the verbs of its LocalBackend.

Each call is decoded and checked (``wire``) and run by the node's
:class:`~percolator._notify.local.Notifications`; a failure becomes a status by the
transaction layer's tables (``percolator._status``).  A Pull may wait (a long poll) and
so hold a server thread: at most ``max_polls`` wait at once, further pulls are answered
at once (their workers back off), so calls always find a thread.

Behind the node's guard (``bigtable_lite.guard``; docs/security.md) with :data:`ROLES`:
the workers' verbs need ``write``, what ``percolator status`` reads needs ``read``, and
what changes the cluster for everyone (unregistering a column, compacting the log) is
the ``admin``'s.  The service has no streams; its long polls are bounded by
``max_polls`` (the node's share, ``percolator.node.stream_shares``), and a reply is
bounded in bytes: a Pull by the feed, a Parked listing here (:data:`MAX_REPLY_BYTES`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NoReturn

import grpc
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError, Message

from bigtable_lite import InvalidArgument, Limits, ReplyTooLarge
from bigtable_lite import status as store_status
from bigtable_lite.auth import Role
from bigtable_lite.reflection import source_descriptors
from bigtable_lite.server import ServiceRegistration

from .._status import status_for
from ..v1 import notifications_pb2 as pb
from . import wire
from .assignment import FIRST_MOST, FIRST_QUIET
from .local import Notifications

__all__ = ["MAX_REPLY_BYTES", "NotificationsService", "ROLES", "SERVICE_NAME"]

SERVICE_NAME = "percolator.v1.Notifications"

ROLES: dict[str, Role | None] = {
    # An observer worker's verbs (and a loader's registration of the columns it writes):
    # registering is idempotent and only adds notifications.
    "Register": Role.WRITE, "Pull": Role.WRITE, "Leave": Role.WRITE, "Done": Role.WRITE,
    "Park": Role.WRITE, "Replay": Role.WRITE,
    # What `percolator status` and `notifications list` read.
    "Columns": Role.READ, "Pending": Role.READ, "Members": Role.READ, "Parked": Role.READ,
    # Unregistering stops notifications for every worker of the column; compacting
    # rewrites the whole log (the node compacts by itself): operators' acts.
    "Unregister": Role.ADMIN, "Compact": Role.ADMIN,
}
"""The least role of each method (docs/security.md says why)."""

MAX_REPLY_BYTES = 8 << 20
"""The most bytes of parked notifications one Parked reply carries (ask with a limit)."""

log = logging.getLogger(__name__)

class NotificationsService:
    """Thread-safe."""

    def __init__(self, notifications: Notifications, limits: Limits, *, max_polls: int = 8,
                 first_assignment: tuple[float, float] = (FIRST_QUIET, FIRST_MOST)) -> None:
        self._n = notifications
        # Served workers are processes started together that join over a second or so:
        # each column's first assignment waits for them (``assignment``).
        notifications.hold_first_assignments(*first_assignment)
        self._limits = limits
        self._polls = threading.BoundedSemaphore(max(1, max_polls))
        self._methods: dict[str, tuple[type[Message], Callable[[Any], Message]]] = {
            "Register": (pb.RegisterRequest, self._register),
            "Unregister": (pb.UnregisterRequest, self._unregister),
            "Columns": (pb.ColumnsRequest, self._columns),
            "Pull": (pb.PullRequest, self._pull),
            "Leave": (pb.LeaveRequest, self._leave),
            "Done": (pb.DoneRequest, self._done),
            "Pending": (pb.PendingRequest, self._pending),
            "Park": (pb.ParkRequest, self._park),
            "Parked": (pb.ParkedRequest, self._parked),
            "Replay": (pb.ReplayRequest, self._replay),
            "Members": (pb.MembersRequest, self._members),
            "Compact": (pb.CompactRequest, self._compact),
        }
        assert set(self._methods) == {m.name for m in pb.DESCRIPTOR.services_by_name[
            "Notifications"].methods}

    def _handler(self, name: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        cls, fn = self._methods[name]

        def handle(raw: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                try:
                    request = cls.FromString(raw)
                except DecodeError as exc:
                    raise InvalidArgument(f"undecodable {cls.DESCRIPTOR.full_name}: {exc}"
                                          ) from None
                if len(unknown_fields.UnknownFieldSet(request)):
                    raise InvalidArgument(
                        f"request has fields unknown to {cls.DESCRIPTOR.full_name}")
                reply: bytes = fn(request).SerializeToString()
                return reply
            except Exception as exc:  # noqa: BLE001 -- the call's failure becomes a status
                _abort(context, exc)
        return handle

    def _table(self, table: bytes) -> bytes:
        return wire.check_table(table, self._limits)

    def _register(self, request: pb.RegisterRequest) -> pb.RegisterResponse:
        done = self._n.register(self._table(request.table), request.column,
                                request.partition_prefix, request.backfill)
        return pb.RegisterResponse(registered_at=done.at, new=done.new)

    def _unregister(self, request: pb.UnregisterRequest) -> pb.UnregisterResponse:
        at, pending = self._n.unregister(self._table(request.table), request.column)
        return pb.UnregisterResponse(at=at, pending=pending)

    def _columns(self, request: pb.ColumnsRequest) -> pb.ColumnsResponse:
        return pb.ColumnsResponse(columns=[
            wire.column_info_to_pb(c) for c in self._n.columns(self._table(request.table))])

    def _pull(self, request: pb.PullRequest) -> pb.PullResponse:
        table, pull = wire.parse_pull(request, self._limits)
        waiting = pull.wait_ms > 0 and self._polls.acquire(blocking=False)
        try:
            if pull.wait_ms and not waiting:  # every polling thread is taken
                pull = replace(pull, wait_ms=0)
            return wire.pull_reply_to_pb(self._n.pull(table, pull))
        finally:
            if waiting:
                self._polls.release()

    def _leave(self, request: pb.LeaveRequest) -> pb.LeaveResponse:
        self._n.leave(self._table(request.table), wire.check_worker(request.worker),
                      wire.parse_done(request.done, self._limits), request.stats)
        return pb.LeaveResponse()

    def _done(self, request: pb.DoneRequest) -> pb.DoneResponse:
        self._n.done(self._table(request.table), wire.parse_done(request.done, self._limits))
        return pb.DoneResponse()

    def _pending(self, request: pb.PendingRequest) -> pb.PendingResponse:
        columns = [wire.check_column(c) for c in request.columns]
        return pb.PendingResponse(pending=self._n.pending(
            self._table(request.table), columns, max(1, min(request.cap, 10_000_000))))

    def _park(self, request: pb.ParkRequest) -> pb.ParkResponse:
        moved = self._n.park(self._table(request.table), wire.check_worker(request.worker),
                             wire.parse_done(request.entries, self._limits), request.note)
        return pb.ParkResponse(moved=moved)

    def _parked(self, request: pb.ParkedRequest) -> pb.ParkedResponse:
        reply = pb.ParkedResponse()
        size = 0
        for cell in self._n.parked(self._table(request.table), request.limit):
            item = wire.parked_to_pb(cell)
            size += item.ByteSize()
            if size > MAX_REPLY_BYTES:
                raise ReplyTooLarge(f"parked notifications beyond the {MAX_REPLY_BYTES} bytes"
                                    " a reply may carry: list fewer (a limit) at once")
            reply.cells.append(item)
        return reply

    def _replay(self, request: pb.ReplayRequest) -> pb.ReplayResponse:
        cells = None if request.all else [(c.row, c.column) for c in request.cells]
        return pb.ReplayResponse(moved=self._n.replay(self._table(request.table), cells))

    def _members(self, request: pb.MembersRequest) -> pb.MembersResponse:
        return pb.MembersResponse(members=[
            wire.member_to_pb(m) for m in self._n.members(self._table(request.table))])

    def _compact(self, request: pb.CompactRequest) -> pb.CompactResponse:
        self._n.compact(self._table(request.table))
        return pb.CompactResponse()

    def add_to_server(self, server: grpc.Server) -> None:
        handlers = {name: grpc.unary_unary_rpc_method_handler(self._handler(name))
                    for name in self._methods}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)

    def registration(self) -> ServiceRegistration:
        """This service, for ``bigtable_lite.server.build_server(..., extra=[...])``."""
        add: Callable[[grpc.Server], None] = self.add_to_server
        assert set(ROLES) == set(self._methods)
        # Requests: the server's message limit (a Done or Pull hands back many handled
        # keys at once; wire bounds their count and each key's size).
        return ServiceRegistration(SERVICE_NAME, add, ROLES,
                                   sources=source_descriptors("percolator.v1"))


def _abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    code, message = status_for(exc)
    store_status.log_failure(log, SERVICE_NAME, code, message, exc)
    name = store_status.error_name(exc)
    if name:
        context.set_trailing_metadata(((store_status.ERROR_KEY, name),))
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover

"""RemoteNotifications: the notification verbs of a node, over its gRPC channel.

A :class:`~percolator._notify.api.NotificationsBackend` for ``Client.connect``: each verb
is one call of ``percolator.v1.Notifications`` on the channel the node client already
has.  A failed call raises what the node raised (``percolator._status``); ``Unavailable``
when the node cannot be reached (the caller retries: workers and loaders ride through a
node restart so).  A pull's deadline is its long poll plus ``timeout``.

:meth:`RemoteNotifications.wait_ready` watches the channel's connectivity until it is
READY.  A gRPC channel that nobody watches, whose calls fail fast while its node is
away, was measured reconnecting 8-10 s after the node was killed, however short its
reconnect back-off (0.1-0.5 s here) and however soon the node was back: watched, it
connects within one back-off of the node taking connections (issue 16).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from .._status import error_from_rpc
from ..v1 import notifications_pb2 as pb
from . import wire
from .api import (
    ColumnInfo,
    DoneRef,
    MemberInfo,
    ParkedCell,
    PullReply,
    PullRequest,
    Registered,
)

__all__ = ["RemoteNotifications"]


class RemoteNotifications:
    """Thread-safe; the channel stays its owner's."""

    def __init__(self, channel: grpc.Channel, *, timeout: float = 30.0) -> None:
        self._channel = channel
        self._stub = _Stub(channel)
        self.timeout = timeout

    def wait_ready(self, timeout: float) -> bool:
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=max(timeout, 0.0))
            return True
        except grpc.FutureTimeoutError:
            return False
        finally:
            ready.cancel()  # stops watching the channel (nothing once it is done)

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def register(self, table: bytes, column: bytes, partition_prefix: bytes = b"",
                 backfill: bool = True) -> Registered:
        reply = self._call(self._stub.Register, pb.RegisterRequest(
            table=table, column=column, partition_prefix=partition_prefix, backfill=backfill))
        return Registered(reply.registered_at, reply.new)

    def unregister(self, table: bytes, column: bytes) -> tuple[int, int]:
        reply = self._call(self._stub.Unregister,
                           pb.UnregisterRequest(table=table, column=column))
        return reply.at, reply.pending

    def columns(self, table: bytes) -> list[ColumnInfo]:
        reply = self._call(self._stub.Columns, pb.ColumnsRequest(table=table))
        return [wire.column_info_from_pb(c) for c in reply.columns]

    def pull(self, table: bytes, request: PullRequest) -> PullReply:
        reply = self._call(self._stub.Pull, wire.pull_request_to_pb(table, request),
                           request.wait_ms / 1000.0 + self.timeout)
        return wire.pull_reply_from_pb(reply)

    def leave(self, table: bytes, worker: str, done: Sequence[DoneRef], stats: bytes) -> None:
        self._call(self._stub.Leave, pb.LeaveRequest(
            table=table, worker=worker, done=wire.done_to_pb(done), stats=stats))

    def done(self, table: bytes, refs: Sequence[DoneRef]) -> None:
        self._call(self._stub.Done, pb.DoneRequest(table=table, done=wire.done_to_pb(refs)))

    def pending(self, table: bytes, columns: Sequence[bytes], cap: int = 1) -> int:
        reply = self._call(self._stub.Pending,
                           pb.PendingRequest(table=table, columns=columns, cap=cap))
        return int(reply.pending)

    def park(self, table: bytes, worker: str, refs: Sequence[DoneRef], note: bytes) -> int:
        reply = self._call(self._stub.Park, pb.ParkRequest(
            table=table, worker=worker, entries=wire.done_to_pb(refs), note=note))
        return int(reply.moved)

    def parked(self, table: bytes, limit: int = 0) -> list[ParkedCell]:
        reply = self._call(self._stub.Parked, pb.ParkedRequest(table=table, limit=limit))
        return [wire.parked_from_pb(c) for c in reply.cells]

    def replay(self, table: bytes, cells: Sequence[tuple[bytes, bytes]] | None = None) -> int:
        request = pb.ReplayRequest(table=table, all=cells is None, cells=[
            pb.CellRef(row=r, column=c) for r, c in cells or ()])
        return int(self._call(self._stub.Replay, request).moved)

    def members(self, table: bytes) -> list[MemberInfo]:
        reply = self._call(self._stub.Members, pb.MembersRequest(table=table))
        return [wire.member_from_pb(m) for m in reply.members]

    def compact(self, table: bytes) -> None:
        self._call(self._stub.Compact, pb.CompactRequest(table=table), 600.0)


class _Stub:
    """One callable per method of the service."""

    def __init__(self, channel: grpc.Channel) -> None:
        def method(name: str, reply: Any) -> Any:
            return channel.unary_unary(
                f"/percolator.v1.Notifications/{name}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=reply.FromString, _registered_method=True)

        self.Register = method("Register", pb.RegisterResponse)
        self.Unregister = method("Unregister", pb.UnregisterResponse)
        self.Columns = method("Columns", pb.ColumnsResponse)
        self.Pull = method("Pull", pb.PullResponse)
        self.Leave = method("Leave", pb.LeaveResponse)
        self.Done = method("Done", pb.DoneResponse)
        self.Pending = method("Pending", pb.PendingResponse)
        self.Park = method("Park", pb.ParkResponse)
        self.Parked = method("Parked", pb.ParkedResponse)
        self.Replay = method("Replay", pb.ReplayResponse)
        self.Members = method("Members", pb.MembersResponse)
        self.Compact = method("Compact", pb.CompactResponse)

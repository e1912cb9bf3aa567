"""Server assembly: a grpc.Server with TabletService, health checking and reflection.

Every method of every service it hosts sits behind one guard (``bigtable_lite.guard``):
tokens and roles, request budgets, undecodable requests, stream pools and idle streams;
a :class:`ServerPolicy` says which, and whether the port speaks TLS
(``bigtable_lite.credentials``).  Services declare what each method needs on their
:class:`ServiceRegistration`.

Why a thread-pool (sync) server and not grpc.aio: on the reference machine (2 cores,
grpcio 1.75.1) an echo call cost ~440 us on the sync server vs ~500 us on aio with one
client thread, and the sync server was further ahead with 4 client threads (see
bench/bench_store.py --compare-servers).  It also lets concurrent ``sync=True``
writes wait on fsync in parallel, so LevelDB's writer queue can group them.

Shutdown: call :func:`set_not_serving` first (health flips every service to
NOT_SERVING, so load balancers and ``grpc_health_probe`` stop sending traffic), then
``server.stop(grace)``, then close the store.  :func:`stop_server` does the first two.
"""

from __future__ import annotations

import errno
import os
import socket
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from ._local import LocalStore
from ._model import Limits
from ._service import DEFAULT_MAX_REPLY_BYTES, ROLES, SERVICE_NAME, TabletService
from .auth import Role, TokenTable
from .credentials import ServerTLS, is_loopback, split_host
from .guard import Gate, Guard, IdleWatch, StreamPool
from .reflection import SourcePool, source_descriptors

__all__ = ["DEFAULT_STREAM_IDLE", "HEALTH_STREAMS", "REFLECTION_STREAMS", "InsecureListen",
           "ServerPolicy", "ServiceRegistration", "build_server", "check_exposure",
           "server_options", "set_not_serving", "stop_server"]

DEFAULT_STREAM_IDLE = 30.0
"""Seconds a stream's client may leave a sent message unread before the stream is cancelled."""
SMALL_REQUEST_BYTES = 16 << 10
"""Request budget of health and reflection (their requests name a service or a symbol)."""
HEALTH_STREAMS = 1
"""Health Watch calls open at once (probes use Check, which is unary)."""
REFLECTION_STREAMS = 2
"""Reflection streams open at once (a tool holds one per query, briefly)."""


@dataclass(frozen=True)
class ServiceRegistration:
    """A further service to host beside TabletService.

    ``roles`` maps each method name to the least role that may call it (None: any caller,
    even without a token); a method missing from it is admin-only.  ``max_request_bytes``
    bounds one request message (None: the server's message limit).  ``streams``: the most
    streaming calls of the service open at once, refused beyond (None: the service admits
    its streams itself, and says how many in its own documentation).
    """

    name: str  # full service name, e.g. "percolator.v1.TimestampOracle"
    add: Callable[[grpc.Server], None]      # adds the servicer to the server
    roles: Mapping[str, Role | None] = field(default_factory=dict)
    max_request_bytes: int | None = None
    streams: int | None = None
    # Its contract's descriptors with comments, for reflection (serialized
    # FileDescriptorSets: ``reflection.source_descriptors(package)``).
    sources: Sequence[bytes] = ()


@dataclass(frozen=True)
class ServerPolicy:
    """Who may call a server, over what, and how much of it one call may take.

    ``tokens`` None: no authentication (every caller is admin).  ``tls`` None: plain
    HTTP/2.  Beyond a loopback address both are required unless ``insecure``.
    ``tablet_streams``: Scan and ReadRowsStream calls open at once (default a quarter
    of the worker threads).
    """

    tokens: TokenTable | None = None
    tls: ServerTLS | None = None
    insecure: bool = False
    stream_idle_timeout: float = DEFAULT_STREAM_IDLE
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    tablet_streams: int | None = None


class InsecureListen(ValueError):
    """Refused: serving beyond this host without TLS and tokens (protected mode)."""


# Health servicer of each server we built, so set_not_serving needs only the server.
_HEALTH: weakref.WeakKeyDictionary[grpc.Server, health.HealthServicer] = \
    weakref.WeakKeyDictionary()


def server_options(limits: Limits) -> list[tuple[str, int]]:
    """Channel arguments of the server.

    ``so_reuseport`` is off so a second server on a busy port fails to bind instead of
    silently sharing it (Linux grpc enables SO_REUSEPORT by default).  Options said to
    lower per-call cost (``grpc.optimization_target``, BDP probing off, retries off, poll
    strategy) measured within noise of the defaults here, so none is set.
    """
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
    ]


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen address must be HOST:PORT (port 0 = pick one), not {listen!r}")
    return host, int(port)


def check_exposure(listen: str, policy: ServerPolicy) -> None:
    """InsecureListen for a non-loopback address without TLS and tokens, unless insecure."""
    if policy.insecure or is_loopback(split_host(listen)):
        return
    missing = [what for what, absent in (("TLS", policy.tls is None),
                                         ("tokens", policy.tokens is None)) if absent]
    if missing:
        raise InsecureListen(
            f"refusing to serve {listen} without {' and '.join(missing)}: it is not a loopback"
            " address, and anyone who can reach it could read and rewrite every value")


class _Collector:
    """Stands in for the grpc.Server while a service adds its handlers, so they can be
    wrapped before the real server sees them."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        self.generic = 0

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.generic += len(handlers)  # the same handlers come again, by method name, below

    def add_registered_method_handlers(self, service: str,
                                       handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self.services[service] = dict(handlers)


def _collect(name: str, add: Callable[[grpc.Server], None]
             ) -> dict[str, grpc.RpcMethodHandler]:
    collector = _Collector()
    add(cast(grpc.Server, collector))
    if set(collector.services) != {name}:
        raise ValueError(f"service {name} must add exactly its own handlers with"
                         f" add_registered_method_handlers (added {sorted(collector.services)})")
    return collector.services[name]


def _serve(server: grpc.Server, guard: Guard, registration: ServiceRegistration,
           default_request_bytes: int) -> None:
    """Add a registration's handlers to the server, each behind the guard."""
    name = registration.name
    budget = registration.max_request_bytes or default_request_bytes
    pool = None if registration.streams is None else StreamPool(registration.streams, name)
    wrapped = {
        method: guard.wrap(handler, Gate(f"/{name}/{method}",
                                         registration.roles.get(method, Role.ADMIN),
                                         budget, pool))
        for method, handler in _collect(name, registration.add).items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, wrapped),))
    server.add_registered_method_handlers(name, wrapped)


def build_server(store: LocalStore, listen: str, *, extra: Sequence[ServiceRegistration] = (),
                 max_workers: int = 32, policy: ServerPolicy = ServerPolicy(),
                 interceptors: Sequence[grpc.ServerInterceptor] = ()
                 ) -> tuple[grpc.Server, int]:
    """grpc.Server with TabletService for store, the extra services, gRPC health checking
    (all services SERVING) and server reflection (with the contracts' comments), every
    method behind the guard of ``policy`` (``bigtable_lite.guard``); bound to listen
    ("HOST:PORT", port 0 = pick), with TLS if the policy has it; returns (server,
    bound_port); not yet started.  ``interceptors`` see every call of every service
    before its guard (e.g. the node's RPC metrics: refused calls count too).

    Health needs no token; reflection needs ``read`` (it lists the services, which is
    little, but its streams hold threads, so strangers get none).

    Raises ValueError for a malformed address, InsecureListen for an exposed one
    (:func:`check_exposure`), OSError if the port cannot be bound or a TLS file read.
    """
    _split_listen(listen)
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    check_exposure(listen, policy)
    credentials = policy.tls.credentials() if policy.tls is not None else None
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                    thread_name_prefix="tablet-rpc"),
                         options=server_options(store.limits), interceptors=list(interceptors))
    log_sync = store.engine.log_sync
    guard = Guard(policy.tokens, IdleWatch(policy.stream_idle_timeout),
                  settle=None if log_sync is None else log_sync.settle)
    limit = store.limits.max_message_bytes
    tablet = TabletService(store, max_reply_bytes=policy.max_reply_bytes)
    streams = policy.tablet_streams or max(1, max_workers // 4)
    _serve(server, guard, ServiceRegistration(SERVICE_NAME, tablet.add_to_server, ROLES,
                                              streams=streams), limit)
    for registration in extra:
        _serve(server, guard, registration, limit)

    names = [SERVICE_NAME, *(r.name for r in extra)]
    # Blocking Watch: each open one holds a thread, bounded by its pool like any stream.
    health_servicer = health.HealthServicer(experimental_non_blocking=False)
    _serve(server, guard, ServiceRegistration(
        health.SERVICE_NAME,
        lambda s: health_pb2_grpc.add_HealthServicer_to_server(health_servicer, s),
        {"Check": None, "Watch": None}, SMALL_REQUEST_BYTES, HEALTH_STREAMS), limit)
    for name in ["", *names]:  # "" is the whole server, by the health protocol
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    _HEALTH[server] = health_servicer
    sources = [*source_descriptors("bigtable_lite.v1"),
               *(data for r in extra for data in r.sources)]
    reflection_servicer = reflection.ReflectionServicer(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], pool=SourcePool(sources))
    _serve(server, guard, ServiceRegistration(
        reflection.SERVICE_NAME,
        lambda s: reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection_servicer, s),
        {"ServerReflectionInfo": Role.READ}, SMALL_REQUEST_BYTES, REFLECTION_STREAMS), limit)

    try:
        port = (server.add_insecure_port(listen) if credentials is None
                else server.add_secure_port(listen, credentials))
    except RuntimeError as exc:  # grpc >= 1.5x raises; older versions returned 0
        server.stop(None)
        raise OSError(f"cannot listen on {listen}: {why_not_bound(listen)}") from exc
    if port == 0:
        server.stop(None)
        raise OSError(f"cannot listen on {listen}: {why_not_bound(listen)}")
    return server, port


_HINTS = {errno.EADDRINUSE: " (another process listens there)",
          errno.EADDRNOTAVAIL: " (not an address of this machine)",
          errno.EACCES: " (ports below 1024 need privileges)"}


def why_not_bound(listen: str) -> str:
    """Why gRPC could not bind ``listen``, found out again with plain sockets.

    gRPC says only that binding failed (its C core's reason goes to its own log, off by
    default in the `percolator` script), so resolve the host and bind each address it
    has: the first error says what is wrong (no such host, address in use, not an
    address of this machine, ...).
    """
    host, port = _split_listen(listen)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r} ({exc.strerror})"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind(address)
            except OSError as exc:
                reason = exc.strerror or os.strerror(exc.errno or errno.EIO)
                return f"{reason}{_HINTS.get(exc.errno or 0, '')}"
    return "the address is in use or not available"


def set_not_serving(server: grpc.Server) -> None:
    """Flip every service of a server from build_server to NOT_SERVING, for good.

    Call it at the start of a graceful shutdown; later ``set`` calls are ignored.
    """
    health_servicer = _HEALTH.get(server)
    if health_servicer is None:
        raise ValueError("server was not built by bigtable_lite.server.build_server")
    health_servicer.enter_graceful_shutdown()


def stop_server(server: grpc.Server, grace: float | None = 5.0) -> None:
    """set_not_serving, then stop accepting calls and wait (bounded) for running ones."""
    set_not_serving(server)
    server.stop(grace).wait(timeout=None if grace is None else grace + 5.0)

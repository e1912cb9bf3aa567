"""Server assembly: a grpc.Server with TabletService, health checking and reflection.

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
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .local import LocalStore
from .model import Limits
from .reflection import SourcePool, source_descriptors
from .service import SERVICE_NAME, TabletService

__all__ = ["ServiceRegistration", "build_server", "server_options", "set_not_serving",
           "stop_server"]


@dataclass(frozen=True)
class ServiceRegistration:
    """A further service to host beside TabletService."""

    name: str  # full service name, e.g. "percolator.v1.TimestampOracle"
    add: Callable[[grpc.Server], None]      # adds the servicer to the server
    # Its contract's descriptors with comments, for reflection (serialized
    # FileDescriptorSets: ``reflection.source_descriptors(package)``).
    sources: Sequence[bytes] = ()


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


def build_server(store: LocalStore, listen: str, *, extra: Sequence[ServiceRegistration] = (),
                 max_workers: int = 32) -> tuple[grpc.Server, int]:
    """grpc.Server with TabletService for store, the extra services, gRPC health checking
    (all services SERVING) and server reflection (with the contracts' comments); bound to
    listen ("HOST:PORT", port 0 = pick); returns (server, bound_port); not yet started.

    Raises ValueError for a malformed address and OSError if the port cannot be bound.
    """
    _split_listen(listen)
    if max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                    thread_name_prefix="tablet-rpc"),
                         options=server_options(store.limits))
    TabletService(store).add_to_server(server)
    for registration in extra:
        registration.add(server)

    names = [SERVICE_NAME, *(r.name for r in extra)]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *names]:  # "" is the whole server, by the health protocol
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    _HEALTH[server] = health_servicer
    sources = [*source_descriptors("bigtable_lite.v1"),
               *(data for r in extra for data in r.sources)]
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server,
        pool=SourcePool(sources))

    try:
        port = server.add_insecure_port(listen)
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

"""Metrics endpoint: ``/metrics`` over HTTP for Prometheus, on a node or a worker.

Off unless asked for (``--metrics-listen HOST:PORT``).  It serves the process's default
registry (every metric counted where it happens, ``percolator.metrics``, and
``prometheus_client``'s process and Python collectors) together with the families its
owner provides when scraped (a node's oracle and disk size, a worker's pending
notifications), each endpoint its own: two nodes in one process (tests) never
register one name twice.  An HTTP server (``prometheus_client.make_wsgi_app`` under
wsgiref) on its own daemon thread, a thread per connection; scrapes never touch the
gRPC threads.  Its TLS handshakes run in each connection's thread:
``prometheus_client.start_http_server`` wraps the listening socket instead, so the
handshake runs in accept, and one client that connected and sent nothing held up every
scrape (measured: all of them timed out).

At most :data:`MAX_CONNECTIONS` connections are served at once, at most
:data:`MAX_PER_PEER` of them from one address, and each has
:data:`DEADLINE` seconds from its accept for everything -- TLS handshake, request,
response -- after which its socket is shut down (:class:`_Deadlines`, one thread per
endpoint).  A timeout per read is not enough: a scraper that dripped its request a
byte at a time never waited long for any one read, so eight of them held every slot
for as long as they liked and real scrapes were refused.  Deadlines alone still let one
host that reconnected as fast as it was cut hold every slot; by address, it holds two.

Protected mode, as for a node's port (``bigtable_lite.server.check_exposure``): beyond a
loopback address the endpoint is served only over TLS (``tls``: HTTPS with that
certificate; with its ``client_ca``, only to scrapers with a client certificate it
signed), or when ``insecure`` says the network is trusted.  Metrics name tables and
workers and show what a cluster does and how much; and a scraper cannot tell a plain
HTTP endpoint from an impostor.  The certificate is loaded when the endpoint starts (a
rotated one is served after a restart; the node's gRPC port reloads its own).
"""

from __future__ import annotations

import heapq
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.metrics_core import Metric

from bigtable_lite.credentials import ServerTLS, is_loopback, split_host
from bigtable_lite.server import InsecureListen

from .metrics import Provider

__all__ = ["InsecureMetrics", "MetricsEndpoint", "check_exposure"]


class InsecureMetrics(InsecureListen):
    """Refused: serving metrics beyond this host over plain HTTP (protected mode)."""


log = logging.getLogger(__name__)

DEADLINE = 10.0
"""Seconds a connection may last from its accept: TLS handshake, request and response
(Prometheus' own scrape timeout is 10 s by default).  Then its socket is shut down."""
MAX_CONNECTIONS = 8
"""Connections served at once; more are closed at once.  Each holds a thread and a file
descriptor: unbounded, idle connections (no credential needed) took every descriptor of
the process, and the node's gRPC port stopped answering."""
MAX_PER_PEER = 2
"""Connections served at once from one peer address (of :data:`MAX_CONNECTIONS`): one
host cannot take every slot, however fast it reconnects.  A scraper needs one at a
time."""


class _Deadlines:
    """Shuts down each watched connection's socket once its deadline has passed.

    By file descriptor: a TLS connection's socket object is detached when it is wrapped.
    A connection is forgotten (under the lock the shutdown takes) before its descriptor
    is closed, so a descriptor reused by a later connection is never shut down."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[int, float] = {}  # descriptor -> monotonic deadline
        self._heap: list[tuple[float, int]] = []
        self._stopped = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, fd: int, seconds: float) -> Iterator[None]:
        """Shut ``fd`` down ``seconds`` from now unless the block has ended by then."""
        due = time.monotonic() + seconds
        with self._cond:
            self._due[fd] = due
            heapq.heappush(self._heap, (due, fd))
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="percolator-metrics-deadlines")
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._due.pop(fd, None)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now
                                      or self._due.get(self._heap[0][1]) != self._heap[0][0]):
                    due, fd = heapq.heappop(self._heap)
                    if self._due.get(fd) == due:  # still watched: past its deadline
                        del self._due[fd]
                        _shut_down(fd)
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


def _shut_down(fd: int) -> None:
    """Shut the socket of descriptor ``fd`` down (its reader sees the end; its owner
    closes it)."""
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # the peer already went: nothing to cut
        pass
    finally:
        sock.detach()


class _Quiet(WSGIRequestHandler):
    timeout = DEADLINE

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base's name
        """A line per scrape on stderr is noise."""


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per connection; with ``context`` (a ``ServerTLS.contexts()``: certificate
    files reloaded when they change), its TLS handshake in that thread."""

    daemon_threads = True
    context: Callable[[], ssl.SSLContext] | None = None
    deadline = DEADLINE
    deadlines: _Deadlines

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._served: dict[str, int] = {}  # connections served, per peer address
        self._served_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own, if a slot is free (of all, and of
        its peer's); else close it."""
        peer = _peer(client_address)
        with self._served_lock:
            total, mine = sum(self._served.values()), self._served.get(peer, 0)
            full = total >= MAX_CONNECTIONS or mine >= MAX_PER_PEER
            if not full:
                self._served[peer] = mine + 1
        if full:
            log.debug("metrics connection from %s refused: %d served, %d of them from"
                      " there", client_address, total, mine)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(peer)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(_peer(client_address))

    def _release(self, peer: str) -> None:
        with self._served_lock:
            left = self._served[peer] - 1
            if left:
                self._served[peer] = left
            else:
                del self._served[peer]

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection within the deadline (see the module docstring)."""
        tls: ssl.SSLSocket | None = None
        try:
            with self.deadlines.watch(request.fileno(), self.deadline):
                if self.context is None:
                    super().finish_request(request, client_address)
                    return
                request.settimeout(self.deadline)
                try:
                    tls = self.context().wrap_socket(request, server_side=True)
                except OSError:  # ssl.SSLError too: that scraper's failure alone
                    return
                super().finish_request(tls, client_address)
        finally:
            if tls is not None:  # after the watch ended: see _Deadlines
                tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper that went away or idled out is its own affair: one debug line, not
        socketserver's traceback on stderr."""
        log.debug("metrics connection from %s ended: %s", client_address, sys.exc_info()[1])


def _peer(client_address: Any) -> str:
    """The peer's address, without its port."""
    return str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)


def check_exposure(listen: str, tls: ServerTLS | None, *, insecure: bool = False) -> None:
    """InsecureMetrics for metrics beyond loopback without TLS, unless ``insecure``."""
    if tls is None and not insecure and not is_loopback(split_host(listen)):
        raise InsecureMetrics(
            f"refusing to serve metrics on {listen} over plain HTTP: it is not a loopback"
            " address, and anyone who can reach it could read what the cluster holds and"
            " does (tables, workers, rates), from an endpoint a scraper cannot authenticate")


class _Provided:
    """The families of an endpoint's providers, computed at each scrape."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        self._providers = providers

    def collect(self) -> Iterable[Metric]:
        for provide in self._providers:
            yield from provide()


class _Forward:
    """The process's default registry, as one collector of an endpoint's registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class MetricsEndpoint:
    """``/metrics`` on ``listen`` ("HOST:PORT", port 0 = pick one), once :meth:`start`-ed;
    over HTTPS with ``tls``.  InsecureMetrics for an address beyond loopback without
    ``tls``, unless ``insecure`` (see the module docstring)."""

    def __init__(self, listen: str, providers: Sequence[Provider] = (), *,
                 tls: ServerTLS | None = None, insecure: bool = False,
                 deadline: float = DEADLINE) -> None:
        check_exposure(listen, tls, insecure=insecure)
        if not deadline > 0:
            raise ValueError("the connection deadline must be positive")
        self.listen = listen
        self.deadline = deadline
        self.tls = tls
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Forward())
        self.registry.register(_Provided(tuple(providers)))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.address = ""

    def start(self) -> MetricsEndpoint:
        """Bind and serve; OSError (saying where) if the address cannot be bound."""
        host, port = _split(self.listen)
        try:
            context = None if self.tls is None else self.tls.contexts()
            family, _, _, _, sockaddr = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

            class Server(_Server):
                address_family = family

            server = make_server(str(sockaddr[0]), port, make_wsgi_app(self.registry), Server,
                                 handler_class=_Quiet)
            server.context = context
            server.deadline = self.deadline
            server.deadlines = _Deadlines()
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {self.listen}:"
                          f" {exc.strerror or exc}") from exc
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True,
                                        name="percolator-metrics")
        self._thread.start()
        bound = server.server_port
        self.address = f"{self.listen.rpartition(':')[0]}:{bound}"
        return self

    @property
    def url(self) -> str:
        return f"{'http' if self.tls is None else 'https'}://{self.address}/metrics"

    def stop(self) -> None:
        """Stop serving and release the port.  Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        assert isinstance(server, _Server)
        server.deadlines.stop()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

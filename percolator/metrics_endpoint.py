"""Metrics endpoint: ``/metrics`` over HTTP for Prometheus, on a node or a worker.

Off unless asked for (``--metrics-listen HOST:PORT``).  It serves the process's default
registry (every metric counted where it happens, ``percolator.metrics``, and
``prometheus_client``'s process and Python collectors) together with the families its
owner provides when scraped (a node's oracle and disk size, a worker's pending
notifications), each endpoint its own: two nodes in one process (tests) never
register one name twice.  An HTTP server (``prometheus_client.make_wsgi_app`` under
wsgiref) on its own daemon thread, a thread per connection; scrapes never touch the
gRPC threads.  Its TLS handshakes run in each connection's thread, bounded by
:data:`HANDSHAKE_TIMEOUT`: ``prometheus_client.start_http_server`` wraps the listening
socket instead, so the handshake runs in accept, and one client that connected and sent
nothing held up every scrape (measured: all of them timed out).

Protected mode, as for a node's port (``bigtable_lite.server.check_exposure``): beyond a
loopback address the endpoint is served only over TLS (``tls``: HTTPS with that
certificate; with its ``client_ca``, only to scrapers with a client certificate it
signed), or when ``insecure`` says the network is trusted.  Metrics name tables and
workers and show what a cluster does and how much; and a scraper cannot tell a plain
HTTP endpoint from an impostor.  The certificate is loaded when the endpoint starts (a
rotated one is served after a restart; the node's gRPC port reloads its own).
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
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

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a scraper's TLS handshake may take; then its connection is closed."""
IDLE_TIMEOUT = 30.0
"""Seconds a connection may wait for its request."""
MAX_CONNECTIONS = 8
"""Connections served at once; more are closed at once.  Each holds a thread and a file
descriptor: unbounded, idle connections (no credential needed) took every descriptor of
the process, and the node's gRPC port stopped answering."""


class _Quiet(WSGIRequestHandler):
    timeout = IDLE_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base's name
        """A line per scrape on stderr is noise."""


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per connection; with ``context`` (a ``ServerTLS.contexts()``: certificate
    files reloaded when they change), its TLS handshake in that thread."""

    daemon_threads = True
    context: Callable[[], ssl.SSLContext] | None = None
    _slots: threading.BoundedSemaphore | None = None  # MAX_CONNECTIONS (made on first use)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own, if a slot is free; else close it."""
        if self._slots is None:  # (this runs on the serving thread only)
            self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        if not self._slots.acquire(blocking=False):
            log.debug("metrics connection from %s refused: %d served already",
                      client_address, MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            assert self._slots is not None
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.context().wrap_socket(request, server_side=True)
        except OSError:  # ssl.SSLError too: that scraper's failure alone
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper that went away or idled out is its own affair: one debug line, not
        socketserver's traceback on stderr."""
        log.debug("metrics connection from %s ended: %s", client_address, sys.exc_info()[1])


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
                 tls: ServerTLS | None = None, insecure: bool = False) -> None:
        check_exposure(listen, tls, insecure=insecure)
        self.listen = listen
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
        if self._thread is not None:
            self._thread.join(timeout=5.0)

"""Credentials on the wire: the server's TLS (reloaded when its files change) and a client's
TLS and token.

Server: :class:`ServerTLS` names PEM files, a certificate chain and its key, and, for
mutual TLS, the CA that signs client certificates.  The credentials it builds are gRPC's
dynamic ones: before each new connection's handshake gRPC asks whether the certificate
changed, and we answer by comparing the files' (device, inode, size, mtime) with those
last loaded, a few ``stat`` calls.  Changed files are loaded and checked (the key must
match the certificate) before they are served; a pair caught half-written or mismatched
during a rotation is not served: the previous one stays, with one warning, and is
replaced as soon as the files are consistent.  Connections already open keep the
certificate they were made with.  A server of our own on a socket (the node's native
transport) gets the same files, checks and reloading as an ``ssl.SSLContext`` per new
connection (:meth:`ServerTLS.contexts`).

Client: :func:`connect_channel` opens a channel with TLS when a CA or a client
certificate is given, and sends a token on every call (``authorization: Bearer TOKEN``,
added by a channel interceptor).  A token never travels in the clear over a network:
without TLS, :func:`connect_channel` sends one only to a loopback address and refuses any
other.  :func:`client_context` is the same TLS for a client's own socket.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

import grpc

from .auth import METADATA_KEY

__all__ = ["ServerTLS", "channel_credentials", "client_context", "connect_channel",
           "is_loopback", "split_host"]

log = logging.getLogger(__name__)

_Stamp = tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class ServerTLS:
    """PEM files of a server's certificate (chain), its private key, and optionally the CA
    whose client certificates it requires (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials that pick up replaced files for new connections.

        Raises OSError if a file cannot be read and ValueError if the files are not a
        certificate and its key (or the CA file holds no certificate).
        """
        files = _CertificateFiles(self, _grpc_configuration)
        return grpc.dynamic_ssl_server_credentials(
            files.initial, files.fetch, require_client_authentication=self.client_ca is not None)

    def contexts(self) -> Callable[[], ssl.SSLContext]:
        """The context of each new connection of a server of our own (a socket, not gRPC):
        call it before each handshake.  The same files, checks and reloading as
        :meth:`credentials` (a client certificate signed by ``client_ca`` is required
        when one is given); raises as it does."""
        files = _CertificateFiles(self, _ssl_context)
        current = files.initial

        def context() -> ssl.SSLContext:
            nonlocal current
            fresh = files.fetch()
            if fresh is not None:
                current = fresh
            return current

        return context


def _grpc_configuration(tls: ServerTLS, cert: bytes, key: bytes, root: bytes | None
                        ) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=root)


def _ssl_context(tls: ServerTLS, cert: bytes, key: bytes, root: bytes | None
                 ) -> ssl.SSLContext:
    """A server context as gRPC's: TLS 1.2 or later, the client's certificate required
    (and verified against ``client_ca``) for mutual TLS."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    if root is not None:
        context.load_verify_locations(cadata=root.decode("ascii", "replace"))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


_Config = TypeVar("_Config")


class _CertificateFiles(Generic[_Config]):
    """The files of a ServerTLS, built into a server configuration (gRPC's, or an
    SSLContext) when they changed and are consistent."""

    def __init__(self, tls: ServerTLS,
                 build: Callable[[ServerTLS, bytes, bytes, bytes | None], _Config]) -> None:
        self._tls = tls
        self._build = build
        self._paths = [p for p in (tls.cert, tls.key, tls.client_ca) if p is not None]
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.initial = self._load()
        self._refused: tuple[_Stamp | None] | None = None

    def _stat(self) -> _Stamp:
        stats = [os.stat(p) for p in self._paths]
        return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)

    def _load(self) -> _Config:
        tls = self._tls
        cert, key = tls.cert.read_bytes(), tls.key.read_bytes()
        _check_pair(tls.cert, tls.key)
        root = None
        if tls.client_ca is not None:
            root = tls.client_ca.read_bytes()
            _check_ca(tls.client_ca)
        try:
            config = self._build(tls, cert, key, root)
        except ssl.SSLError as exc:  # replaced between the check and the build
            raise ValueError(f"{tls.cert} and {tls.key} cannot be loaded: {exc}") from exc
        if (tls.cert.read_bytes(), tls.key.read_bytes()) != (cert, key):
            raise ValueError("the files changed while they were read")
        return config

    def fetch(self) -> _Config | None:
        """Called before each handshake: None keeps the current configuration."""
        with self._lock:
            try:
                stamp = self._stat()
            except OSError as exc:
                self._refuse(None, exc)
                return None
            if stamp == self._stamp:
                return None
            try:
                config = self._load()
            except (OSError, ValueError) as exc:
                self._refuse(stamp, exc)
                return None
            self._stamp = stamp
            log.warning("TLS certificate reloaded from %s", self._tls.cert)
            return config

    def _refuse(self, stamp: _Stamp | None, exc: Exception) -> None:
        """Warn once per state of the files that cannot be served."""
        if self._refused != (stamp,):
            self._refused = (stamp,)
            log.warning("TLS files changed but cannot be served (%s); still serving the"
                        " previous certificate", exc)


def _check_pair(cert: Path, key: Path) -> None:
    """ValueError unless ``cert`` holds a certificate and ``key`` its private key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ValueError(f"{cert} and {key} are not a PEM certificate and its key: {exc}"
                         ) from exc


def _check_ca(ca: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise ValueError(f"{ca} holds no PEM CA certificate: {exc}") from exc


def split_host(address: str) -> str:
    """The host of "HOST:PORT" (brackets of an IPv6 literal removed)."""
    host = address.rpartition(":")[0] if ":" in address else address
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: ``localhost``, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def channel_credentials(*, tls_ca: str | os.PathLike[str] | None = None,
                        tls_cert: str | os.PathLike[str] | None = None,
                        tls_key: str | os.PathLike[str] | None = None
                        ) -> grpc.ChannelCredentials | None:
    """TLS credentials of a channel, or None for plain HTTP/2.

    TLS when ``tls_ca`` (the CA that signed the server's certificate) or a client
    certificate is given; ``tls_cert`` and ``tls_key`` (a client certificate and its key,
    for mutual TLS) come together.  Raises ValueError for a certificate without its key,
    OSError for files that cannot be read.
    """
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("a client certificate needs its key: give tls_cert and tls_key")
    if tls_ca is None and tls_cert is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates=_read(tls_ca),
                                        private_key=_read(tls_key),
                                        certificate_chain=_read(tls_cert))


def client_context(*, tls_ca: str | os.PathLike[str] | None = None,
                   tls_cert: str | os.PathLike[str] | None = None,
                   tls_key: str | os.PathLike[str] | None = None) -> ssl.SSLContext | None:
    """The TLS context of a client's own socket (the node's native transport), or None for
    plain TCP: the same choice and files as :func:`channel_credentials`, so the server is
    verified against the same CA (the system's when ``tls_ca`` is None) and must name the
    host dialled, as gRPC's channel checks.  Raises ValueError for a certificate without
    its key, OSError (``ssl.SSLError`` included) for files that cannot be used."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("a client certificate needs its key: give tls_cert and tls_key")
    if tls_ca is None and tls_cert is None:
        return None
    context = ssl.create_default_context(cafile=tls_ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls_cert is not None:
        context.load_cert_chain(tls_cert, tls_key)
    return context


class _Token(grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]  # grpc is untyped
             grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
             grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
             grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
    """Adds ``authorization: Bearer TOKEN`` to every call of a channel.

    Why not gRPC's access-token call credentials: in Python they are a metadata plugin
    that gRPC calls back for every call, measured at ~0.7 ms per call (a unary ReadRows
    round trip is ~0.65 ms); this costs a few microseconds.
    """

    def __init__(self, token: str) -> None:
        self._metadata = ((METADATA_KEY, f"Bearer {token}"),)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = (*(details.metadata or ()), *self._metadata)
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation: Any, details: grpc.ClientCallDetails,
                              request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: grpc.ClientCallDetails,
                               request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: grpc.ClientCallDetails,
                               requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: grpc.ClientCallDetails,
                                requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: tuple[tuple[str, str], ...] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


def _check_client_token(token: str) -> None:
    if not token or not all("!" <= ch <= "~" for ch in token):
        raise ValueError("a token is printable ASCII without spaces")


def _read(path: str | os.PathLike[str] | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def connect_channel(address: str, options: Sequence[tuple[str, int | str]] = (), *,
                    token: str | None = None,
                    tls_ca: str | os.PathLike[str] | None = None,
                    tls_cert: str | os.PathLike[str] | None = None,
                    tls_key: str | os.PathLike[str] | None = None) -> grpc.Channel:
    """A channel to "HOST:PORT": plain, or TLS (:func:`channel_credentials`), sending
    ``token`` with every call.

    Raises ValueError for a token that would travel in the clear to another host, and
    OSError for TLS files that cannot be read.
    """
    creds = channel_credentials(tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
    if token is not None:
        _check_client_token(token)
        if creds is None and not is_loopback(split_host(address)):
            raise ValueError(f"a token is sent only over TLS or to this host: give tls_ca to"
                             f" reach {address}")
    channel = (grpc.insecure_channel(address, options=list(options)) if creds is None
               else grpc.secure_channel(address, creds, options=list(options)))
    return channel if token is None else grpc.intercept_channel(channel, _Token(token))

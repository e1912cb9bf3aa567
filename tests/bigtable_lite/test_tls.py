"""TLS on the store's port: handshakes, mutual TLS, wrong CAs, certificates replaced on disk.

Certificates are made in the test (tests/certs.py, with the cryptography package); the
server is a real gRPC server on 127.0.0.1:0.  Every channel has its own subchannel pool,
so each new channel makes a new connection and a new handshake.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from bigtable_lite import Cell, LocalStore, RemoteStore, Unavailable
from bigtable_lite.credentials import ServerTLS, client_context, connect_channel
from bigtable_lite.server import ServerPolicy, build_server, stop_server
from tests.certs import CA

from .conftest import CALL_TIMEOUT

T = b"t"
FRESH = [("grpc.use_local_subchannel_pool", 1)]


class TLSServer:
    def __init__(self, tmp_path: Path, tls: ServerTLS) -> None:
        self.store = LocalStore(tmp_path / "data")
        self.server, port = build_server(self.store, "127.0.0.1:0", max_workers=8,
                                         policy=ServerPolicy(tls=tls))
        self.server.start()
        self.address = f"127.0.0.1:{port}"

    def close(self) -> None:
        stop_server(self.server, grace=1.0)
        self.store.close()


@pytest.fixture
def server_ca() -> CA:
    return CA("server CA")


@pytest.fixture
def tls_server(tmp_path: Path, server_ca: CA) -> Iterator[TLSServer]:
    cert, key = server_ca.issue("node", server=True).write(tmp_path, "node")
    served = TLSServer(tmp_path, ServerTLS(cert, key))
    try:
        yield served
    finally:
        served.close()


@contextmanager
def remote(address: str, **credentials: Path) -> Iterator[RemoteStore]:
    """A RemoteStore on a new channel (a new connection) with these credentials."""
    channel = connect_channel(address, FRESH, **credentials)  # type: ignore[arg-type]
    try:
        with RemoteStore(channel, timeout=CALL_TIMEOUT) as store:
            yield store
    finally:
        channel.close()


def must_work(address: str, **credentials: Path) -> None:
    with remote(address, **credentials) as store:
        store.put(T, b"r", b"c", 1, b"v")
        assert store.get(T, b"r", b"c") == Cell(b"c", 1, b"v")


def must_be_refused(address: str, **credentials: Path) -> None:
    with remote(address, **credentials) as store, pytest.raises(Unavailable):
        store.get(T, b"r", b"c")


def test_a_client_that_trusts_the_ca_gets_through(tls_server: TLSServer, server_ca: CA,
                                                  tmp_path: Path) -> None:
    must_work(tls_server.address, tls_ca=server_ca.write(tmp_path / "ca.pem"))


def test_plain_clients_and_other_cas_are_refused(tls_server: TLSServer,
                                                 tmp_path: Path) -> None:
    must_be_refused(tls_server.address)  # no TLS at all
    must_be_refused(tls_server.address, tls_ca=CA("another CA").write(tmp_path / "other.pem"))


def test_mutual_tls_requires_a_client_certificate_from_the_clients_ca(
        tmp_path: Path, server_ca: CA) -> None:
    clients = CA("client CA")
    cert, key = server_ca.issue("node", server=True).write(tmp_path, "node")
    served = TLSServer(tmp_path, ServerTLS(cert, key, clients.write(tmp_path / "clients.pem")))
    try:
        ca = server_ca.write(tmp_path / "ca.pem")
        client_cert, client_key = clients.issue("worker", server=False).write(tmp_path, "worker")
        must_work(served.address, tls_ca=ca, tls_cert=client_cert, tls_key=client_key)
        must_be_refused(served.address, tls_ca=ca)  # no client certificate
        stranger_cert, stranger_key = CA("stranger CA").issue("x", server=False).write(
            tmp_path, "stranger")
        must_be_refused(served.address, tls_ca=ca, tls_cert=stranger_cert,
                        tls_key=stranger_key)
    finally:
        served.close()


def test_a_certificate_replaced_on_disk_is_served_to_new_connections(
        tmp_path: Path, server_ca: CA) -> None:
    cert, key = server_ca.issue("node", server=True).write(tmp_path, "node")
    served = TLSServer(tmp_path, ServerTLS(cert, key))
    try:
        old_ca = server_ca.write(tmp_path / "old-ca.pem")
        new = CA("next CA")
        new_ca = new.write(tmp_path / "new-ca.pem")
        with remote(served.address, tls_ca=old_ca) as kept:
            kept.put(T, b"r", b"c", 1, b"v")  # a connection made before the rotation
            must_be_refused(served.address, tls_ca=new_ca)

            issued = new.issue("node", server=True)
            cert.write_bytes(issued.cert)  # half-way: the new certificate, the old key
            must_work(served.address, tls_ca=old_ca)  # a mismatched pair is never served
            key.write_bytes(issued.key)

            must_work(served.address, tls_ca=new_ca)  # no restart
            must_be_refused(served.address, tls_ca=old_ca)
            assert kept.get(T, b"r", b"c") == Cell(b"c", 1, b"v")  # open connections keep theirs
    finally:
        served.close()


def test_unreadable_tls_files_are_refused_at_start(tmp_path: Path, server_ca: CA) -> None:
    cert, key = server_ca.issue("node", server=True).write(tmp_path, "node")
    other_key = CA("x").issue("y", server=True).write(tmp_path, "other")[1]
    with LocalStore(tmp_path / "data") as store:
        with pytest.raises(ValueError, match="not a PEM certificate and its key"):
            build_server(store, "127.0.0.1:0", policy=ServerPolicy(tls=ServerTLS(cert, other_key)))
        with pytest.raises(OSError):
            build_server(store, "127.0.0.1:0",
                         policy=ServerPolicy(tls=ServerTLS(tmp_path / "missing.pem", key)))


def test_a_token_never_travels_in_the_clear_to_another_host() -> None:
    with pytest.raises(ValueError, match="only over TLS"):
        connect_channel("192.0.2.1:7070", token="t" * 20)
    connect_channel("127.0.0.1:7070", token="t" * 20).close()  # loopback: allowed
    with pytest.raises(ValueError, match="client certificate needs its key"):
        connect_channel("127.0.0.1:7070", tls_cert="c.pem")


def test_the_old_insecure_channel_still_reaches_a_plain_server(tmp_path: Path) -> None:
    """No TLS configured: plain HTTP/2, as before (loopback only by default)."""
    with LocalStore(tmp_path / "data") as store:
        server, port = build_server(store, "127.0.0.1:0", max_workers=8)
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert RemoteStore(channel).list_tablets() == []
        finally:
            stop_server(server, grace=1.0)


def test_client_context_takes_the_files_and_rules_of_the_channel(tmp_path: Path,
                                                                 server_ca: CA) -> None:
    """A client's own socket (the node's native transport) gets the same TLS as its
    channel: none without files, the server verified and its name checked, a client
    certificate only with its key."""
    assert client_context() is None
    ca = server_ca.write(tmp_path / "ca.pem")
    context = client_context(tls_ca=ca)
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    cert, key = CA("clients").issue("worker", server=False).write(tmp_path, "worker")
    with pytest.raises(ValueError, match="needs its key"):
        client_context(tls_ca=ca, tls_cert=cert)
    assert client_context(tls_ca=ca, tls_cert=cert, tls_key=key) is not None


def test_server_contexts_reload_as_the_credentials_do(tmp_path: Path, server_ca: CA) -> None:
    """``ServerTLS.contexts``: the same files, checks and reloading as gRPC's credentials;
    mutual TLS requires a client certificate."""
    cert, key = server_ca.issue("node", server=True).write(tmp_path, "node")
    contexts = ServerTLS(cert, key).contexts()
    first = contexts()
    assert contexts() is first  # unchanged files: the same context
    assert first.verify_mode is ssl.CERT_NONE
    issued = CA("next CA").issue("node", server=True)
    cert.write_bytes(issued.cert)  # half-way: never served
    assert contexts() is first
    key.write_bytes(issued.key)
    assert contexts() is not first
    clients = CA("clients").write(tmp_path / "clients.pem")
    assert ServerTLS(cert, key, clients).contexts()().verify_mode is ssl.CERT_REQUIRED

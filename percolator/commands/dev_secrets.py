"""Make a CA, a node certificate and tokens for a development cluster.

`percolator dev-secrets` writes into ``--dir`` (created if missing)::

    ca.pem      the CA certificate clients trust (--tls-ca)
    ca.key      its private key (kept so the files can be re-made; a dev CA only)
    node.pem    the node's certificate, for every --host and localhost, 127.0.0.1, ::1
    node.key    its private key (--tls-key)
    tokens      the node's token file (--auth-tokens): one token per role
    read.token, write.token, admin.token
                each role's token alone, for clients' --token-file

Private keys and tokens are readable by their owner only.  A directory that already holds
every file is kept as it is (so a cluster's first start makes them, later starts reuse
them); one that holds some of them is refused.  For production, use certificates from
your own CA and tokens from your secret store: this is the docker-compose demo's
first-start step (docker-compose.yml, ``percolator cluster``).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from bigtable_lite.auth import Role

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.x509 import Certificate

FILES = ("ca.pem", "ca.key", "node.pem", "node.key", "tokens",
         *(f"{role.label}.token" for role in Role))
ALWAYS_NAMED = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 365


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, type=Path, metavar="DIR",
                        help="where to write the files (kept if it holds them all)")
    parser.add_argument("--host", action="append", default=[], metavar="NAME",
                        help="a name or address clients reach the node by (repeatable;"
                        " localhost, 127.0.0.1 and ::1 are always in)")


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError

    root: Path = args.dir
    present = [name for name in FILES if (root / name).exists()]
    if len(present) == len(FILES):
        print(f"percolator dev-secrets: kept the files in {root}", flush=True)
        return 0
    if present:
        missing = [name for name in FILES if name not in present]
        raise CommandError(f"{root} holds only some of the files (missing {', '.join(missing)}):"
                           " remove them to make new ones")
    try:
        import cryptography  # noqa: F401 - only to say what is missing
    except ImportError as exc:
        raise CommandError("dev-secrets needs the cryptography package: pip install"
                           " 'percolator[tls]'") from exc
    write_secrets(root, [*args.host, *ALWAYS_NAMED])
    print(f"percolator dev-secrets: wrote a CA, a node certificate and tokens to {root}",
          flush=True)
    return 0


def write_secrets(root: Path, hosts: list[str]) -> None:
    """Make every file of :data:`FILES` in ``root`` (created if missing)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    root.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("percolator dev CA", ca_key, ca_key, None, [])
    node_key = ec.generate_private_key(ec.SECP256R1())
    node = _certificate("percolator node", node_key, ca_key, ca, list(dict.fromkeys(hosts)))
    _write(root / "ca.pem", _pem(ca), private=False)
    _write(root / "ca.key", _key_pem(ca_key), private=True)
    _write(root / "node.pem", _pem(node), private=False)
    _write(root / "node.key", _key_pem(node_key), private=True)
    tokens = {role: secrets.token_urlsafe(32) for role in Role}
    lines = ["# percolator dev tokens: TOKEN ROLE", *(f"{t} {r.label}" for r, t in tokens.items())]
    _write(root / "tokens", ("\n".join(lines) + "\n").encode(), private=True)
    for role, token in tokens.items():
        _write(root / f"{role.label}.token", f"{token}\n".encode(), private=True)


def _certificate(name: str, key: EllipticCurvePrivateKey, signer: EllipticCurvePrivateKey,
                 issuer: Certificate | None, hosts: list[str]) -> Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(subject if issuer is None else issuer.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None),
                              critical=True))
    if issuer is not None:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = (builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False))
    return builder.sign(signer, hashes.SHA256())


def _pem(cert: Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM)


def _key_pem(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write a new file (never over an existing one), owner-only if ``private``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())

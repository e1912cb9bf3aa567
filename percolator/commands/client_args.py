"""Arguments shared by commands that work on a cluster: where it is, which table, and the
credentials to reach it with.

``--token`` (or the environment variable ``PERCOLATOR_TOKEN``, or ``--token-file``) is sent
on every call; ``--tls-ca`` turns TLS on and names the CA that signed the node's
certificate; ``--tls-cert`` and ``--tls-key`` add a client certificate (mutual TLS).
A token travels only over TLS or to a loopback address (``bigtable_lite.credentials``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TypedDict

import grpc

from bigtable_lite import DEFAULT_LIMITS
from bigtable_lite.credentials import connect_channel
from bigtable_lite.remote import channel_options

from ..client import DEFAULT_LOCK_TTL, Client
from ..layout import DEFAULT_TABLE

TOKEN_ENV = "PERCOLATOR_TOKEN"


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", metavar="HOST:PORT",
                       help="a running `percolator serve` node")
    where.add_argument("--data-dir", metavar="DIR",
                       help="open the data directory in this process (no server may own it)")
    parser.add_argument("--table", default=DEFAULT_TABLE.decode(), metavar="NAME",
                        help="Percolator table (default %(default)s)")
    security = parser.add_argument_group("security (with --connect)")
    token = security.add_mutually_exclusive_group()
    token.add_argument("--token", metavar="TOKEN",
                       help=f"token to call the node with (default: ${TOKEN_ENV})")
    token.add_argument("--token-file", type=Path, metavar="FILE",
                       help="read the token from this file (its first word)")
    security.add_argument("--tls-ca", type=Path, metavar="FILE",
                          help="use TLS; PEM CA that signed the node's certificate")
    security.add_argument("--tls-cert", type=Path, metavar="FILE",
                          help="PEM client certificate, for mutual TLS (with --tls-key)")
    security.add_argument("--tls-key", type=Path, metavar="FILE",
                          help="PEM private key of --tls-cert")


def token_from(args: argparse.Namespace) -> str | None:
    """The token the arguments name: --token, else --token-file, else $PERCOLATOR_TOKEN."""
    from ..cli import CommandError

    if args.token:
        return str(args.token)
    if args.token_file is not None:
        words = Path(args.token_file).read_text(encoding="utf-8").split()
        if not words:
            raise CommandError(f"--token-file {args.token_file} is empty")
        return str(words[0])
    return os.environ.get(TOKEN_ENV) or None


class Credentials(TypedDict):
    """Keyword arguments of Client.connect and connect_channel for the credentials."""

    token: str | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None


def credentials_from(args: argparse.Namespace) -> Credentials:
    from ..cli import CommandError

    if (args.tls_cert is None) != (args.tls_key is None):
        raise CommandError("--tls-cert and --tls-key go together")
    return {"token": token_from(args), "tls_ca": args.tls_ca, "tls_cert": args.tls_cert,
            "tls_key": args.tls_key}


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to --connect with the credentials of the arguments."""
    from ..cli import CommandError

    try:
        return connect_channel(args.connect, channel_options(DEFAULT_LIMITS),
                               **credentials_from(args))
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def open_client(args: argparse.Namespace, *, lock_ttl: float | None = None) -> Client:
    from ..cli import CommandError

    table = str(args.table).encode()
    ttl = DEFAULT_LOCK_TTL if lock_ttl is None else lock_ttl
    if args.connect:
        try:
            return Client.connect(args.connect, table=table, lock_ttl=ttl,
                                  **credentials_from(args))
        except ValueError as exc:  # a token that would travel in the clear
            raise CommandError(str(exc)) from exc
    return Client.embedded(args.data_dir, table=table, lock_ttl=ttl)

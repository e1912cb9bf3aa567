"""Arguments shared by commands that work on a cluster: where it is, which table, and the
credentials to reach it with.

A command that only reads, or works on data that must already be there, opens an
existing data directory only: a mistyped ``--data-dir`` is refused instead of becoming
a new, empty store that the command then reports on.

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

from bigtable_lite import DEFAULT_LIMITS, is_store
from bigtable_lite.credentials import connect_channel
from bigtable_lite.remote import channel_options

from .._client import DEFAULT_LOCK_TTL, Client
from .._gc import DEFAULT_GC_LIFE_TIME
from .._transaction import Transaction
from ..cli import CommandError
from ..layout import DEFAULT_TABLE
from .arg_types import node_address, positive_int

TOKEN_ENV = "PERCOLATOR_TOKEN"


def add_target_arguments(parser: argparse.ArgumentParser, *, create: bool = False,
                         table_option: bool = True) -> None:
    """``--connect`` or ``--data-dir`` (required, one of them), and ``--table``.

    ``create``: the command may create a new data directory (it writes data of its own).
    ``table_option`` False: the command names the table otherwise (it must set
    ``args.table`` itself, e.g. as a positional argument).
    """
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", type=node_address, metavar="HOST:PORT",
                       help="a running `percolator serve` node")
    where.add_argument("--data-dir", metavar="DIR",
                       help="open the data directory in this process (no server may own it;"
                       + (" created if missing)" if create else " it must exist)"))
    if table_option:
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
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CommandError("--tls-cert and --tls-key go together")
    return {"token": token_from(args), "tls_ca": args.tls_ca, "tls_cert": args.tls_cert,
            "tls_key": args.tls_key}


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to --connect with the credentials of the arguments."""
    try:
        return connect_channel(args.connect, channel_options(DEFAULT_LIMITS),
                               **credentials_from(args))
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def add_snapshot_argument(parser: argparse.ArgumentParser) -> None:
    """``--at TS``: read the snapshot at timestamp TS instead of a fresh one."""
    parser.add_argument("--at", type=positive_int, default=None, metavar="TS",
                        help="read the snapshot at timestamp TS (default: a fresh one);"
                        " not above the oracle's newest timestamp")


def snapshot(client: Client, at: int | None) -> Transaction:
    """A transaction reading the snapshot at ``at`` (a fresh timestamp if None).

    A snapshot above every timestamp handed out is refused: a transaction could still
    commit below it, so reading it twice could give two answers.
    """
    if at is None:
        return client.begin()
    newest = client.timestamp()
    if at > newest:
        raise CommandError(f"--at {at} is above the newest timestamp, {newest}: that snapshot"
                           " is not fixed yet")
    return Transaction(client.ctx, at)


def open_client(args: argparse.Namespace, *, lock_ttl: float | None = None,
                create: bool = False, gc_life_time: float = DEFAULT_GC_LIFE_TIME,
                timeout: float = 30.0) -> Client:
    """A client of ``--connect``'s node (each call bounded by ``timeout`` seconds) or of
    ``--data-dir`` (which must hold a store unless ``create``; its garbage collection
    runs in the background with ``gc_life_time``)."""
    table = str(args.table).encode()
    ttl = DEFAULT_LOCK_TTL if lock_ttl is None else lock_ttl
    if args.connect:
        try:
            return Client.connect(args.connect, table=table, lock_ttl=ttl, timeout=timeout,
                                  **credentials_from(args))
        except ValueError as exc:  # a token that would travel in the clear
            raise CommandError(str(exc)) from exc
    if not create and not is_store(args.data_dir):
        raise CommandError(f"{args.data_dir} is not a data directory (no store in it);"
                           " check --data-dir, or --connect to a node")
    return Client.embedded(args.data_dir, table=table, lock_ttl=ttl, gc_life_time=gc_life_time)

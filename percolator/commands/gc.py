"""Run one garbage-collection pass now and print what it removed.

With ``--connect`` the node runs the pass, with the life time it serves with; with
``--data-dir`` this process opens the store (no server may own it) and runs it with
``--gc-life-time``.  Nothing a running transaction, or a snapshot of the last life
time, can read is removed (docs/protocol.md, "Garbage collection").  A store that was
opened only now knows the oracle's history only from what its last owner persisted,
so a pass may keep more than the life time asks: it says so.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from .._gc import DEFAULT_GC_LIFE_TIME
from .._gc_table import GcPass
from ..cli import CommandError
from .arg_types import non_negative_float
from .client_args import add_target_arguments, open_client

PASS_TIMEOUT = 3600.0
"""Seconds a node's pass may take before `percolator gc --connect` stops waiting (the pass
goes on)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--gc-life-time", type=non_negative_float, default=None,
                        metavar="SECONDS", help="with --data-dir: keep every snapshot of the"
                        f" last SECONDS readable (default {DEFAULT_GC_LIFE_TIME:g}); a node"
                        " uses its own")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a line")


def run(args: argparse.Namespace) -> int:
    if args.connect and args.gc_life_time is not None:
        raise CommandError("--gc-life-time applies to --data-dir; a node collects with the"
                           " life time it was started with (percolator serve --gc-life-time)")
    life_time = DEFAULT_GC_LIFE_TIME if args.gc_life_time is None else args.gc_life_time
    client = open_client(args, gc_life_time=life_time, timeout=PASS_TIMEOUT)
    try:
        done = client.collect_garbage()
    finally:
        client.close()
    print(json.dumps({**asdict(done), "removed": done.removed}, sort_keys=True)
          if args.json else describe(done), flush=True)
    return 0


def describe(done: GcPass) -> str:
    return f"percolator gc: {done.describe()}"

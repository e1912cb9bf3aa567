"""Load citation data into a cluster, or verify its counts against a batch recount.

`percolator citations load|verify` runs the citation example against a cluster.
``load`` writes papers' ``paper:refs`` (a generated heavy-tailed graph, or a SNAP
edge list such as cit-HepTh.txt) in transactions of many papers; workers started
with ``percolator worker --observers observers.citations:OBSERVERS`` count them.
``verify`` waits (bounded) until no citation notification is pending, then compares
every stored count with a MapReduce recount of the same snapshot: exit 0 and
``verified``, or exit 1 and the differences.  See docs/citations.md.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from percolator import Client
from percolator.cli import CommandError
from percolator.commands.arg_types import positive_float, positive_int
from percolator.commands.client_args import add_target_arguments, open_client

from .. import FOLD, REFS, SnapFormatError, generate_graph, load_graph, load_snap, verify


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    load = actions.add_parser("load", help="load papers' refs (generated or from a SNAP file)",
                              description="load papers' refs (generated or from a SNAP file)")
    source = load.add_mutually_exclusive_group(required=True)
    source.add_argument("--generate", type=positive_int, metavar="N",
                        help="generate N papers with a heavy-tailed in-degree")
    source.add_argument("--snap", metavar="FILE",
                        help="a SNAP edge list (FromNodeId<TAB>ToNodeId, '#' comments,"
                        " plain or gzip), e.g. cit-HepTh.txt")
    load.add_argument("--seed", type=int, default=1, metavar="S",
                      help="with --generate: the seed (default %(default)s)")
    load.add_argument("--batch", type=positive_int, default=200, metavar="N",
                      help="papers per transaction (default %(default)s)")
    load.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_target_arguments(load, create=True)

    check = actions.add_parser("verify", help="compare stored counts with a batch recount",
                               description="compare stored counts with a batch recount")
    check.add_argument("--wait", type=positive_float, default=600.0, metavar="S",
                       help="wait at most this long for pending notifications to be"
                       " processed before verifying; the pending count is printed every"
                       " 10 s meanwhile (default %(default)s)")
    check.add_argument("--show", type=positive_int, default=20, metavar="N",
                       help="differences to print (default %(default)s)")
    add_target_arguments(check)


def run(args: argparse.Namespace) -> int:
    if args.action == "load":
        return _load(args)
    return _verify(args)


def _load(args: argparse.Namespace) -> int:
    progress = None if not args.no_progress else False
    began = time.perf_counter()
    # The whole input is read before the store is opened: bad input changes nothing.
    if args.generate is not None:
        papers = generate_graph(args.generate, args.seed)
        print(f"percolator citations: generated {len(papers):,} papers (seed {args.seed})"
              f" in {time.perf_counter() - began:.1f}s", flush=True)
        desc = "loading"
    else:
        try:
            papers = load_snap(args.snap, progress=progress)
        except SnapFormatError as exc:
            raise CommandError(f"{exc} (nothing was loaded)") from exc
        print(f"percolator citations: read {len(papers):,} citing papers from {args.snap}"
              f" in {time.perf_counter() - began:.1f}s", flush=True)
        desc = f"loading {os.path.basename(args.snap)}"
    client = open_client(args, create=True)
    try:
        result = load_graph(client, papers, batch=args.batch, progress=progress, desc=desc)
    finally:
        client.close()
    print(f"percolator citations: loaded {result.papers:,} papers in {result.transactions:,}"
          f" transactions, {result.seconds:.1f}s ({result.papers_per_s:,.0f} papers/s)",
          flush=True)
    return 0


def _verify(args: argparse.Namespace) -> int:
    client = open_client(args)
    try:
        if not _wait_quiet(client, args.wait):
            raise CommandError(f"citation notifications still pending after {args.wait}s;"
                               " are workers running (percolator worker --observers"
                               " observers.citations:OBSERVERS)?")
        result = verify(client)
    finally:
        client.close()
    print(result.report(args.show), flush=True)
    print(f"percolator citations: batch recount {result.snapshot_s:.2f}s"
          f" ({result.recount.mode}, {result.recount.workers} processes)", flush=True)
    return 0 if result.ok else 1


def _wait_quiet(client: Client, timeout: float) -> bool:
    """Until no notification of the citation observers is pending (bounded, polled)."""
    columns = [REFS, FOLD]
    began = time.monotonic()
    report_at = began + 10.0
    pause = threading.Event()
    while client.notifications.pending(client.table, columns, 1):
        now = time.monotonic()
        if now >= began + timeout:
            return False
        if now >= report_at:
            pending = client.notifications.pending(client.table, columns, 10_000_000)
            print(f"percolator citations: waiting for the workers, {pending:,} notifications"
                  f" pending ({now - began:.0f}s)", flush=True)
            report_at = now + 10.0
        pause.wait(0.1)
    return True

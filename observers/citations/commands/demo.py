"""Citation counts end to end, embedded: load, count, verify, edit, compare with batch.

`percolator demo` is the citation-count showcase, embedded, no server needed.  It
generates a heavy-tailed citation graph, loads it while observer workers count forward
and backward citations, verifies every count against a MapReduce recount, then
applies a stream of edits and shows how soon each is reflected next to how long one
batch recount takes.  Ends with a short table and ``verified``, or a clear
failure and exit status 1.  See docs/citations.md.
"""

from __future__ import annotations

import argparse

from percolator.cli import CommandError
from percolator.commands.arg_types import non_negative_int, positive_float, positive_int

from ..counting import DEFAULT_MAX_BATCH
from ..demo import (
    DEFAULT_EDITS,
    DEFAULT_PAPERS,
    DEFAULT_SEED,
    DEFAULT_THREADS,
    DemoConfig,
    check_fresh_dir,
    default_data_dir,
    remove_data_dir,
    run_demo,
    stderr_is_tty,
    summary,
)
from ..edits import NotReflected


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--papers", type=positive_int, default=DEFAULT_PAPERS, metavar="N",
                        help="papers to generate (default %(default)s)")
    parser.add_argument("--edits", type=non_negative_int, default=DEFAULT_EDITS, metavar="K",
                        help="edits to apply after the load, one at a time (default"
                        " %(default)s)")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="new or empty data directory, kept afterwards (default: a"
                        " temporary one, removed afterwards)")
    parser.add_argument("--worker-threads", "--workers-threads", dest="threads",
                        type=positive_int, default=DEFAULT_THREADS, metavar="T",
                        help="observer threads (default %(default)s)")
    parser.add_argument("--observer-batch", type=positive_int, default=DEFAULT_MAX_BATCH,
                        metavar="N", help="papers per observer transaction at most, when"
                        " that many are pending (default %(default)s; docs/citations.md)")
    parser.add_argument("--seed", type=non_negative_int, default=DEFAULT_SEED, metavar="S",
                        help="seed of the graph and the edits (default %(default)s)")
    parser.add_argument("--naive", action="store_true",
                        help="update cited_by by direct read-modify-write instead of"
                        " combining hot papers (to see the conflicts)")
    parser.add_argument("--reflect-timeout", type=positive_float, default=30.0, metavar="S",
                        help="fail if an edit is not reflected in this long (default"
                        " %(default)s)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars, even on a terminal")


def run(args: argparse.Namespace) -> int:
    temporary = args.data_dir is None
    data_dir = default_data_dir() if temporary else args.data_dir
    try:
        check_fresh_dir(data_dir)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    cfg = DemoConfig(data_dir=data_dir, papers=args.papers, edits=args.edits, seed=args.seed,
                     threads=args.threads, observer_batch=args.observer_batch,
                     combine=not args.naive,
                     progress=stderr_is_tty() and not args.no_progress,
                     reflect_timeout=args.reflect_timeout)
    print(f"percolator demo: citation counts, {args.papers:,} papers, seed {args.seed},"
          f" data in {data_dir}{' (temporary)' if temporary else ''}", flush=True)

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        result = run_demo(cfg, out)
    except NotReflected as exc:
        raise CommandError(f"FAILED: an edit was not reflected: {exc}") from exc
    finally:
        if temporary:
            remove_data_dir(data_dir)
    print(summary(result), flush=True)
    return 0 if result.verified else 1

"""Loading papers into a table: generated graphs or SNAP files, several papers per transaction.

Only ``paper:refs`` is written; the counts are the observers' job.  Papers go in
transactions of ``batch`` papers (one notification each), which amortises the
two-phase commit over many rows: loading is bound by the observers, not by the loader.

A loader rides through a node restart: a batch that found the node unreachable, or
whose commit's outcome was lost with it, is written again with back-off for up to
``outage`` seconds (writing a paper's refs twice leaves them as once: its observers see
no change).  It once exited 1 and had to be run again by hand.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

from tqdm import tqdm

from observers import through_outages

from .combine import FOLD, QUEUE_PREFIX, check_target
from .schema import REFS, encode_refs, row_key
from .snap import load_snap

if TYPE_CHECKING:
    from percolator import Client, Transaction

DEFAULT_BATCH = 200
OUTAGE = 300.0
"""Seconds a load waits for a node that went away (a restart) before it gives up."""

Papers = Mapping[str, Sequence[str]] | Iterable[tuple[str, Sequence[str]]]


@dataclass(frozen=True, slots=True)
class LoadResult:
    papers: int
    transactions: int
    seconds: float

    @property
    def papers_per_s(self) -> float:
        return self.papers / self.seconds if self.seconds > 0 else float("inf")


def _pairs(papers: Papers) -> Iterator[tuple[str, Sequence[str]]]:
    if isinstance(papers, Mapping):
        return iter(papers.items())
    return iter(papers)


def _encoded(pairs: Iterator[tuple[str, Sequence[str]]]) -> Iterator[tuple[bytes, bytes]]:
    for paper, refs in pairs:
        row = row_key(paper)
        check_target(row)
        value = encode_refs(refs)  # validates every ref, before any write
        for ref in refs:
            check_target(ref.encode("utf-8"))
        yield row, value


def write_papers(txn: Transaction, rows: Sequence[tuple[bytes, bytes]]) -> None:
    for row, value in rows:
        txn.set(row, REFS, value)


def register(client: Client) -> None:
    """Observe the citation observers' columns (as their workers do, with the fold's
    partition prefix), so writes leave notifications before any worker runs."""
    client.notifications.register(client.table, REFS)
    client.notifications.register(client.table, FOLD, QUEUE_PREFIX)


def load_graph(client: Client, papers: Papers, *, batch: int = DEFAULT_BATCH,
               progress: bool | None = False, total: int | None = None,
               desc: str = "loading", outage: float = OUTAGE) -> LoadResult:
    """Write every paper's ``paper:refs`` (a dict or (id, refs) pairs), ``batch`` per transaction.

    A paper already in the table gets its refs replaced.  Each batch is retried on
    conflict (``client.run``), and through a node restart for up to ``outage`` seconds.
    The citation observers' columns are registered first, so the writes leave
    notifications even if no worker has started yet.  ``progress`` shows a tqdm bar on
    stderr (None: if stderr is a terminal).  Bad ids or refs raise ValueError/TypeError
    before their batch is written.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if progress is None:
        progress = sys.stderr.isatty()
    if total is None and isinstance(papers, Mapping):
        total = len(papers)
    ready = client.notifications.wait_ready
    through_outages(lambda: register(client), timeout=outage, what="registering the columns",
                    ready=ready)
    began = time.perf_counter()
    n = txns = 0
    rows = _encoded(_pairs(papers))
    with tqdm(total=total, unit="papers", desc=desc, disable=not progress, file=sys.stderr,
              smoothing=0.1) as bar:
        while chunk := list(islice(rows, batch)):
            through_outages(
                lambda chunk=chunk: client.run(  # type: ignore[misc]
                    lambda txn: write_papers(txn, chunk)),
                timeout=outage, what=f"writing papers {n + 1}-{n + len(chunk)}", ready=ready)
            n += len(chunk)
            txns += 1
            bar.update(len(chunk))
    return LoadResult(n, txns, time.perf_counter() - began)


def load_snap_file(client: Client, path: str | os.PathLike[str], *,
                   batch: int = DEFAULT_BATCH, progress: bool | None = None) -> LoadResult:
    """Parse a SNAP edge list (observers.citations.snap) and load its citing papers.

    Papers that are only cited get no refs cell; the observers still count them.
    Two progress bars when shown: parsing (bytes) and loading (papers).
    """
    papers = load_snap(path, progress=progress)
    return load_graph(client, papers, batch=batch, progress=progress,
                      desc=f"loading {os.path.basename(os.fspath(path))}")

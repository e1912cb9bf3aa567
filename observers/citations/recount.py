"""Batch recount of citation counts, MapReduce style: the check for incremental results.

Percolator's observers keep ``paper:ref_count`` and ``paper:cited_by`` current one
change at a time; this module recomputes both from scratch over a snapshot of
``paper:refs``, the way the paper's MapReduce baseline would, so the two can be
compared.  It is deliberately plain:

* map: a chunk of papers becomes, per paper, ``(paper, +1)`` forward per distinct ref
  and ``(ref, +1)`` backward per distinct ref, summed per chunk (a combiner) and split
  into partitions by a stable hash of the key (crc32, identical in every process);
* shuffle: partition ``i`` of every chunk goes to reducer ``i``;
* reduce: sum per key; a paper id seen in two chunks is an error, not a double count.

Counts are of distinct ids, a self-citation included; zero counts are left out, as a
missing count cell reads as 0 (see :mod:`observers.citations.schema`).

Map and reduce run in a ``fork`` multiprocessing pool; tiny inputs (where starting
processes costs more than it saves), ``workers=1`` and platforms without ``fork`` run the
very same functions in this process.  Fork is used because workers need nothing but
these functions and start in milliseconds; they run only pure-Python code from this
module and leave with ``os._exit``, so threads of the caller (gRPC channels) are not
touched in the child.  Pass ``start_method="forkserver"`` to avoid fork altogether.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from multiprocessing.pool import AsyncResult
from typing import Literal

_Partition = tuple[dict[str, int], dict[str, int]]
"""(forward, backward) partial sums of one partition."""
_Pickled = bytes
"""A pickled _Partition.  Map output crosses the parent as opaque bytes on its way to the
reducer: unpickling and re-pickling millions of keys there would serialise the shuffle."""


@dataclass(frozen=True, slots=True)
class Counts:
    """Distinct citations per paper: ``forward`` papers it cites, ``backward`` papers citing it.

    Zero counts are absent; compare with ``.get(paper, 0)`` or :func:`diff_counts`.
    """

    forward: dict[str, int]
    backward: dict[str, int]


@dataclass(frozen=True, slots=True)
class Timing:
    """How a recount ran: mode, sizes and wall-clock seconds per phase."""

    mode: Literal["pool", "inline"]
    workers: int
    partitions: int
    papers: int
    map_s: float
    reduce_s: float
    total_s: float
    worker_pids: frozenset[int]
    """Processes that ran map or reduce tasks; proves the pool was used."""


@dataclass(frozen=True, slots=True)
class Recount:
    """Result of :func:`recount`."""

    counts: Counts
    timing: Timing


def expected_counts(papers: dict[str, list[str]]) -> Counts:
    """The counts by definition, single-threaded: the reference for tests."""
    forward: dict[str, int] = {}
    backward: dict[str, int] = {}
    for paper, refs in papers.items():
        distinct = set(refs)
        if distinct:
            forward[paper] = len(distinct)
        for ref in distinct:
            backward[ref] = backward.get(ref, 0) + 1
    return Counts(forward, backward)


def diff_counts(a: Counts, b: Counts, names: tuple[str, str] = ("a", "b")) -> list[str]:
    """Every count on which ``a`` and ``b`` disagree, one readable line each, sorted.

    A missing entry is 0, so an explicit zero equals an absent one.  Empty means equal.
    """
    out = []
    for kind in ("forward", "backward"):
        da: dict[str, int] = getattr(a, kind)
        db: dict[str, int] = getattr(b, kind)
        for key in sorted(da.keys() | db.keys()):
            va, vb = da.get(key, 0), db.get(key, 0)
            if va != vb:
                out.append(f"{kind}[{key!r}]: {names[0]}={va} {names[1]}={vb}")
    return out


def recount(papers: Iterable[tuple[str, Sequence[str]]], *,
            workers: int | None = None,
            partitions: int | None = None,
            chunk_size: int = 10_000,
            min_parallel: int = 20_000,
            start_method: str | None = None) -> Recount:
    """Counts of ``(paper id, refs)`` pairs, e.g. decoded from a store snapshot.

    ``workers`` defaults to the usable cores, ``partitions`` to ``2 * workers``.  Fewer
    than ``min_parallel`` papers run inline.  Reads the input in the caller's thread,
    keeping at most ``2 * workers`` chunks in flight, so a lazy scan stays lazy.
    Raises ValueError if a paper id occurs twice, TypeError for a str given as refs.
    """
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    if workers < 1 or chunk_size < 1 or min_parallel < 0:
        raise ValueError("workers and chunk_size must be >= 1, min_parallel >= 0")
    n_parts = partitions if partitions is not None else 2 * workers
    if n_parts < 1:
        raise ValueError(f"partitions must be >= 1, got {n_parts}")
    if start_method is None:
        start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None

    t0 = time.perf_counter()
    it = iter(papers)
    head = list(islice(it, min_parallel))
    if workers == 1 or start_method is None or len(head) < min_parallel:
        return _recount_inline(_chunks(head, it, chunk_size), n_parts, t0)
    return _recount_pool(_chunks(head, it, chunk_size), n_parts, workers, start_method, t0)


def _chunks(head: list[tuple[str, Sequence[str]]], rest: Iterator[tuple[str, Sequence[str]]],
            size: int) -> Iterator[list[tuple[str, Sequence[str]]]]:
    for i in range(0, len(head), size):
        yield head[i:i + size]
    while chunk := list(islice(rest, size)):
        yield chunk


def _recount_inline(chunks: Iterator[list[tuple[str, Sequence[str]]]], n_parts: int,
                    t0: float) -> Recount:
    shuffled: list[list[_Pickled]] = [[] for _ in range(n_parts)]
    pids: set[int] = set()
    n_papers = 0
    for chunk in chunks:
        n_papers += len(chunk)
        _collect(_map_chunk(chunk, n_parts), shuffled, pids)
    t1 = time.perf_counter()
    reduced = []
    for pid, part in map(_reduce_partition, shuffled):
        pids.add(pid)
        reduced.append(part)
    t2 = time.perf_counter()
    return Recount(_merge(reduced), Timing("inline", 1, n_parts, n_papers, t1 - t0, t2 - t1,
                                           time.perf_counter() - t0, frozenset(pids)))


def _recount_pool(chunks: Iterator[list[tuple[str, Sequence[str]]]], n_parts: int,
                  workers: int, start_method: str, t0: float) -> Recount:
    shuffled: list[list[_Pickled]] = [[] for _ in range(n_parts)]
    pids: set[int] = set()
    n_papers = 0
    ctx = multiprocessing.get_context(start_method)
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        # Results are taken in submission order, so the shuffle is deterministic.
        in_flight: deque[AsyncResult[tuple[int, list[_Pickled]]]] = deque()
        for chunk in chunks:
            n_papers += len(chunk)
            in_flight.append(pool.apply_async(_map_chunk, (chunk, n_parts)))
            while len(in_flight) >= 2 * workers:
                _collect(in_flight.popleft().get(), shuffled, pids)
        while in_flight:
            _collect(in_flight.popleft().get(), shuffled, pids)
        t1 = time.perf_counter()
        reduced = []
        for pid, part in pool.imap(_reduce_partition, shuffled):
            pids.add(pid)
            reduced.append(part)
        t2 = time.perf_counter()
    return Recount(_merge(reduced), Timing("pool", workers, n_parts, n_papers, t1 - t0,
                                           t2 - t1, time.perf_counter() - t0, frozenset(pids)))


def _worker_init() -> None:
    # A forked worker shares the parent's heap copy-on-write; its first full garbage
    # collection would write to every inherited object's GC header and so copy the whole
    # heap (the caller's graph, often gigabytes).  Frozen objects are never scanned.
    gc.freeze()


def _collect(result: tuple[int, list[_Pickled]], shuffled: list[list[_Pickled]],
             pids: set[int]) -> None:
    pid, parts = result
    pids.add(pid)
    for i, part in enumerate(parts):
        shuffled[i].append(part)


def _partition(key: str, n_parts: int) -> int:
    # Not hash(): str hashes are salted per process, and map tasks in different
    # processes must send a key to the same reducer.
    return zlib.crc32(key.encode("utf-8")) % n_parts


def _map_chunk(chunk: list[tuple[str, Sequence[str]]],
               n_parts: int) -> tuple[int, list[_Pickled]]:
    """Map and combine one chunk; returns (this pid, one partial sum per partition)."""
    parts: list[_Partition] = [({}, {}) for _ in range(n_parts)]
    for paper, refs in chunk:
        if isinstance(refs, (str, bytes)):
            raise TypeError(f"refs of {paper!r} must be a list of ids, not {type(refs).__name__}")
        distinct = set(refs)
        forward = parts[_partition(paper, n_parts)][0]
        if paper in forward:
            raise ValueError(f"paper {paper!r} occurs twice in the input")
        # Every paper is emitted, with 0 too, so the reducer can see duplicates.
        forward[paper] = len(distinct)
        for ref in distinct:
            backward = parts[_partition(ref, n_parts)][1]
            backward[ref] = backward.get(ref, 0) + 1
    return os.getpid(), [pickle.dumps(part, pickle.HIGHEST_PROTOCOL) for part in parts]


def _reduce_partition(pickled: list[_Pickled]) -> tuple[int, _Partition]:
    """Sum one partition's partial counts; returns (this pid, (forward, backward))."""
    forward: dict[str, int] = {}
    backward: dict[str, int] = {}
    for data in pickled:
        fwd, bwd = pickle.loads(data)
        for paper, n in fwd.items():
            if paper in forward:
                raise ValueError(f"paper {paper!r} occurs twice in the input")
            forward[paper] = n
        for ref, n in bwd.items():
            backward[ref] = backward.get(ref, 0) + n
    return os.getpid(), ({k: v for k, v in forward.items() if v}, backward)


def _merge(reduced: list[_Partition]) -> Counts:
    # Partitions hold disjoint keys, so merging is a plain union.
    forward: dict[str, int] = {}
    backward: dict[str, int] = {}
    for fwd, bwd in reduced:
        forward.update(fwd)
        backward.update(bwd)
    return Counts(forward, backward)

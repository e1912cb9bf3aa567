"""The end-to-end demo: generate, load, count incrementally, verify, edit, compare with batch.

Embedded (one process, no server): :func:`run_demo` generates a heavy-tailed graph,
loads it while a :class:`~observers.Worker` runs the citation observers, waits until
the worker is idle, checks every count against the MapReduce recount of the same
snapshot, then commits a stream of edits one at a time and measures, for each, the
time from its commit until every count it affects holds its new value -- next to the
time one batch recount of the corpus takes.  It ends with a final verification.
``percolator demo`` prints it; ``bench/bench_citations.py`` measures with it.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from observers import Worker, WorkerStats, compact_notifications

from .combine import DEFAULT_BURST, DEFAULT_HOT
from .counting import DEFAULT_MAX_BATCH, make_observers
from .edits import CommitSignal, ExpectedCounts, commit_edit, wait_reflected
from .graph import edit_stream, generate_graph
from .loading import DEFAULT_BATCH, LoadResult, load_graph
from .schema import REFS
from .verify import Verification, verify

if TYPE_CHECKING:
    from percolator import Client

Print = Callable[[str], None]

DEFAULT_PAPERS = 20_000
DEFAULT_EDITS = 200
DEFAULT_THREADS = 2
DEFAULT_SEED = 1


@dataclass(frozen=True, slots=True)
class DemoConfig:
    data_dir: str
    papers: int = DEFAULT_PAPERS
    edits: int = DEFAULT_EDITS
    seed: int = DEFAULT_SEED
    threads: int = DEFAULT_THREADS
    combine: bool = True
    hot: int | None = DEFAULT_HOT
    """With ``combine``: cited_by at or above this always goes through combining slots."""
    burst: float = DEFAULT_BURST
    """With ``combine``: targets updated this recently (seconds) go through slots."""
    batch: int = DEFAULT_BATCH
    """Papers per load transaction."""
    observer_batch: int = DEFAULT_MAX_BATCH
    """Most papers per refs-observer transaction (1: one transaction per paper)."""
    progress: bool = False
    """tqdm bars on stderr (else a progress line every 10%)."""
    reflect_timeout: float = 30.0


@dataclass(slots=True)
class DemoResult:
    config: DemoConfig
    generate_s: float = 0.0
    load: LoadResult | None = None
    counted_s: float = 0.0
    """From the start of the load until the worker was idle: load with observers."""
    load_stats: WorkerStats | None = None
    first: Verification | None = None
    latencies: list[float] = field(default_factory=list)
    """Seconds from each edit's commit until its counts were reflected."""
    final: Verification | None = None
    final_stats: WorkerStats | None = None

    @property
    def papers_per_s(self) -> float:
        """End-to-end load rate: papers / (load + counting until idle)."""
        return self.config.papers / self.counted_s if self.counted_s > 0 else 0.0

    @property
    def recount_s(self) -> float:
        """One batch recount: read the snapshot's refs and MapReduce them (first verification)."""
        return self.first.snapshot_s if self.first is not None else 0.0

    @property
    def verified(self) -> bool:
        return (self.first is not None and self.first.ok and self.final is not None
                and self.final.ok)


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (0.0 when empty)."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, -(-len(ordered) * p // 100) - 1))
    return ordered[int(k)]


def check_fresh_dir(path: str) -> None:
    """The demo loads a new table: refuse a directory that already holds data."""
    p = Path(path)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise ValueError(f"data directory {path} is not empty; the demo needs a new or empty"
                         " directory")


def run_demo(cfg: DemoConfig, out: Print = print) -> DemoResult:
    """Run the demo in ``cfg.data_dir`` (new or empty), reporting progress through ``out``."""
    from percolator import Client

    if cfg.papers < 1 or cfg.edits < 0 or cfg.threads < 1 or cfg.observer_batch < 1:
        raise ValueError("papers, threads and observer_batch must be >= 1, edits >= 0")
    check_fresh_dir(cfg.data_dir)
    res = DemoResult(cfg)
    began = time.perf_counter()
    papers = generate_graph(cfg.papers, cfg.seed)
    res.generate_s = time.perf_counter() - began
    n_refs = sum(len(r) for r in papers.values())
    top = max(_in_degrees(papers).values(), default=0)
    out(f"generated {cfg.papers:,} papers, {n_refs:,} citations (seed {cfg.seed}; most cited"
        f" paper: {top:,} citations) in {res.generate_s:.1f}s")

    signal = CommitSignal()
    with Client.embedded(cfg.data_dir) as client, _collector_tuned():
        worker = Worker(client, make_observers(combine=cfg.combine, hot=cfg.hot,
                                                burst=cfg.burst, batch=cfg.observer_batch,
                                                on_commit=signal),
                        threads=cfg.threads)
        worker.start()
        try:
            _load(cfg, client, worker, papers, signal, res, out)
            res.first = verify(client)
            out(f"batch recount (snapshot + MapReduce, {res.first.recount.workers} processes):"
                f" {res.first.snapshot_s:.2f}s; {res.first.report().splitlines()[0]}")
            if not res.first.ok:
                out(res.first.report())
                return res
            _edit(cfg, client, worker, papers, res.first, signal, res, out)
            res.final_stats = worker.run_until_idle(_idle_timeout(cfg))
        finally:
            worker.stop()
        res.final = verify(client)
        out(f"final check: {res.final.report().splitlines()[0]}")
        if not res.final.ok:
            out(res.final.report())
    return res


@contextmanager
def _collector_tuned() -> Iterator[None]:
    """Python's cyclic garbage collector, set for this process's heap while the demo runs.

    The generated graph (100,000 papers: 1.5 million ids in 100,000 lists) lives all
    run long, and each observer batch allocates about a million short-lived objects.
    With the default thresholds the collector made 158 full collections over all of
    it, 23 s of a 68 s load of 100,000 papers (1,480 papers/s).  So the graph, built
    before, is frozen out of the collector's view, and young collections run every
    50,000 allocations instead of 700: 2 s of collections in all, 3,075 papers/s in
    the same session (freezing alone: 7 s; the thresholds alone: 3 s).  Restored after.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _in_degrees(papers: dict[str, list[str]]) -> dict[str, int]:
    deg: dict[str, int] = {}
    for refs in papers.values():
        for ref in set(refs):
            deg[ref] = deg.get(ref, 0) + 1
    return deg


def _idle_timeout(cfg: DemoConfig) -> float:
    return max(300.0, cfg.papers / 20.0)  # 20 papers/s would be 20x slower than measured


def _load(cfg: DemoConfig, client: Client, worker: Worker, papers: dict[str, list[str]],
          signal: CommitSignal, res: DemoResult, out: Print) -> None:
    mode = "combining hot papers" if cfg.combine else "naive read-modify-write"
    out(f"loading with {cfg.threads} observer threads ({mode}, up to {cfg.observer_batch:,}"
        f" papers per observer transaction), {cfg.batch} papers per transaction ...")
    began = time.perf_counter()
    res.load = load_graph(client, papers, batch=cfg.batch, progress=cfg.progress,
                          desc="loaded ")
    out(f"loaded {res.load.papers:,} papers in {res.load.seconds:.1f}s"
        f" ({res.load.papers_per_s:,.0f} papers/s written); counting ...")
    deadline = began + _idle_timeout(cfg)
    _show_counting(cfg, signal, deadline, out)
    res.load_stats = worker.run_until_idle(max(1.0, deadline - time.perf_counter()))
    res.counted_s = time.perf_counter() - began
    s = res.load_stats
    out(f"counted: {res.counted_s:.1f}s from the first paper loaded to the last count"
        f" ({res.papers_per_s:,.0f} papers/s with observers); {s.processed:,} observer"
        f" transactions, {s.conflicts:,} conflicts")
    # The load left one LevelDB tombstone per processed notification (tens of thousands,
    # below the node's own compaction threshold), which checks for pending ones step
    # over.  Compact once, as an operator would after a bulk load.
    compacted = time.perf_counter()
    compact_notifications(client)
    out(f"compacted the notification log after the load"
        f" ({time.perf_counter() - compacted:.1f}s)")


def _show_counting(cfg: DemoConfig, signal: CommitSignal, deadline: float, out: Print) -> None:
    """Progress of the refs observer until it has seen about every paper (bounded waits)."""
    total = cfg.papers
    with tqdm(total=total, unit="papers", desc="counted", disable=not cfg.progress,
              file=sys.stderr, smoothing=0.1) as bar:
        shown = 0
        next_line = total // 10
        seen = signal.commits
        while time.perf_counter() < deadline:
            done = min(total, signal.by_column.get(REFS, 0))
            bar.update(done - shown)
            shown = done
            if not cfg.progress and done >= next_line and done < total:
                out(f"  counted {done:,}/{total:,} papers")
                next_line += total // 10 or 1
            if done >= total:
                return
            seen = signal.wait_after(seen, 0.5)


def _edit(cfg: DemoConfig, client: Client, worker: Worker, papers: dict[str, list[str]],
          first: Verification, signal: CommitSignal, res: DemoResult, out: Print) -> None:
    if not cfg.edits:
        return
    # The expected counts start from the verified recount (equal to the stored counts).
    expected = ExpectedCounts(papers, first.counts)
    out(f"applying {cfg.edits} edits one at a time (add papers, change/delete/re-add refs,"
        " cite missing papers) ...")
    every = max(1, cfg.edits // 5)
    for i, edit in enumerate(edit_stream(papers, cfg.edits, cfg.seed + 1), 1):
        cells = expected.apply(edit)
        commit_edit(client, edit)
        committed = time.perf_counter()
        worker.wake()
        seen = wait_reflected(client, cells, committed, signal=signal,
                              timeout=cfg.reflect_timeout)
        res.latencies.append(seen.seconds)
        if i % every == 0 or i == cfg.edits:
            out(f"  {i}/{cfg.edits} edits: reflected in p50 {_ms(percentile(res.latencies, 50))}"
                f", p99 {_ms(percentile(res.latencies, 99))} (batch recount:"
                f" {first.snapshot_s:.2f}s)")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def summary(res: DemoResult) -> str:
    """The closing table."""
    rows: list[tuple[str, str]] = []
    if res.load is not None:
        rows.append(("load, writer alone", f"{res.load.papers_per_s:,.0f} papers/s"))
        rows.append(("load with observers, until counted", f"{res.papers_per_s:,.0f} papers/s"))
    if res.first is not None:
        rows.append(("batch recount (snapshot + MapReduce)", f"{res.recount_s * 1000:,.0f} ms"))
    if res.latencies:
        for p in (50, 99):
            lat = percentile(res.latencies, p)
            ratio = res.recount_s / lat if lat > 0 else float("inf")
            rows.append((f"edit reflected, p{p} ({len(res.latencies)} edits)",
                         f"{_ms(lat)}  = {ratio:,.0f}x faster than a batch recount"))
    stats = res.final_stats or res.load_stats
    if stats is not None:
        attempts = stats.processed + stats.conflicts
        rate = stats.conflicts / attempts if attempts else 0.0
        rows.append(("observer conflicts", (f"{stats.conflicts:,} of {attempts:,}"
                                           f" transactions ({rate:.1%})")))
    width = max(len(k) for k, _ in rows) if rows else 0
    lines = [f"  {k:<{width}}  {v}" for k, v in rows]
    lines.append("verified" if res.verified else "FAILED: counts differ from the batch recount")
    return "\n".join(lines)


def default_data_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="percolator-demo-")


def remove_data_dir(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"

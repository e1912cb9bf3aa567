"""Citation counts end to end, embedded: load throughput, edit latency, batch recount, conflicts.

Runs the demo's pipeline (observers.citations.demo) on a heavy-tailed graph:
  * load throughput with the observers included: papers / (load + counting until the
    worker is idle), and the writer's rate alone;
  * the batch recount of the same corpus (snapshot read + MapReduce on every core);
  * for a stream of single edits, the time from each edit's commit until every count
    it affects holds its new value (p50, p99), and the ratio recount / latency;
then, on a smaller graph, the conflict rate and throughput of the combining counters
(default) against naive read-modify-write of cited_by, with several worker threads and
one paper per observer transaction (as concurrent per-paper runs, e.g. of several worker
processes, contend), next to the default batches.  Every run ends with a verification
against the recount.  ``--observer-batch 1`` measures one transaction per paper.

Targets (issue "Citation counts"):
  load with observers         >= 2,000 papers/s embedded
  edit reflected vs recount   >= 1,000x faster (the paper: ~1000x at low change rates)

Usage: python bench/bench_citations.py [--papers N] [--edits K] [--observer-batch B]
                                       [--compare-papers N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from observers.citations.counting import DEFAULT_MAX_BATCH
from observers.citations.demo import (
    DEFAULT_THREADS,
    DemoConfig,
    DemoResult,
    percentile,
    run_demo,
    summary,
)

TARGET_PAPERS_PER_S = 2000.0
TARGET_RATIO = 1000.0


def quiet(line: str) -> None:
    pass


def run(papers: int, edits: int, threads: int, combine: bool, hot: int | None, seed: int,
        verbose: bool, observer_batch: int = DEFAULT_MAX_BATCH) -> DemoResult:
    with tempfile.TemporaryDirectory(prefix="bench-citations-") as d:
        kwargs = {} if hot is None else {"hot": hot}
        cfg = DemoConfig(data_dir=d, papers=papers, edits=edits, seed=seed, threads=threads,
                         combine=combine, observer_batch=observer_batch,
                         **kwargs)  # type: ignore[arg-type]
        res = run_demo(cfg, (lambda line: print("    " + line, flush=True)) if verbose
                       else quiet)
    if not res.verified:
        raise SystemExit(f"FAILED: counts differ from the batch recount\n{summary(res)}")
    return res


def conflict_rate(res: DemoResult) -> tuple[int, int, float]:
    s = res.final_stats or res.load_stats
    assert s is not None
    attempts = s.processed + s.conflicts
    return s.conflicts, attempts, (s.conflicts / attempts if attempts else 0.0)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--papers", type=int, default=100_000)
    ap.add_argument("--edits", type=int, default=200)
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    ap.add_argument("--observer-batch", type=int, default=DEFAULT_MAX_BATCH,
                    help="most papers per refs-observer transaction (1: one per paper)")
    ap.add_argument("--compare-papers", type=int, default=10_000,
                    help="graph size of the combining-vs-naive comparison (0 skips it)")
    ap.add_argument("--compare-threads", type=int, nargs="+", default=[2, 4],
                    help="worker threads of the comparison runs (with 1 thread nothing is"
                    " ever contended in-process: both versions take the same path)")
    ap.add_argument("--hot", type=int, default=None, help="combining threshold (default: the"
                    " library's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    print(f"citations bench: {args.papers:,} papers, {args.edits} edits, {args.threads}"
          f" observer threads, up to {args.observer_batch:,} papers per observer"
          f" transaction, seed {args.seed}", flush=True)
    res = run(args.papers, args.edits, args.threads, True, args.hot, args.seed,
              not args.quiet, args.observer_batch)
    assert res.load is not None
    p50 = percentile(res.latencies, 50)
    p99 = percentile(res.latencies, 99)
    ratio50 = res.recount_s / p50 if p50 else float("inf")
    ratio99 = res.recount_s / p99 if p99 else float("inf")
    c, a, rate = conflict_rate(res)
    s = res.load_stats
    assert s is not None
    print(f"\n== {args.papers:,} papers, embedded, combining counters, {args.threads} threads,"
          f" batches of up to {args.observer_batch:,} papers ==")
    print(f"  load with observers (until counted)  {res.papers_per_s:10,.0f} papers/s   target"
          f" >= {TARGET_PAPERS_PER_S:,.0f}  {verdict(res.papers_per_s >= TARGET_PAPERS_PER_S)}")
    print(f"  load, writer alone (observers busy)  {res.load.papers_per_s:10,.0f} papers/s   target"
          f" >= {TARGET_PAPERS_PER_S:,.0f}"
          f"  {verdict(res.load.papers_per_s >= TARGET_PAPERS_PER_S)}")
    print(f"  batch recount (snapshot + MapReduce) {res.recount_s * 1000:10,.0f} ms"
          f"  ({res.first.recount.workers if res.first else 0} processes)")
    print(f"  edit reflected p50                   {p50 * 1000:10.1f} ms       ratio"
          f" {ratio50:7,.0f}x  target >= {TARGET_RATIO:,.0f}x  {verdict(ratio50 >= TARGET_RATIO)}")
    print(f"  edit reflected p99                   {p99 * 1000:10.1f} ms       ratio"
          f" {ratio99:7,.0f}x")
    print(f"  observer conflicts                   {c:10,} of {a:,} ({rate:.1%})")
    print(f"  observer transactions of many papers {s.batches:10,}   (of the load's {s.processed:,}"
          " paper and fold runs)")
    if args.compare_papers:
        print(f"\n== combining vs naive, {args.compare_papers:,} papers, 50 edits ==")
        print("  mode        threads  papers/txn  papers/s  conflicts              edit p50"
              "   edit p99")
        runs = [(t, combine, 1) for t in args.compare_threads for combine in (True, False)]
        runs.append((args.compare_threads[0], True, DEFAULT_MAX_BATCH))
        for threads, combine, batch in runs:
            r = run(args.compare_papers, 50, threads, combine, args.hot, args.seed, False,
                    batch)
            c, a, rate = conflict_rate(r)
            print(f"  {'combining' if combine else 'naive':<10}  {threads:7}"
                  f"  {'1' if batch == 1 else f'<= {batch:,}':>10}"
                  f"  {r.papers_per_s:8,.0f}  {c:6,} of {a:7,} ({rate:5.1%})"
                  f"  {percentile(r.latencies, 50) * 1000:6.1f} ms"
                  f"  {percentile(r.latencies, 99) * 1000:6.1f} ms", flush=True)
    print("\nverified (every run's counts equal the batch recount)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

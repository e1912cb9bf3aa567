"""A GC pass reads the rows written since the last one, not whole tables.

One embedded store of ``--rows`` rows; ``--hot`` of them are rewritten twice between
passes (each rewrite leaves a version to collect).  Two passes over the same work,
measured in the same run:

* whole table (the reference): the first pass after the store is opened again, which
  reads every row (what was written before the process started is not known);
* changed rows: the next pass, after the same rewrites, which reads only those rows.

Printed: rows read, versions removed, and the pass's work (its CPU time) for each, and
the ratio changed rows / whole table.  Both passes remove the same number of versions.

Usage: python bench/bench_gc_rows.py [--rows N] [--hot N]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from percolator import Client  # noqa: E402
from percolator._gc_table import GcPass  # noqa: E402

BATCH = 500


def rewrite(client: Client, rows: list[bytes], tag: bytes) -> None:
    """Each of ``rows`` written twice: a version below the next safe point to collect."""
    for round_ in (b"a", b"b"):
        for i in range(0, len(rows), BATCH):
            with client.transaction() as txn:
                for row in rows[i:i + BATCH]:
                    txn.set(row, b"v", tag + round_)


def a_pass(client: Client) -> GcPass:
    client.timestamp()  # the safe point moves past the rewrites (life time 0)
    return client.collect_garbage()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--hot", type=int, default=1_000)
    args = ap.parse_args()
    rows = [b"row%08d" % i for i in range(args.rows)]
    hot = sorted(random.Random(7).sample(rows, args.hot))
    with tempfile.TemporaryDirectory(prefix="bench-gc-rows-") as tmp:
        path = Path(tmp) / "store"
        with Client.embedded(path, gc_life_time=0.0, gc_interval=None) as client:
            rewrite(client, rows, b"load")
            a_pass(client)
        with Client.embedded(path, gc_life_time=0.0, gc_interval=None) as client:
            rewrite(client, hot, b"one")
            whole = a_pass(client)  # the first since the store was opened: whole table
            a_pass(client)  # the rows whose versions the last one removed: read once more
            rewrite(client, hot, b"two")
            changed = a_pass(client)
    print(f"table of {args.rows:,} rows, {args.hot:,} rewritten twice before each pass")
    print(f"{'pass':<14}{'rows read':>12}{'removed':>10}{'work (CPU)':>14}")
    for label, done in (("whole table", whole), ("changed rows", changed)):
        print(f"{label:<14}{done.rows:>12,}{done.removed:>10,}"
              f"{done.work_seconds * 1000:>11.1f} ms")
    ratio = changed.work_seconds / whole.work_seconds if whole.work_seconds else 0.0
    print(f"work, changed rows / whole table: {ratio:.3f}x "
          f"(rows: {changed.rows / max(whole.rows, 1):.3f}x)")
    return 0 if changed.removed == whole.removed else 1


if __name__ == "__main__":
    sys.exit(main())

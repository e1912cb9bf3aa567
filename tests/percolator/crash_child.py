"""A client process for crash tests: commits one multi-row transaction, or streams of them.

Usage:
  python crash_child.py once   TARGET [--lock-ttl S] [--two-phase]
      one 3-row transaction (6 cells), then "committed COMMIT_TS" and exit 0
  python crash_child.py stream TARGET [--count N] [--threads T] [--prefix P]
                                      [--lock-ttl S] [--two-phase]
      each of T threads commits up to N transactions, printing "acked T I" after each;
      the first error ends the process with exit code 1 (its name on stderr)

TARGET is a data directory (embedded) or "tcp:HOST:PORT" (remote).  ``--two-phase``
forces two-phase commit (``one_phase=False``); by default a transaction that fits one
step commits in one.  Failpoints come from PERCOLATOR_FAILPOINTS, so the process dies
exactly where the test asks.

A stream transaction (prefix P, thread T, number I) writes row ``P/T/I`` column ``v``
and the cell (``P-mirror``, ``T/I``) with the same value ``T/I``: two rows, so a torn
transaction shows as one without the other.
"""

from __future__ import annotations

import argparse
import sys
import threading

from percolator import Client

ROWS = (b"crash-a", b"crash-b", b"crash-c")


def open_client(target: str, lock_ttl: float, one_phase: bool) -> Client:
    if target.startswith("tcp:"):
        return Client.connect(target[4:], lock_ttl=lock_ttl, one_phase=one_phase)
    return Client.embedded(target, lock_ttl=lock_ttl, one_phase=one_phase)


def stream_cells(prefix: str, thread: int, i: int) -> dict[tuple[bytes, bytes], bytes]:
    name = b"%d/%06d" % (thread, i)
    return {(prefix.encode() + b"/" + name, b"v"): name,
            (prefix.encode() + b"-mirror", name): name}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["once", "stream"])
    parser.add_argument("target")
    parser.add_argument("--lock-ttl", type=float, default=3.0)
    parser.add_argument("--two-phase", action="store_true")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prefix", default="stream")
    args = parser.parse_args()
    client = open_client(args.target, args.lock_ttl, not args.two_phase)
    if args.mode == "once":
        txn = client.begin()
        for row in ROWS:
            txn.set(row, b"v", b"new-" + row)
            txn.set(row, b"big", b"x" * 1000)  # a value stored in the data column
        commit_ts = txn.commit()
        print(f"committed {commit_ts}", flush=True)
        client.close()
        return 0
    out = threading.Lock()
    failed: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for i in range(args.count):
                with client.transaction() as txn:
                    for (row, column), value in stream_cells(args.prefix, thread, i).items():
                        txn.set(row, column, value)
                with out:
                    print(f"acked {thread} {i}", flush=True)
        except BaseException as exc:  # noqa: BLE001  (reported below; the test reads it)
            failed.append(exc)

    threads = [threading.Thread(target=work, args=(t,), daemon=True)
               for t in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    if failed:
        print(f"failed: {type(failed[0]).__name__}: {failed[0]}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

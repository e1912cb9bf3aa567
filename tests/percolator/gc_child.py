"""A client process for the GC crash tests.

Usage:
  python gc_child.py once TARGET LOCK_TTL   # one 3-row two-phase transaction, then exit 0
  python gc_child.py hold TARGET            # begin a reader, print "reader START_TS", wait

TARGET is a data directory (embedded) or "tcp:HOST:PORT" (remote).  Failpoints come
from PERCOLATOR_FAILPOINTS, so the process dies exactly where the test asks.
"""

from __future__ import annotations

import sys

from percolator import Client

ROWS = (b"crash-a", b"crash-b", b"crash-c")


def open_client(target: str, lock_ttl: float) -> Client:
    if target.startswith("tcp:"):
        return Client.connect(target[4:], lock_ttl=lock_ttl, one_phase=False)
    return Client.embedded(target, lock_ttl=lock_ttl, one_phase=False)


def main() -> int:
    mode, target = sys.argv[1], sys.argv[2]
    if mode == "once":
        client = open_client(target, float(sys.argv[3]))
        txn = client.begin()
        for row in ROWS:
            txn.set(row, b"v", b"new-" + row)
            txn.set(row, b"big", b"x" * 1000)  # a value stored in the data column
        commit_ts = txn.commit()
        print(f"committed {commit_ts}", flush=True)
        client.close()
        return 0
    client = open_client(target, 3.0)
    reader = client.begin()
    reader.get(ROWS[0], b"v")
    print(f"reader {reader.start_ts}", flush=True)
    sys.stdin.readline()  # until the test kills us
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

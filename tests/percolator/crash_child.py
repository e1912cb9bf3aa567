"""A client process for crash tests: commits one multi-row transaction, or a stream of them.

Usage:
  python crash_child.py once   TARGET LOCK_TTL     # one 3-row transaction, then exit 0
  python crash_child.py stream TARGET COUNT        # COUNT transactions, printing "acked N"

TARGET is a data directory (embedded) or "tcp:HOST:PORT" (remote).  Failpoints come
from PERCOLATOR_FAILPOINTS, so the process dies exactly where the test asks.
"""

from __future__ import annotations

import sys

from percolator import Client

ROWS = (b"crash-a", b"crash-b", b"crash-c")


def open_client(target: str, lock_ttl: float) -> Client:
    if target.startswith("tcp:"):
        return Client.connect(target[4:], lock_ttl=lock_ttl)
    return Client.embedded(target, lock_ttl=lock_ttl)


def main() -> int:
    mode, target, arg = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "once":
        client = open_client(target, float(arg))
        txn = client.begin()
        for row in ROWS:
            txn.set(row, b"v", b"new-" + row)
            txn.set(row, b"big", b"x" * 1000)  # a value stored in the data column
        commit_ts = txn.commit()
        print(f"committed {commit_ts}", flush=True)
        client.close()
        return 0
    client = open_client(target, 3.0)
    for i in range(int(arg)):
        with client.transaction() as txn:
            txn.set(b"stream-%06d" % i, b"v", b"%d" % i)
            txn.set(b"stream-mirror", b"v%06d" % i, b"%d" % i)
        print(f"acked {i}", flush=True)
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

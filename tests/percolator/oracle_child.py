"""A client process for the oracle's multi-process and crash tests.

    python -m tests.percolator.oracle_child take ADDRESS THREADS COUNT
        THREADS threads each take COUNT timestamps; prints one JSON list per thread.
    python -m tests.percolator.oracle_child echo ADDRESS
        for each timestamp read on stdin, takes one and prints "SEEN MINE".
    python -m tests.percolator.oracle_child stream ADDRESS THREADS
        THREADS threads take timestamps until stdin says "stop", printing
        "THREAD INCARNATION TS" per timestamp.  A line "ADDRESS" on stdin means the
        server restarted there: threads move to it (incarnation + 1) after an error.
"""

from __future__ import annotations

import json
import sys
import threading

from bigtable_lite import StorageError
from percolator.oracle_client import RemoteOracle

WAIT = 30.0


def take(address: str, threads: int, count: int) -> None:
    results: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)
    with RemoteOracle(address, timeout=WAIT) as client:
        def run(i: int) -> None:
            start.wait(timeout=WAIT)
            results[i] = [client.get_timestamp() for _ in range(count)]

        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=2 * WAIT)
    for r in results:
        print(json.dumps(r))


def echo(address: str) -> None:
    with RemoteOracle(address, timeout=WAIT) as client:
        print("ready", flush=True)
        for line in sys.stdin:
            seen = int(line)
            print(seen, client.get_timestamp(), flush=True)


class Incarnations:
    """The current server address and its client; threads move on when told to."""

    def __init__(self, address: str) -> None:
        self.cond = threading.Condition()
        self.clients = [RemoteOracle(address, timeout=5.0)]
        self.stopped = False

    def current(self) -> tuple[int, RemoteOracle]:
        with self.cond:
            return len(self.clients) - 1, self.clients[-1]

    def wait_for_next(self, incarnation: int) -> bool:
        """After an error on ``incarnation``: wait (bounded) for a newer one or stop."""
        with self.cond:
            return self.cond.wait_for(
                lambda: self.stopped or len(self.clients) - 1 > incarnation, WAIT)

    def restart(self, address: str) -> None:
        with self.cond:
            self.clients.append(RemoteOracle(address, timeout=5.0))
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def stream(address: str, threads: int) -> None:
    servers = Incarnations(address)
    out = threading.Lock()

    def run(i: int) -> None:
        while not servers.stopped:
            incarnation, client = servers.current()
            try:
                ts = client.get_timestamp()
            except StorageError:
                if not servers.wait_for_next(incarnation):
                    return
                continue
            with out:
                sys.stdout.write(f"{i} {incarnation} {ts}\n")
                sys.stdout.flush()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for line in sys.stdin:
        if line.strip() == "stop":
            break
        servers.restart(line.strip())
    servers.stop()
    for w in workers:
        w.join(timeout=WAIT)
    with out:
        print("done", flush=True)


if __name__ == "__main__":
    mode, address = sys.argv[1], sys.argv[2]
    if mode == "take":
        take(address, int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "echo":
        echo(address)
    else:
        stream(address, int(sys.argv[3]))

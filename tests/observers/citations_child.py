"""A citation worker in a child process, crashed by the parent test in the middle of its work.

    python -m tests.observers.citations_child DATA_DIR failpoint K [BATCH]
        runs the citation observers embedded (BATCH papers per refs-observer transaction
        at most, default the library's); after K observer commits it arms
        ``worker.after_observer=exit``, so the next commit is followed by os._exit(86)
        before its notification is deleted.
    python -m tests.observers.citations_child DATA_DIR progress K [BATCH]
        prints ``progress N`` (flushed) once N >= K commits, then keeps working until the
        parent kills it with SIGKILL.

Exits 3 if K commits do not happen within the time limit (a bounded wait, never a hang).
"""

from __future__ import annotations

import sys
import time

from observers import Worker
from observers.citations import make_observers
from observers.citations.counting import DEFAULT_MAX_BATCH
from observers.citations.edits import CommitSignal
from percolator import Client, failpoints

LIMIT = 60.0


def main() -> int:
    data_dir, mode, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else DEFAULT_MAX_BATCH
    signal = CommitSignal()
    client = Client.embedded(data_dir, lock_ttl=1.0)
    worker = Worker(client, make_observers(on_commit=signal, batch=batch), threads=2,
                    heartbeat=0.1)
    worker.start()
    deadline = time.monotonic() + LIMIT
    seen = 0
    while seen < k:
        if time.monotonic() > deadline:
            return 3
        seen = signal.wait_after(seen, 0.5)
    if mode == "failpoint":
        failpoints.enable("worker.after_observer", "exit")
    else:
        print(f"progress {seen}", flush=True)
    while time.monotonic() < deadline:  # the failpoint or the parent ends this process
        signal.wait_after(signal.commits, 0.5)
    return 3


if __name__ == "__main__":
    raise SystemExit(main())

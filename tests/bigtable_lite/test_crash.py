"""kill -9 of `percolator serve` mid-stream loses no acknowledged write.

sync="none" (the default) promises exactly this: LevelDB has appended each batch to
its log with write(2) before the reply, so the data is in the page cache and survives
the process (not the machine).  Batches must also come back whole or not at all.
"""

from __future__ import annotations

import threading
from pathlib import Path

from bigtable_lite import Put, RemoteStore, RowMutation, Unavailable

from ..procs import ServerProcess

T = b"crash"
BATCH = 10
ACKED_BEFORE_KILL = 400
WAIT = 60.0


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    acked: list[int] = []  # batch numbers whose MutateRows returned
    sent: list[int] = []
    enough = threading.Event()
    failure: list[BaseException] = []

    def rows(batch: int) -> list[RowMutation]:
        return [RowMutation(T, b"b%06d-%02d" % (batch, k), (Put(b"c", batch + 1, b"%d" % batch),))
                for k in range(BATCH)]

    server = ServerProcess(tmp_path / "data").start()
    try:
        with RemoteStore(server.address, timeout=10.0) as client:
            def writer() -> None:
                batch = 0
                try:
                    while True:
                        sent.append(batch)
                        client.mutate_rows(rows(batch))
                        acked.append(batch)
                        if len(acked) * BATCH >= ACKED_BEFORE_KILL:
                            enough.set()
                        batch += 1
                except Unavailable:
                    return  # the server died under us: expected
                except BaseException as exc:  # noqa: BLE001 - reported below
                    failure.append(exc)
                    enough.set()

            thread = threading.Thread(target=writer, daemon=True)
            thread.start()
            assert enough.wait(WAIT), "the writer made no progress"
            server.kill()  # SIGKILL while the writer is mid-stream
            thread.join(WAIT)
            assert not thread.is_alive()
            assert failure == []
    finally:
        server.kill()

    assert len(acked) * BATCH >= ACKED_BEFORE_KILL
    # Same directory: the flock died with the process.
    with ServerProcess(tmp_path / "data") as again, \
            RemoteStore(again.address, timeout=10.0) as client:
        stored = {r.row: r.cells for r in client.scan_rows(T)}
    for batch in acked:
        for m in rows(batch):
            assert m.row in stored, f"acknowledged row {m.row!r} lost"
            assert stored[m.row][0].value == b"%d" % batch
    for batch in sent:  # the batch in flight at the kill: all of it or none of it
        present = [m.row in stored for m in rows(batch)]
        assert all(present) or not any(present), f"batch {batch} half applied"
    assert len(stored) % BATCH == 0

"""Every committed write is seen, whenever its column became observed: cells written before
any worker are backfilled, a writer committing while a worker starts has every commit
counted once, a column registered from the command line is notified before any worker
runs; damaged system rows stop nothing.  Embedded and remote (``client``), with the sum
observer, whose effect is not idempotent: a run too many or too few shows in the sum."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

from bigtable_lite import Put, RowMutation
from observers import Worker, cluster_status, format_status, list_parked
from observers._status import dumps
from percolator import Client, layout
from percolator._notify import log
from percolator.notifications import BUCKETS

from . import sum_observers
from .observer_fixtures import (  # noqa: F401
    REPO,
    client_fixture,
    draw_seed,
    eventually,
    running_node,
    server_fixture,
    write_cells,
)
from .sum_observers import VALUE

IDLE = 120.0


def write_values(client: Client, rows: list[bytes], rng: random.Random,
                 per_txn: int = 50) -> int:
    values = {r: rng.randrange(1, 1000) for r in rows}
    write_cells(client, {(r, VALUE): b"%d" % v for r, v in values.items()}, per_txn=per_txn)
    return sum(values.values())


def must_be_exact(client: Client, rows: list[bytes], expected: int) -> None:
    assert sum_observers.total(client) == expected, "the sum must be exact"
    runs = sum_observers.runs(client, rows)
    assert {r: n for r, n in runs.items() if n != 1} == {}, "each row observed exactly once"
    assert client.notifications.pending(client.table, [VALUE], 10**6) == 0


def test_cells_written_before_any_worker_are_all_processed(client: Client) -> None:
    """No column is observed while the cells are written: the worker's registration
    backfills them (in chunks: more rows than one chunk embedded), exactly once."""
    rng = random.Random(draw_seed("before any worker"))
    remote = client.store.__class__.__name__ != "LocalStore"
    rows = [b"b%05d" % i for i in range(600 if remote else 2500)]
    expected = write_values(client, rows, rng, per_txn=250)
    assert client.observed_columns == frozenset()
    worker = Worker(client, sum_observers.OBSERVERS, threads=2)
    stats = worker.run_until_idle(timeout=IDLE)
    must_be_exact(client, rows, expected)
    assert stats.processed == len(rows)
    [info] = client.notifications.columns(client.table)
    assert (info.column, info.backfill_pending, info.backfill_done) == (VALUE, False, len(rows))


def test_a_writer_committing_while_a_worker_starts_is_counted_exactly_once(
        client: Client) -> None:
    """The column becomes observed (the worker's registration) in the middle of a stream
    of commits: those below its timestamp are backfilled, those above leave their own
    notifications, and none is missed or counted twice."""
    rng = random.Random(draw_seed("writer while a worker starts"))
    written: list[tuple[bytes, int]] = []
    stop = threading.Event()
    failed: list[BaseException] = []

    def writer() -> None:
        i = 0
        try:
            while not stop.is_set() or i < 40:
                rows = [b"w%06d" % (i + k) for k in range(rng.randrange(1, 4))]
                values = [rng.randrange(1, 1000) for _ in rows]
                with client.transaction() as txn:
                    for row, value in zip(rows, values):
                        txn.set(row, VALUE, b"%d" % value)
                written.extend(zip(rows, values))
                i += len(rows)
        except BaseException as exc:  # surfaced below
            failed.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        eventually(lambda: len(written) >= 30, "the writer is under way")
        worker = Worker(client, sum_observers.OBSERVERS, threads=2).start()
        at = len(written)
        eventually(lambda: len(written) >= at + 60, "more commits after the registration")
    finally:
        stop.set()
        thread.join(60)
    assert not failed, failed
    try:
        worker.run_until_idle(timeout=IDLE)
    finally:
        worker.stop()
    print(f"{len(written)} rows committed, {at} before the worker started")
    must_be_exact(client, [r for r, _ in written], sum(v for _, v in written))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PERCOLATOR_FAILPOINTS", None)
    return subprocess.run([sys.executable, "-m", "percolator", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_register_from_the_command_line_write_then_start_a_worker(tmp_path: Path) -> None:
    """``percolator observers register`` before anything runs: the writes leave
    notifications (a fresh column: nothing to backfill), which a worker started later
    processes.  On a data directory and on a node."""
    rng = random.Random(draw_seed("register from the command line"))
    data = tmp_path / "data"
    done = cli("observers", "register", "value", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("value: registered at ")
    rows = [b"c%04d" % i for i in range(120)]
    with Client.embedded(data) as client:
        expected = write_values(client, rows, rng)
        assert client.notifications.pending(client.table, [VALUE], 10**6) == len(rows)
    listed = cli("observers", "list", "--data-dir", str(data))
    assert "value: registered at" in listed.stdout and f"{len(rows)} pending" in listed.stdout
    status = cli("status", "--data-dir", str(data))
    assert (f"columns with pending notifications but no live worker: value ({len(rows)}"
            " pending)") in status.stdout, status.stdout
    worked = cli("worker", "--data-dir", str(data), "--observers",
                 "tests.observers.sum_observers:OBSERVERS", "--until-idle", "--timeout", "60")
    assert worked.returncode == 0, worked.stderr
    with Client.embedded(data) as client:
        must_be_exact(client, rows, expected)

    with running_node(tmp_path / "node") as address:
        done = cli("observers", "register", "value", "--connect", address)
        assert done.returncode == 0, done.stderr
        with Client.connect(address) as client:
            expected = write_values(client, rows, rng)
            worker = Worker(client, sum_observers.OBSERVERS, threads=2)
            worker.run_until_idle(timeout=IDLE)
            must_be_exact(client, rows, expected)
        gone = cli("observers", "unregister", "value", "--connect", address)
        assert gone.returncode == 0 and "0 notifications still pending" in gone.stdout


def test_unregistering_stops_new_notifications_and_says_how_many_are_pending(
        client: Client) -> None:
    client.notifications.register(client.table, VALUE)
    write_cells(client, {(b"u%02d" % i, VALUE): b"1" for i in range(7)})
    at, pending = client.notifications.unregister(client.table, VALUE)
    assert pending == 7 and at > 0
    write_cells(client, {(b"after", VALUE): b"1"})
    assert client.notifications.pending(client.table, [VALUE], 100) == 7, "none for it"
    assert VALUE not in client.observed_columns


def test_damaged_system_rows_stop_no_worker(client: Client) -> None:
    """A worker row whose lease is null (the poison row of issue 16), a registration that
    does not decode, a log row that is not one, an entry that does not decode: each is
    logged and skipped or parked; two workers process everything else, and status works."""
    table = client.table
    poison = [
        RowMutation(table + b".workers", b"ghost", (
            Put(b"lease", 0, b'{"expires_ms": null}'), Put(b"stats", 0, b"{not json"))),
        RowMutation(layout.config_table(table), layout.OBSERVED_ROW,
                    (Put(b"other", 0, b"\x07junk"),)),
        RowMutation(layout.notify_table(table), b"\x05value\x00", (Put(b"x", 0, b"?"),)),
        RowMutation(layout.notify_table(table),
                    log.log_key(VALUE, log.bucket_of(b"bad"), client.timestamp()),
                    (Put(b"bad", 0, b"\x09" + bytes(8)),)),
    ]
    client.store.mutate_rows(poison)
    rows = [b"p%03d" % i for i in range(100)]
    rng = random.Random(draw_seed("damaged system rows"))
    workers = [Worker(client, sum_observers.OBSERVERS, threads=2, worker_id=f"w{i}")
               for i in range(2)]
    expected = write_values(client, rows, rng)
    for w in workers:
        w.start()
    try:
        eventually(lambda: sum(w.stats().processed for w in workers) >= len(rows),
                   "both work", timeout=IDLE)
        workers[0].run_until_idle(timeout=IDLE)
        assert sum(w.stats().buckets for w in workers) == BUCKETS
        status = cluster_status(client)
        text = format_status(status)
        assert "ghost" not in text, "the damaged stats row is skipped"
        assert {w.worker for w in status.workers if w.alive} == {"w0", "w1"}
    finally:
        for w in workers:
            w.stop()
    assert sum_observers.total(client) == expected
    assert set(sum_observers.runs(client, rows).values()) == {1}
    [parked] = list_parked(client)
    assert (parked.row, parked.column) == (b"bad", VALUE)
    assert json.loads(dumps(cluster_status(client)))["pending"] == 0, \
        "the foreign log row is not a notification"

"""A malformed system row stops nothing (issue 16).

Once, one worker lease ``{"expires_ms": null}`` raised a TypeError in every worker's
membership thread: the workers stayed up doing nothing, and a new worker crashed at
start.  Leases are gone (the node assigns buckets), but the node still keeps rows it
reads back: each worker's reported counters (``<table>.workers``; any ``write`` client
sends them with its Pull or Leave, so a JSON object of any shape arrives there) and the
notes of parked notifications (``<table>.parked``; sent with Park).  Raw writes of those
tables are the admin's (test_node_roles.py), but a bad row -- from a buggy or hostile
worker through the verbs, or an operator's raw write -- must claim nothing: it is
skipped or shown as unreadable wherever it is read (the node's member list, ``percolator
status``, the parked list), and workers started before and after it work on.
"""

from __future__ import annotations

import time

import pytest

from bigtable_lite import Put, RowMutation
from observers import Worker, observer
from observers._layout import decode_park_info
from observers._parking import list_parked
from observers._stats import WorkerStats
from observers._status import cluster_status, format_status
from percolator import Client, Transaction, layout
from percolator._notify import log as notify_log
from percolator._notify.parking import PARKED_INFO, PARKED_NOTE

from .observer_fixtures import client_fixture, eventually, server_fixture, write_cells  # noqa: F401

COL = b"p"
STATS = [b'{"worker": "x", "updated_ms": null}', b'{"worker": "x", "updated_ms": 1e400}',
         b'{"worker": "x", "updated_ms": NOW, "processed": "many"}',
         b'{"worker": 7, "updated_ms": NOW}', b'{"updated_ms": NOW}',
         b'{"worker": "x", "updated_ms": NOW, "latency_p50_ms": "fast"}',
         b'{"worker": "x", "updated_ms": NOW, "threads": true}']
"""JSON objects, as the node takes them from any worker, of the wrong shape (NOW: a
fresh ``updated_ms``, so the node keeps the row instead of forgetting a gone worker)."""
UNREADABLE = [b"[1]", b"nope", b"\xff", b"", b"null"]
"""Not even a JSON object: only a raw (admin) write or a damaged store leaves these."""
NOTES = [b'{"failures": "5"}', b'{"failures": true}', b'{"parked_at_ms": null}',
         b'{"error": 7}', b'{"worker": []}', b"[]", b"\xff", b""]


@observer(COL)
def mark(txn: Transaction, row: bytes, column: bytes) -> None:
    txn.set(row, b"done", b"1")


def fresh(raw: bytes) -> bytes:
    return raw.replace(b"NOW", b"%d" % (time.time() * 1000))


def poison(client: Client, prefix: str) -> None:
    """Counters of made-up workers through the Leave verb, and rows no verb would write."""
    stats = [fresh(raw) for raw in STATS]
    for i, raw in enumerate(stats):
        client.notifications.leave(client.table, f"{prefix}-verb-{i:02d}", (), raw)
    workers, parked = client.table + layout.WORKERS_SUFFIX, client.table + layout.PARKED_SUFFIX
    entry = notify_log.encode_entry(notify_log.WRITE, 1)
    rows = [RowMutation(workers, f"{prefix}-raw-{i:02d}".encode(), (Put(b"stats", 0, raw),))
            for i, raw in enumerate(stats + UNREADABLE)]
    rows += [RowMutation(parked, f"{prefix}-parked-{i:02d}".encode(), (
        Put(PARKED_NOTE + COL, 1, entry), Put(PARKED_INFO + COL, 0, raw)))
        for i, raw in enumerate(NOTES)]
    client.store.mutate_rows(rows)


@pytest.mark.parametrize("raw", STATS + UNREADABLE)
def test_malformed_worker_stats_are_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        WorkerStats.from_json(fresh(raw))


@pytest.mark.parametrize("raw", NOTES)
def test_a_malformed_park_note_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match="malformed park info"):
        decode_park_info(raw)


def test_malformed_counters_and_park_notes_stop_no_worker(client: Client) -> None:
    poison(client, "before")
    status = cluster_status(client)
    assert not any(w.alive for w in status.workers) and format_status(status)
    listed = {w.worker: w.stats for w in status.workers}
    kept = {f"before-{kind}-{i:02d}" for kind in ("verb", "raw") for i in range(2, len(STATS))}
    assert kept <= set(listed), "rows with a fresh updated_ms are listed, not forgotten"
    assert all(stats is None for stats in listed.values())  # none is believed
    parked = [p for p in list_parked(client) if p.row.startswith(b"before-parked")]
    assert len(parked) == len(NOTES) and all(p.info is None for p in parked)
    a = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=30.0, worker_id="wa")
    a.start()
    b = Worker(client, [mark], threads=2, heartbeat=0.05, lease_ttl=30.0, worker_id="wb")
    try:
        eventually(lambda: bool(a.ownership.owned.get(COL)), "a owns buckets")
        poison(client, "during")  # while its feed runs
        b.start()
        eventually(lambda: bool(a.ownership.owned.get(COL)) and bool(
            b.ownership.owned.get(COL)), "both own buckets: their feeds run on")
        rows = [b"row%03d" % i for i in range(60)]
        write_cells(client, {(r, COL): b"x" for r in rows})
        done = a.run_until_idle(timeout=60).processed + b.run_until_idle(timeout=60).processed
        assert done == len(rows)
        status = cluster_status(client)
        assert {w.worker for w in status.workers if w.alive} == {"wa", "wb"}
        assert format_status(status)
    finally:
        a.stop()
        b.stop()


DAMAGED = b"broken"
"""An observed column whose registration record is damaged (a raw write)."""
UNOBSERVABLE = b"x" * 300
"""A registration record under a column no one can observe (over 255 bytes, the most a
log entry's key holds): commits writing that column once failed, every one of them."""


def test_a_damaged_registration_is_logged_once_shown_and_stops_nothing(
        client: Client, caplog: pytest.LogCaptureFixture) -> None:
    """A registration record that does not decode is logged once and read as a column
    observed with no partition prefix and no backfill: commits to it still leave
    entries (skipping it would lose them), the other columns' workers work on, status
    shows it as damaged, and registering the column again rewrites the record.  One
    under a column that cannot be observed is logged once and skipped: commits to that
    column go on, without entries."""
    record = notify_log.encode_registration(notify_log.Registration(UNOBSERVABLE, 5))
    client.store.mutate_rows([RowMutation(layout.config_table(client.table),
                                          layout.OBSERVED_ROW, (Put(DAMAGED, 0, b"\x07x"),
                                                                Put(UNOBSERVABLE, 0, record)))])
    with caplog.at_level("ERROR"):
        client.register_observed_columns([COL])
        rows = [b"row%03d" % i for i in range(20)]
        write_cells(client, {(r, c): b"x" for r in rows for c in (COL, DAMAGED, UNOBSERVABLE)})
        worker = Worker(client, [mark], threads=2, heartbeat=0.05, worker_id="wd")
        assert worker.run_until_idle(timeout=60).processed == len(rows)
        status = cluster_status(client)
    damaged = [r for r in caplog.records if "registration of" in r.getMessage()]
    assert len(damaged) == 2, [r.getMessage() for r in damaged]  # once each, not per read
    [info] = [c for c in status.columns if c.column == DAMAGED]
    assert info.damaged and info.pending == len(rows), "still observed: its entries kept"
    [skipped] = [c for c in status.columns if c.column == UNOBSERVABLE]
    assert skipped.damaged and skipped.pending == 0, "no column to observe: skipped"
    assert "broken: damaged registration" in format_status(status)
    client.register_observed_columns([DAMAGED])  # the repair
    [info] = [c for c in cluster_status(client).columns if c.column == DAMAGED]
    assert not info.damaged and info.registered_at > 0

"""Status: the observers' view of a cluster, for ``percolator status`` and for Python.

Gathers what workers persisted (``<table>.workers``: lease and stats per worker), the
parked notifications and the notify table's pending count; no worker needs to be
reachable, only the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from bigtable_lite import ScanRequest
from percolator import Client
from percolator.layout import notify_table

from . import layout, notifications, parking
from .layout import Lease
from .parking import ParkedNotification
from .stats import WorkerStats


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    worker: str
    alive: bool
    lease: Lease | None
    stats: WorkerStats | None


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    workers: tuple[WorkerStatus, ...]
    pending_cells: int
    pending_versions: int
    parked: tuple[ParkedNotification, ...]
    observed_columns: frozenset[bytes]


def cluster_status(client: Client, *, parked_limit: int = 1000,
                   count_cap: int = 1_000_000) -> ClusterStatus:
    store = client.store
    now = client.clock.now_ms()
    rows: dict[str, tuple[Lease | None, WorkerStats | None]] = {}
    for row in store.scan(ScanRequest(layout.workers_table(client.table), max_versions=1)):
        worker = row.row.decode("utf-8", "replace")
        lease: Lease | None = None
        stats: WorkerStats | None = None
        for cell in row.cells:
            try:
                if cell.column == layout.LEASE_COLUMN:
                    lease = layout.decode_lease(worker, cell.value)
                elif cell.column == layout.STATS_COLUMN:
                    stats = WorkerStats.from_json(cell.value)
            except (ValueError, KeyError, TypeError):
                continue
        rows[worker] = (lease, stats)
    workers = tuple(WorkerStatus(w, lease is not None and lease.expires_ms > now, lease, stats)
                    for w, (lease, stats) in sorted(rows.items()))
    cells, versions = notifications.count_pending(store, notify_table(client.table),
                                                  client.observed_columns, cap=count_cap)
    parked = tuple(parking.list_cells(store, client.table, limit=parked_limit))
    return ClusterStatus(workers, cells, versions, parked, client.observed_columns)


def format_status(status: ClusterStatus) -> str:
    """Human-readable report: one line per worker, then totals and parked cells."""
    observed = ", ".join(repr(c) for c in sorted(status.observed_columns)) or "none"
    lines = [f"observed columns: {observed}",
             (f"pending notifications: {status.pending_cells} cells"
              f" ({status.pending_versions} versions)"),
             f"parked notifications: {len(status.parked)} cells"]
    header = ("worker", "state", "found", "processed", "skipped", "conflicts", "failures",
              "parked", "backlog", "p50 ms", "p99 ms")
    table: list[tuple[str, ...]] = [header]
    totals = dict.fromkeys(("found", "processed", "skipped", "conflicts", "failures", "parked",
                            "backlog"), 0)
    for w in status.workers:
        s = w.stats
        state = "alive" if w.alive else (s.state if s is not None and s.state == "stopped"
                                         else "gone")
        if s is None:
            table.append((w.worker, state, *("-",) * (len(header) - 2)))
            continue
        for name in totals:
            totals[name] += int(getattr(s, name))
        table.append((w.worker, state, *(str(getattr(s, n)) for n in totals),
                      f"{s.latency_p50_ms:.1f}", f"{s.latency_p99_ms:.1f}"))
    if len(table) > 1:
        table.append(("total", "", *(str(v) for v in totals.values()), "", ""))
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        lines.append("")
        lines.extend("  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i])
                               for i, c in enumerate(r)).rstrip() for r in table)
    else:
        lines.append("no workers have reported")
    if status.parked:
        lines.append("")
        lines.append("parked (replay with `percolator notifications replay`):")
        for p in status.parked:
            info = p.info
            why = f"{info.failures} failures: {info.error}" if info else "no note"
            lines.append(f"  ({p.row!r}, {p.column!r}) {len(p.versions)} versions -- {why}")
    return "\n".join(lines)

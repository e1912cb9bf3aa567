"""Status: the observers' view of a cluster, for ``percolator status`` and for Python.

Asks the backend's notification verbs (the node, or the embedded data directory): the
observed columns with their backfill progress and pending entries, the live workers
and every worker's last reported counters, the parked notifications.  No worker needs
to be reachable.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from percolator import Client
from percolator.notifications import ColumnInfo

from ._parking import ParkedNotification, list_parked
from ._stats import WorkerStats

__all__ = ["ClusterStatus", "WorkerStatus", "cluster_status", "format_status"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    worker: str
    alive: bool
    buckets: int
    stats: WorkerStats | None


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    columns: tuple[ColumnInfo, ...]
    workers: tuple[WorkerStatus, ...]
    parked: tuple[ParkedNotification, ...]

    @property
    def observed_columns(self) -> frozenset[bytes]:
        return frozenset(c.column for c in self.columns if c.registered_at)

    @property
    def pending(self) -> int:
        return sum(c.pending for c in self.columns)

    @property
    def unattended(self) -> tuple[ColumnInfo, ...]:
        """Columns with pending notifications and no live worker observing them."""
        return tuple(c for c in self.columns if c.pending and not c.workers)


def _stats(worker: str, raw: bytes) -> WorkerStats | None:
    if not raw:
        return None
    try:
        return WorkerStats.from_json(raw)
    except (ValueError, TypeError) as exc:  # reported by a worker: never trusted blindly
        log.warning("counters of worker %r skipped: %s", worker, exc)
        return None


def cluster_status(client: Client, *, parked_limit: int = 1000) -> ClusterStatus:
    n = client.notifications
    columns = tuple(n.columns(client.table))
    workers = tuple(WorkerStatus(m.worker, m.alive, m.owned, _stats(m.worker, m.stats))
                    for m in n.members(client.table))
    return ClusterStatus(columns, workers, tuple(list_parked(client, parked_limit)))


def _text(column: bytes) -> str:
    return column.decode("utf-8", "backslashreplace")


def format_column(c: ColumnInfo) -> str:
    state = f"registered at {c.registered_at}" if c.registered_at else "not observed"
    if c.damaged:
        state = (f"damaged registration ({c.damaged}): observed with no partition prefix and"
                 " no backfill until registered again")
    line = (f"  {_text(c.column)}: {state}, {c.pending:,} pending, {len(c.workers)} live"
            f" worker{'' if len(c.workers) == 1 else 's'}")
    if c.backfill_pending:
        line += (f"; backfill of {_text(c.column)}: {c.backfill_done:,} of"
                 f" ~{c.backfill_estimated:,} rows")
    return line


def format_status(status: ClusterStatus) -> str:
    """Human-readable report: columns, workers, then parked cells."""
    lines = ["observed columns:" if status.columns else "observed columns: none"]
    lines += [format_column(c) for c in status.columns]
    if status.unattended:
        lines.append("columns with pending notifications but no live worker: " + ", ".join(
            f"{_text(c.column)} ({c.pending:,} pending)" for c in status.unattended))
    lines.append(f"parked notifications: {len(status.parked)} cells")
    header = ("worker", "state", "buckets", "found", "processed", "skipped", "conflicts",
              "failures", "parked", "backlog", "p50 ms", "p99 ms")
    table: list[tuple[str, ...]] = [header]
    names = ("found", "processed", "skipped", "conflicts", "failures", "parked", "backlog")
    totals = dict.fromkeys(names, 0)
    for w in status.workers:
        s = w.stats
        state = "alive" if w.alive else (s.state if s is not None and s.state == "stopped"
                                         else "gone")
        if s is None:
            table.append((w.worker, state, str(w.buckets), *("-",) * (len(header) - 3)))
            continue
        for name in totals:
            totals[name] += int(getattr(s, name))
        table.append((w.worker, state, str(w.buckets) if w.alive else "-",
                      *(str(getattr(s, n)) for n in names),
                      f"{s.latency_p50_ms:.1f}", f"{s.latency_p99_ms:.1f}"))
    if len(table) > 1:
        table.append(("total", "", "", *(str(v) for v in totals.values()), "", ""))
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
            lines.append(f"  ({p.row!r}, {p.column!r}) {len(p.entries)} entries -- {why}")
    return "\n".join(lines)


def status_json(status: ClusterStatus) -> dict[str, object]:
    """The same as one JSON-able object."""
    return {
        "columns": [{"column": _text(c.column), "registered_at": c.registered_at,
                     "partition_prefix": c.partition_prefix.hex(),
                     "backfill": ({"done": c.backfill_done, "estimated": c.backfill_estimated}
                                  if c.backfill_pending else None),
                     "pending": c.pending, "workers": list(c.workers),
                     "damaged": c.damaged or None}
                    for c in status.columns],
        "observed_columns": sorted(_text(c) for c in status.observed_columns),
        "pending": status.pending,
        "unattended": [_text(c.column) for c in status.unattended],
        "workers": [{"worker": w.worker, "alive": w.alive, "buckets": w.buckets,
                     "stats": w.stats.as_dict() if w.stats else None}
                    for w in status.workers],
        "parked": [{"row": _text(p.row), "column": _text(p.column),
                    "entries": len(p.entries),
                    "failures": p.info.failures if p.info else None,
                    "error": p.info.error if p.info else None}
                   for p in status.parked],
    }


def dumps(status: ClusterStatus) -> str:
    return json.dumps(status_json(status), sort_keys=True)

"""Metrics: every Prometheus metric a percolator process exports, defined here and only here.

Two kinds, both in Prometheus naming (``percolator_`` prefix, base units, ``_total``
for counters), after TiKV's ``tikv_grpc_msg_duration_seconds`` and Fluo's per-observer
``tx_collisions``:

* **counted where it happens** -- counters, gauges and histograms updated by the code
  they measure (gRPC calls, the node's batched commands, commits, lock resolutions,
  observer runs), of the cheap types of ``percolator.metric_types``, registered in
  ``prometheus_client``'s default registry: a program embedding a client exports them
  with its own metrics;
* **read when scraped** -- figures a part already keeps (the oracle's counters, the
  data directory's size, a worker's pending notifications): each
  provider yields them through the ``*_families`` functions below, so nothing on the
  hot path counts them twice and their names are still defined here.

An endpoint (``percolator.metrics_endpoint``, ``--metrics-listen``) serves both.
``docs/operations.md`` lists every metric; ``tests/test_metrics.py`` checks that list,
the Grafana dashboard beside it, and a real node's and worker's scrape against
:data:`NAMES`.

Cost: an update is one lock and an addition (``metric_types``); hot paths bind their
labelled children once.  bench/README.md has the cost, measured by
bench/bench_metrics.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from .metric_types import Family, counter, gauge, histogram

__all__ = [
    "COMMAND_SECONDS", "COMMANDS", "GRPC_MSG_SECONDS", "GRPC_REQUESTS",
    "GRPC_STREAMS", "LOCK_RESOLUTIONS", "NAMES", "NODE_BATCH_COMMANDS", "OBSERVER_COLLISIONS",
    "OBSERVER_FAILURES", "OBSERVER_PARKED", "OBSERVER_PROCESSED", "OBSERVER_SECONDS",
    "ORACLE_BATCH", "TXN_COMMIT_SECONDS", "CLIENT_BATCH_COMMANDS", "CLIENT_BATCH_SECONDS",
    "gc_families", "observer_pending_family", "oracle_families", "store_families",
]

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: 100 us (an embedded step) to 30 s (a lock wait)."""
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
"""Items per batch."""


# --- gRPC, at the server (percolator._metrics_rpc) ---------------------------------------

GRPC_REQUESTS = counter(
    "percolator_grpc_requests_total",
    "gRPC calls the server finished, by service, method and status code.",
    ["service", "method", "code"])
GRPC_MSG_SECONDS = histogram(
    "percolator_grpc_msg_duration_seconds",
    "Seconds the server took per answer: a unary call; each message of a stream (since"
    " the request it answers or the previous message); a stream's failure.",
    ["service", "method", "code"], buckets=LATENCY_BUCKETS)
GRPC_STREAMS = gauge(
    "percolator_grpc_streams_open",
    "Streaming calls open at the server (each holds a server thread).",
    ["service", "method"])

# --- the node's batched commands (percolator._node_service) -------------------------------

COMMANDS = counter(
    "percolator_node_commands_total",
    "Batched commands the node executed, by kind and outcome (ok, conflict, rolled_back,"
    " or the status code of a failed command).",
    ["kind", "outcome"])
COMMAND_SECONDS = histogram(
    "percolator_node_command_duration_seconds",
    "Seconds the node took per batched command, by kind (merged commands: their group's).",
    ["kind"], buckets=LATENCY_BUCKETS)
NODE_BATCH_COMMANDS = histogram(
    "percolator_node_batch_commands",
    "Commands per batch the node received.", buckets=SIZE_BUCKETS)

# --- a client's batches to a node (percolator._node_client) -------------------------------

CLIENT_BATCH_SECONDS = histogram(
    "percolator_client_batch_duration_seconds",
    "Seconds from sending a batch to a node to its reply, by status code.",
    ["code"], buckets=LATENCY_BUCKETS)
CLIENT_BATCH_COMMANDS = histogram(
    "percolator_client_batch_commands",
    "Commands per batch this client sent to a node.", buckets=SIZE_BUCKETS)

# --- transactions (percolator._driver: where the client runs) -----------------------------

TXN_COMMIT_SECONDS = histogram(
    "percolator_txn_commit_duration_seconds",
    "Seconds a transaction's commit took, by path (one_phase, two_phase) and outcome"
    " (committed, conflict, undetermined, error); its _count counts commits.",
    ["path", "outcome"], buckets=LATENCY_BUCKETS)

# --- lock resolution (percolator._steps.resolve_lock: where the steps run) -------------------

LOCK_RESOLUTIONS = counter(
    "percolator_lock_resolutions_total",
    "Locks of other transactions met by reads and prewrites, by what became of them:"
    " rolled_forward (owner committed), rolled_back (owner rolled back or expired), live"
    " (owner alive: left to wait on).",
    ["result"])

# --- the oracle --------------------------------------------------------------------------

ORACLE_BATCH = histogram(
    "percolator_oracle_batch_size",
    "Timestamps per oracle request a node served: the timestamp commands of one batch"
    " (merged), a TimestampOracle request.", buckets=SIZE_BUCKETS)

# --- observers (observers._worker: per observer, in the worker's process) -------------------

OBSERVER_PROCESSED = counter(
    "percolator_observer_notifications_processed_total",
    "Notified cells whose observer ran and committed.", ["observer"])
OBSERVER_COLLISIONS = counter(
    "percolator_observer_collisions_total",
    "Observer transactions that lost a write-write conflict and were retried (Fluo's"
    " tx_collisions).", ["observer"])
OBSERVER_FAILURES = counter(
    "percolator_observer_failures_total",
    "Observer runs that raised (retried with backoff, parked after the last).",
    ["observer"])
OBSERVER_PARKED = counter(
    "percolator_observer_notifications_parked_total",
    "Notified cells parked after their observer kept failing.", ["observer"])
OBSERVER_SECONDS = histogram(
    "percolator_observer_duration_seconds",
    "Seconds per observer transaction: the observer's run and its commit.",
    ["observer"], buckets=LATENCY_BUCKETS)


# --- read when scraped ---------------------------------------------------------------------

_SCRAPED: dict[str, str] = {
    "percolator_oracle_timestamps": "counter",
    "percolator_oracle_requests": "counter",
    "percolator_oracle_persisted_high_water": "gauge",
    "percolator_store_disk_bytes": "gauge",
    "percolator_store_log_syncs": "counter",
    "percolator_store_deferred_writes": "counter",
    "percolator_observer_notifications_pending": "gauge",
    "percolator_gc_safe_point": "gauge",
    "percolator_gc_passes": "counter",
    "percolator_gc_versions_removed": "counter",
    "percolator_gc_locks_resolved": "counter",
    "percolator_gc_seconds": "counter",
}


def oracle_families(timestamps: int, requests: int, persisted_high_water: int
                    ) -> list[Metric]:
    """The oracle's own figures since the process opened it (``Oracle.stats()``)."""
    return [
        CounterMetricFamily("percolator_oracle_timestamps",
                            "Timestamps the oracle handed out.", value=timestamps),
        CounterMetricFamily("percolator_oracle_requests",
                            "Requests to the oracle (one per batch of timestamps).",
                            value=requests),
        GaugeMetricFamily("percolator_oracle_persisted_high_water",
                          "Highest timestamp the oracle may have handed out, persisted"
                          " (a restart starts above it).", value=persisted_high_water),
    ]


def store_families(disk_bytes: int, log_syncs: tuple[int, int] | None = None
                   ) -> list[Metric]:
    """The data directory's LevelDB files; under ``--sync always``, ``log_syncs``: the
    fsyncs of the log that the event loop's writes shared, and those writes."""
    families: list[Metric] = [GaugeMetricFamily(
        "percolator_store_disk_bytes", "Bytes of the data directory's LevelDB files on disk.",
        value=disk_bytes)]
    if log_syncs is not None:
        families += [
            CounterMetricFamily("percolator_store_log_syncs",
                                "fsync passes over the log shared by deferred writes.",
                                value=log_syncs[0]),
            CounterMetricFamily("percolator_store_deferred_writes",
                                "Writes of the event loop that skipped their own fsync"
                                " (answered once a shared one covered them).",
                                value=log_syncs[1])]
    return families


def gc_families(safe_point: int, passes: int, removed: int, locks_resolved: int,
                seconds: float) -> list[Metric]:
    """Garbage collection in this process since it opened the store (``Collector``)."""
    return [
        GaugeMetricFamily("percolator_gc_safe_point",
                          "The GC safe point: snapshots below it may have been collected.",
                          value=safe_point),
        CounterMetricFamily("percolator_gc_passes", "Garbage-collection passes run.",
                            value=passes),
        CounterMetricFamily("percolator_gc_versions_removed",
                            "Versions GC removed: write records, long values, rollback"
                            " markers.", value=removed),
        CounterMetricFamily("percolator_gc_locks_resolved",
                            "Locks below the safe point GC rolled forward or back.",
                            value=locks_resolved),
        CounterMetricFamily("percolator_gc_seconds",
                            "Seconds GC passes took, rate-limiting pauses included.",
                            value=seconds),
    ]


def observer_pending_family(pending: Mapping[str, int]) -> Metric:
    """Notified cells waiting for each observer (as its worker last counted them)."""
    family = GaugeMetricFamily("percolator_observer_notifications_pending",
                               "Notified cells pending for the observer.",
                               labels=["observer"])
    for name, count in sorted(pending.items()):
        family.add_metric([name], count)
    return family


_COUNTED: tuple[Family[Any], ...] = (
    GRPC_REQUESTS, GRPC_MSG_SECONDS, GRPC_STREAMS, COMMANDS, COMMAND_SECONDS,
    NODE_BATCH_COMMANDS, CLIENT_BATCH_SECONDS, CLIENT_BATCH_COMMANDS, TXN_COMMIT_SECONDS,
    LOCK_RESOLUTIONS, ORACLE_BATCH, OBSERVER_PROCESSED, OBSERVER_COLLISIONS,
    OBSERVER_FAILURES, OBSERVER_PARKED, OBSERVER_SECONDS)

NAMES: frozenset[str] = frozenset(
    [m.name for m in _COUNTED]
    + [f"{name}_total" if kind == "counter" else name for name, kind in _SCRAPED.items()])
"""Every metric name a percolator process may export (histograms without their
``_bucket``/``_sum``/``_count`` suffixes)."""


Provider = Callable[[], Iterable[Metric]]
"""What a part gives an endpoint: its scraped families, computed when asked."""

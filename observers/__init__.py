"""observers: incremental processing -- user code that runs when observed cells change.

Percolator section 2.4, with what Apache Fluo learned::

    from observers import observer, Worker

    @observer("paper:refs")
    def on_refs(txn, row, column): ...      # runs in a transaction; its commit acks the change

    worker = Worker(client, [on_refs], threads=4)
    worker.run_until_idle(timeout=60)       # until no notification is pending
    worker.start(); worker.stop()           # in the background; stop() finishes in-flight work

The protocol and its guarantees are in docs/observers.md.  ``observers.citations``
is the example application.
"""

from ._compaction import compact_notifications
from ._layout import ParkInfo
from ._parking import ParkedNotification, list_parked, replay_parked
from ._plugins import ENTRY_POINT_GROUP, load_entry_points, load_registry, load_spec
from ._registry import FunctionObserver, Observer, ObserverRegistry, Placement, observer
from ._retry import Backoff, through_outages
from ._stats import WorkerStats
from ._status import (
    ClusterStatus,
    WorkerStatus,
    cluster_status,
    format_column,
    format_status,
    status_json,
)
from ._worker import Worker
from .errors import (
    ConfigurationError,
    ObserverError,
    PluginError,
    WorkerError,
    WorkerFailed,
    WorkerTimeout,
)

__all__ = [
    "ENTRY_POINT_GROUP", "Backoff", "ClusterStatus", "ConfigurationError", "FunctionObserver",
    "Observer", "ObserverError", "ObserverRegistry", "ParkInfo", "ParkedNotification", "Placement",
    "PluginError", "Worker", "WorkerError", "WorkerFailed", "WorkerStats", "WorkerStatus",
    "WorkerTimeout", "cluster_status", "compact_notifications", "format_status",
    "list_parked", "load_entry_points", "load_registry", "load_spec", "observer",
    "replay_parked", "format_column", "status_json", "through_outages",
]

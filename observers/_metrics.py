"""A worker's metrics per observer: the ``percolator_observer_*`` metrics, fed by the worker.

The metrics themselves are defined in ``percolator.metrics`` (the one place every
metric name lives); this module binds their children per observer once and counts the
worker's events on them, named by the observer's name (Fluo's per-observer
``tx_collisions`` is the model).  Pending notifications are counted when scraped, per
observed column, by the node's notification log (the ``Pending`` verb): the whole
cluster's, as every worker of the column sees them (capped; dashboards take their
``max``).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from percolator import Client
from percolator.metric_types import CounterChild, HistogramChild
from percolator.metrics import (
    OBSERVER_COLLISIONS,
    OBSERVER_FAILURES,
    OBSERVER_PARKED,
    OBSERVER_PROCESSED,
    OBSERVER_SECONDS,
    observer_pending_family,
)

from ._registry import ObserverRegistry

__all__ = ["PENDING_CAP", "ObserverMetrics"]

PENDING_CAP = 100_000
"""Most pending entries a scrape counts per observer (a count of the node's log)."""


class _One:
    __slots__ = ("processed", "collisions", "failures", "parked", "seconds")

    def __init__(self, name: str) -> None:
        self.processed: CounterChild = OBSERVER_PROCESSED.labels(name)
        self.collisions: CounterChild = OBSERVER_COLLISIONS.labels(name)
        self.failures: CounterChild = OBSERVER_FAILURES.labels(name)
        self.parked: CounterChild = OBSERVER_PARKED.labels(name)
        self.seconds: HistogramChild = OBSERVER_SECONDS.labels(name)


class ObserverMetrics:
    """The metrics of a registry's observers, by the column each observes.  Thread-safe."""

    def __init__(self, registry: ObserverRegistry) -> None:
        self._names = {column: obs.name for column in registry.columns
                       if (obs := registry.get(column)) is not None}
        self._by_column = {column: _One(name) for column, name in self._names.items()}

    def processed(self, column: bytes, seconds: float | None) -> None:
        """A cell processed; ``seconds``: its transaction's time, if not counted yet."""
        one = self._by_column[column]
        one.processed.inc()
        if seconds is not None:
            one.seconds.observe(seconds)

    def collision(self, column: bytes) -> None:
        self._by_column[column].collisions.inc()

    def failure(self, column: bytes) -> None:
        self._by_column[column].failures.inc()

    def parked(self, column: bytes) -> None:
        self._by_column[column].parked.inc()

    def pending(self, client: Client) -> Iterable[Metric]:
        """``percolator_observer_notifications_pending`` of each observer, counted now."""
        counts = {name: client.notifications.pending(client.table, [column], PENDING_CAP)
                  for column, name in self._names.items()}
        return [observer_pending_family(counts)]

"""Metric types for the hot path: counters, gauges and histograms exported by prometheus_client.

Why not ``prometheus_client``'s own ``Counter`` and ``Histogram``: an observation there
is several Python calls (checks that the metric has its labels, a lock per value, a
Python loop over the buckets) -- ~9,000 instructions per histogram observation, 4% of
an embedded single-row transaction by callgrind (bench/bench_metrics.py).  Here an
update is one lock and an addition (a histogram's bucket found by ``bisect``, in C),
and the families are handed to ``prometheus_client``'s registry as a collector, so
the exposition format, the endpoint and the process collectors stay the library's.

Every value is updated under its child's lock: counts are exact across threads.
A family's children are created on first use of their label values and kept (bind
them once on a hot path: :meth:`Family.labels` is a dictionary lookup).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

__all__ = ["CounterChild", "Family", "GaugeChild", "HistogramChild", "counter", "gauge",
           "histogram"]


class CounterChild:
    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount


class GaugeChild:
    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class HistogramChild:
    __slots__ = ("_bounds", "_counts", "_lock", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self._lock = threading.Lock()
        self.sum = 0.0

    def observe(self, value: float) -> None:
        i = bisect_left(self._bounds, value)  # the first bound >= value: "le" is inclusive
        with self._lock:
            self._counts[i] += 1
            self.sum += value

    def snapshot(self) -> tuple[list[int], float]:
        with self._lock:
            return list(self._counts), self.sum


C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)


class Family(Generic[C]):
    """A metric and its children by label values; a ``prometheus_client`` collector."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], kind: str,
                 buckets: Sequence[float] = ()) -> None:
        self.name = name  # as exported (a counter's with its _total)
        self.documentation = documentation
        self.label_names = tuple(labels)
        self.kind = kind
        self.buckets = tuple(sorted(buckets))
        self._children: dict[tuple[str, ...], C] = {}
        self._lock = threading.Lock()
        if not labels:
            self.labels()  # exported from the start, as prometheus_client does

    def labels(self, *values: str) -> C:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.label_names):
                raise ValueError(f"{self.name} takes labels {self.label_names}, not {values}")
            with self._lock:
                child = self._children.get(values)
                if child is None:
                    child = self._new()
                    self._children[values] = child
        return child

    def _new(self) -> C:
        if self.kind == "histogram":
            return HistogramChild(self.buckets)  # type: ignore[return-value]
        return (CounterChild() if self.kind == "counter" else GaugeChild())  # type: ignore

    def describe(self) -> Iterable[Metric]:
        return [self._empty()]

    def _base(self) -> str:
        return self.name[:-len("_total")] if self.kind == "counter" else self.name

    def _empty(self) -> Metric:
        if self.kind == "counter":
            return CounterMetricFamily(self._base(), self.documentation, labels=self.label_names)
        if self.kind == "gauge":
            return GaugeMetricFamily(self._base(), self.documentation, labels=self.label_names)
        return HistogramMetricFamily(self._base(), self.documentation, labels=self.label_names)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            children = list(self._children.items())
        if self.kind == "histogram":
            histograms = HistogramMetricFamily(self._base(), self.documentation,
                                               labels=self.label_names)
            bounds = [_go(b) for b in (*self.buckets, float("inf"))]
            for values, child in children:
                assert isinstance(child, HistogramChild)
                counts, total = child.snapshot()
                running = 0
                cumulative: list[tuple[str, float]] = []
                for bound, count in zip(bounds, counts):
                    running += count
                    cumulative.append((bound, running))
                histograms.add_metric(list(values), cumulative, total)
            return [histograms]
        family = CounterMetricFamily(self._base(), self.documentation, labels=self.label_names) \
            if self.kind == "counter" else \
            GaugeMetricFamily(self._base(), self.documentation, labels=self.label_names)
        for values, child in children:
            assert isinstance(child, (CounterChild, GaugeChild))
            family.add_metric(list(values), child.value)
        return [family]


def _go(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``+Inf``, ``0.005``, ``1.0``)."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


def _registered(family: Family[C]) -> Family[C]:
    REGISTRY.register(family)
    return family


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Family[CounterChild]:
    """A counter exported as ``name`` (which ends in ``_total``)."""
    if not name.endswith("_total"):
        raise ValueError(f"a counter's name ends in _total: {name}")
    return _registered(Family(name, documentation, labels, "counter"))


def gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Family[GaugeChild]:
    return _registered(Family(name, documentation, labels, "gauge"))


def histogram(name: str, documentation: str, labels: Sequence[str] = (), *,
              buckets: Sequence[float]) -> Family[HistogramChild]:
    return _registered(Family(name, documentation, labels, "histogram", buckets))

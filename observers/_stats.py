"""Stats: a worker's counters and observer latency, read from Python and reported to others.

``Worker.stats()`` returns a :class:`WorkerStats` snapshot.  Every worker also hands
its snapshot, as JSON, to the node with a pull when it changed (at most every
``stats_interval`` seconds) and when it stops; the node keeps it in
``<table>.workers``, so ``percolator status`` can show every worker of a cluster,
including ones in other processes.

Counters count cells (one cell may carry several coalesced entries):

    found       cells newly queued from the entries pulled
    processed   cells whose observer ran and committed
    batches     observer transactions that handled several cells (Observer.max_batch)
    skipped     cells already covered by an earlier observer commit (the ack)
    conflicts   observer transactions that lost a write-write conflict (retried)
    retries     other setbacks not counted as failures: store errors, a node away
    failures    observer runs that raised (retried with backoff)
    parked      cells moved to the parking table after max_failures
    deleted     entries handed back as done
    backlog     cells held (queued, waiting, in flight)
    buckets     buckets of its columns the worker owns now
    latency     observer run + commit, milliseconds, one sample per transaction (p50,
                p99 over the last 10,000)
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any

LATENCY_SAMPLES = 10_000

COUNTERS = ("found", "processed", "batches", "skipped", "conflicts", "retries", "failures",
            "parked", "deleted")


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile of ``samples`` (0.0 when empty)."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(p / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[index]


_KINDS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float)}


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One worker's counters at one moment."""

    worker: str
    state: str = "running"       # running | stopped
    threads: int = 0
    found: int = 0
    processed: int = 0
    batches: int = 0             # observer transactions of several cells
    skipped: int = 0
    conflicts: int = 0
    retries: int = 0
    failures: int = 0
    parked: int = 0
    deleted: int = 0             # entries handed back as done
    backlog: int = 0
    queued: int = 0
    in_flight: int = 0
    backing_off: int = 0         # cells waiting out a backoff
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    buckets: int = 0             # owned now
    member_index: int = -1
    pulls: int = 0
    started_ms: int = 0
    updated_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return json.dumps(self.as_dict(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> WorkerStats:
        """Decode; unknown keys (from newer workers) are ignored, missing ones default.
        ValueError for a value of the wrong type (a row anyone with a write token may
        write: it must not stop a worker or ``percolator status``)."""
        d = json.loads(raw)  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        if not isinstance(d, dict):
            raise ValueError("malformed worker stats: not an object")
        values = {}
        for f in fields(cls):
            if f.name in d:
                value = d[f.name]
                kind = _KINDS[str(f.type)]
                if type(value) not in kind:
                    raise ValueError(f"malformed worker stats: {f.name} is not a {f.type}")
                values[f.name] = value
        if "worker" not in values:
            raise ValueError("malformed worker stats: no worker")
        return cls(**values)


class Counters:
    """Thread-safe counters and a latency reservoir of one worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._latency: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency.append(seconds * 1000.0)

    def get(self, name: str) -> int:
        return self._counts[name]

    def snapshot(self) -> tuple[dict[str, int], list[float]]:
        with self._lock:
            return dict(self._counts), list(self._latency)

"""Contention: which counters running writers of this process are updating right now.

The combining counters (observers.citations.combine) send an update through a slot and
a fold only when a direct read-modify-write could collide with another writer; these
trackers say when.  Both are per process and in memory: they decide performance, never
correctness.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from collections.abc import Sequence

DEFAULT_SLOTS = 32
"""Slots per combined target (the combining rows' columns slot:00 .. slot:1f)."""


class InFlight:
    """Targets and slots that running transactions of this process are updating (thread-safe).

    :meth:`claim` marks a writer's targets and says which were already claimed by
    another writer still running; :meth:`slot` gives the writer a slot no other running
    writer of this process holds, round-robin so that a slot just released is not
    handed out again at once (its last writer may have committed after the new
    writer's start_ts, which would still conflict); :meth:`release` unmarks both when
    the writer committed.  A writer that aborted never releases: its claims expire
    after ``max_age`` seconds, and a new claim under the same key (the retry) replaces
    them.  Expired claims only make updates combine more often than needed.
    """

    def __init__(self, slots: int = DEFAULT_SLOTS, max_age: float = 2.0,
                 clock: object = time.monotonic) -> None:
        self.slots = slots
        self.max_age = max_age
        self._now = clock
        self._lock = threading.Lock()
        self._claims: dict[bytes, tuple[float, tuple[bytes, ...]]] = {}
        self._count: dict[bytes, int] = {}
        self._slot_of: dict[bytes, int] = {}
        self._next_slot = zlib.crc32(str(os.getpid()).encode()) % slots
        self._pruned = 0.0

    def claim(self, key: bytes, targets: Sequence[bytes]) -> list[bool]:
        now = self._now()  # type: ignore[operator]
        with self._lock:
            self._drop(key)
            if now - self._pruned > self.max_age:
                self._prune(now)
            busy = [t in self._count for t in targets]
            claimed = tuple(dict.fromkeys(targets))
            self._claims[key] = (now, claimed)
            for t in claimed:
                self._count[t] = self._count.get(t, 0) + 1
        return busy

    def slot(self, key: bytes) -> int:
        """The slot of writer ``key`` (held until :meth:`release`)."""
        with self._lock:
            held = self._slot_of.get(key)
            if held is not None:
                return held
            taken = set(self._slot_of.values())
            chosen = self._next_slot
            for i in range(self.slots):
                candidate = (self._next_slot + i) % self.slots
                if candidate not in taken:
                    chosen = candidate
                    break
            self._next_slot = (chosen + 1) % self.slots
            self._slot_of[key] = chosen
            return chosen

    def release(self, key: bytes) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: bytes) -> None:
        self._slot_of.pop(key, None)
        old = self._claims.pop(key, None)
        if old is None:
            return
        for t in old[1]:
            n = self._count[t] - 1
            if n:
                self._count[t] = n
            else:
                del self._count[t]

    def _prune(self, now: float) -> None:
        self._pruned = now
        for key in [k for k, (at, _) in self._claims.items() if now - at > self.max_age]:
            self._drop(key)

    def __len__(self) -> int:
        return len(self._claims)


class RecentTargets:
    """Targets updated in the last ``window`` to ``2 * window`` seconds (thread-safe).

    Two generations of sets, rotated every ``window`` seconds: memory is bounded by
    the targets of two windows, and each lookup is a set membership test.
    """

    def __init__(self, window: float, clock: object = time.monotonic) -> None:
        self.window = window
        self._now = clock
        self._lock = threading.Lock()
        self._current: set[bytes] = set()
        self._previous: set[bytes] = set()
        self._rotated = 0.0

    def touch_all(self, targets: Sequence[bytes]) -> list[bool]:
        """For each target: was it touched recently?  Then mark them all as touched now."""
        now = self._now()  # type: ignore[operator]
        with self._lock:
            if now - self._rotated >= self.window:
                stale = now - self._rotated >= 2 * self.window
                self._previous = set() if stale else self._current
                self._current = set()
                self._rotated = now
            seen = [t in self._current or t in self._previous for t in targets]
            self._current.update(targets)
        return seen

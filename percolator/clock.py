"""Clocks for lock TTLs (and a monotonic one for leases), behind a seam so tests expire
locks without sleeping.

Lock expiry is judged on a :class:`SteadyClock`: wall-clock milliseconds read once, then
moved by the monotonic clock only.  TiKV compares a lock's TTL with the physical part of
a fresh timestamp of its oracle, which never goes back; our oracle hands out counters
with no time in them, so there is nothing physical to take from a timestamp, and the
backend judging every lock keeps a clock of its own that steps of the system's wall
clock (NTP, an operator, a resumed VM) cannot move: a step forward no longer makes
live transactions' locks look expired (rolled back under them), nor a step back dead
ones look alive for as long as the step.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the epoch."""
        ...

    def monotonic_ms(self) -> int:
        """Milliseconds of a clock that never jumps (durations: leases), from any origin."""
        ...

    def sleep(self, seconds: float) -> None:
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class SteadyClock:
    """Milliseconds since the epoch as the wall clock said once, at construction (or
    ``floor_ms``, if later), since then moved by the monotonic clock only.

    ``floor_ms``: the latest time this clock's owner recorded in an earlier life (so a
    wall clock set back while it was down does not make the locks it left look younger;
    one set forward does make them older, as any downtime does)."""

    def __init__(self, base: Clock | None = None, floor_ms: int = 0) -> None:
        self._base = base or SystemClock()
        self._offset = max(self._base.now_ms(), floor_ms) - self._base.monotonic_ms()

    def now_ms(self) -> int:
        return self._offset + self._base.monotonic_ms()

    def monotonic_ms(self) -> int:
        return self._base.monotonic_ms()

    def sleep(self, seconds: float) -> None:
        self._base.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to; ``sleep`` advances it instead of waiting."""

    def __init__(self, start_ms: int = 1_000_000) -> None:
        self._now = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def monotonic_ms(self) -> int:
        """The same counter: :meth:`advance` moves both."""
        return self.now_ms()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += int(seconds * 1000)

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

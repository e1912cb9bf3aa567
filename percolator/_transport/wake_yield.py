"""WakeYield: a thread just woken by another yields the CPU once, while that is cheap.

A woken thread normally preempts the thread that woke it, which still holds the GIL
(and, inside CPython's GIL, the mutex guarding it): the woken thread finds both taken
and sleeps again, and each hand-off costs ~3 context switches instead of 1 (traced with
``perf sched``).  A thread that calls ``sched_yield()`` once after it is woken is, on
Linux's EEVDF scheduler, not eligible to preempt at its next wake-up, so the hand-off
becomes one switch: with 64 threads requesting timestamps ~1.6x the timestamps per
second (bench/HISTORY.md).  Where the CPU is shared with other runnable work a yield
switches away while holding the GIL instead, so :class:`WakeYield` notices (yields take
long) and stops yielding while that lasts.  The batcher's chain of wake-ups and the
request stream's hand-offs call it (``after_wake``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

__all__ = ["WakeYield"]

_YIELD_COST_LIMIT_NS = 5_000  # yields costing more than this on average: stop yielding
_YIELD_COST_CAP_NS = 20_000   # one slow yield counts at most this much in the average
_YIELD_MEASURE_EVERY = 16     # while yielding, time one yield in this many
_YIELD_PROBE_EVERY = 256      # while not yielding, still yield (timed) once in this many


class WakeYield:
    """Called by a thread just woken by another: yield the CPU once, while that is cheap.

    The yield keeps this thread's next wake-up from preempting its waker (see the module
    docstring).  It is cheap (~1 us) when nothing else is runnable on this CPU; when other
    work is, the yield hands the CPU to it while this thread holds the GIL, which stalls
    the whole process.  So one yield in ``_YIELD_MEASURE_EVERY`` is timed, and while the
    running average of those (1/8 weight, one sample capped at ``_YIELD_COST_CAP_NS``)
    exceeds ``_YIELD_COST_LIMIT_NS`` only one call in ``_YIELD_PROBE_EVERY`` yields, timed,
    to notice when yields are cheap again.  Unlocked: a lost update under a race only
    shifts the average or the count.
    """

    __slots__ = ("_available", "_clock", "_cost_ns", "_countdown", "_yield", "yielding")

    def __init__(self, sched_yield: Callable[[], object] | None = getattr(os, "sched_yield", None),
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self._available = sched_yield is not None  # else (not POSIX) it never yields
        self._yield: Callable[[], object] = sched_yield or (lambda: None)
        self._clock = clock
        self._cost_ns = 0
        self._countdown = 0
        self.yielding = self._available
        """Whether calls yield now (else only one in ``_YIELD_PROBE_EVERY`` does)."""

    def __call__(self) -> None:
        countdown = self._countdown
        if countdown:
            self._countdown = countdown - 1
            if self.yielding:
                self._yield()
            return
        self._timed()

    def _timed(self) -> None:
        if not self._available:
            self._countdown = _YIELD_PROBE_EVERY
            return
        clock = self._clock
        start = clock()
        self._yield()
        took = min(clock() - start, _YIELD_COST_CAP_NS)
        self._cost_ns += (took - self._cost_ns) >> 3
        self.yielding = self._cost_ns <= _YIELD_COST_LIMIT_NS
        self._countdown = (_YIELD_MEASURE_EVERY if self.yielding else _YIELD_PROBE_EVERY) - 1



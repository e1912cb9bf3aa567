"""The yield after a wake-up (the batcher's chain, the oracle client's stream): on while
yields are cheap, off while they switch away (the CPU shared with other runnable work),
and back on when cheap again."""

from __future__ import annotations

from percolator._transport import wake_yield
from percolator._transport.wake_yield import WakeYield

CHEAP_NS = 1_000
DEAR_NS = 50_000


class FakeScheduler:
    """A sched_yield whose cost the test sets, and the clock that measures it."""

    def __init__(self) -> None:
        self.now = 0
        self.cost = CHEAP_NS
        self.yields = 0

    def sched_yield(self) -> None:
        self.yields += 1
        self.now += self.cost

    def clock(self) -> int:
        return self.now


def yields_in(wake: WakeYield, sched: FakeScheduler, calls: int) -> int:
    before = sched.yields
    for _ in range(calls):
        wake()
    return sched.yields - before


def test_cheap_yields_are_made_after_every_wake_up() -> None:
    sched = FakeScheduler()
    wake = WakeYield(sched.sched_yield, sched.clock)
    assert yields_in(wake, sched, 1000) == 1000
    assert wake.yielding


def test_dear_yields_stop_but_are_probed_and_resume_when_cheap_again() -> None:
    sched = FakeScheduler()
    wake = WakeYield(sched.sched_yield, sched.clock)
    yields_in(wake, sched, 100)
    sched.cost = DEAR_NS  # other work runnable: each yield switches away
    yields_in(wake, sched, 10 * wake_yield._YIELD_MEASURE_EVERY)
    assert not wake.yielding
    probes = yields_in(wake, sched, 10 * wake_yield._YIELD_PROBE_EVERY)
    assert 9 <= probes <= 11  # one timed probe in every _YIELD_PROBE_EVERY calls
    assert not wake.yielding
    sched.cost = CHEAP_NS
    yields_in(wake, sched, 40 * wake_yield._YIELD_PROBE_EVERY)
    assert wake.yielding
    assert yields_in(wake, sched, 100) == 100


def test_one_slow_yield_does_not_stop_yielding() -> None:
    sched = FakeScheduler()
    wake = WakeYield(sched.sched_yield, sched.clock)
    yields_in(wake, sched, 100)
    sched.cost = 10_000_000  # a 10 ms preemption, once
    wake._countdown = 0  # the next call is the timed one
    wake()
    sched.cost = CHEAP_NS
    assert wake.yielding
    assert yields_in(wake, sched, 100) == 100


def test_without_sched_yield_it_never_yields() -> None:
    sched = FakeScheduler()
    wake = WakeYield(None, sched.clock)
    for _ in range(1000):
        wake()
    assert not wake.yielding
    assert sched.yields == 0

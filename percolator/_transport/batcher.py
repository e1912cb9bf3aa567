"""Batcher: concurrent callers' requests gathered into batches, a bounded number in flight.

The one batcher of the clients: the node client's commands (TiKV's ``BatchCommands``)
and the oracle client's timestamp requests (the Percolator paper, section 2.3) both go
through it.  Every thread that needs the server joins the queue; a lone caller goes at
once; while ``max_in_flight`` batches are on the wire, new callers wait and go together
in a later one, at most ``max_commands`` commands and ``max_weight`` of weight (the
oracle's: timestamps asked for) per batch.  A caller only ever joins a batch not yet
sent, so what it gets was asked for after it arrived (the oracle's linearizability).

No thread of its own: the first caller of a batch sends it.  When a batch returns, its
callers are woken one after another, each waking the next (waking them all from one
thread makes them fight for the GIL: measured 2.5x slower at 64 callers), and the last
gives the turn -- its place on the wire -- to the first queued caller, which takes its
batch when it runs.  So callers woken from one batch who ask again at once still join
the next one: with 64 requesting threads each oracle request carried all 64.
``after_wake`` runs in a thread just woken by another (the oracle client yields the CPU
there: ``wake_yield``).  A raw lock per caller instead of a ``threading.Event`` (a
Condition and a lock: ~8 us to create and ~4 us more to wake, per command).

Every wait is bounded.  A queued caller that waited ``batch_bound`` plus a margin for
its turn takes it from a batch that has returned but whose callers are still being
woken (a thread not scheduled), waits on while batches keep returning, else gives up
unsent (``Unavailable``).  A caller whose batch is on the wire gives up (outcome
unknown) once that batch is past its bound and a margin; the chain of wake-ups passes
over it.
"""

from __future__ import annotations

import _thread
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from bigtable_lite import Unavailable

from .. import failpoints

__all__ = ["Batcher", "Command"]

Data = TypeVar("Data")
Result = TypeVar("Result")

_HANDOFF_MARGIN = 5.0  # seconds of slack, beyond a batch's bound, of any wait

_QUEUED, _SENT, _HANDED, _PROMOTED, _GONE = range(5)  # a command's state


def _no_op() -> None:
    pass


class Command(Generic[Data, Result]):
    """One caller's request (``data``, of ``weight``), then its result or error.

    ``wake`` is held until the command is settled and its turn in the chain of wake-ups
    has come, or until its caller is promoted to send the next batch.
    """

    __slots__ = ("batch", "data", "error", "result", "seen", "state", "wake", "weight")

    def __init__(self, data: Data, weight: int = 1) -> None:
        self.data = data
        self.weight = weight
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.batch: _Batch[Data, Result] | None = None
        self.state = _QUEUED
        self.seen = 0  # batches returned when it last checked, while queued
        self.wake = _thread.allocate_lock()
        self.wake.acquire()


class _Batch(Generic[Data, Result]):
    """Commands sent together (``commands[0]`` sends them), by ``deadline``.  ``settled``
    once every command has its result or error; ``turn_passed`` once the place on the
    wire was given on."""

    __slots__ = ("commands", "deadline", "settled", "turn_passed")

    def __init__(self, commands: list[Command[Data, Result]], deadline: float) -> None:
        self.commands = commands
        self.deadline = deadline
        self.settled = False
        self.turn_passed = False


class Batcher(Generic[Data, Result]):
    """Runs ``send(batch)`` for batches of concurrent commands; ``send`` must settle every
    command of the batch (result or error) and raise nothing but BaseException.

    ``batch_bound``: the longest one batch can take on the wire.
    """

    def __init__(self, send: Callable[[list[Command[Data, Result]]], None], *,
                 max_in_flight: int, max_commands: int, batch_bound: float,
                 max_weight: int | None = None, after_wake: Callable[[], None] = _no_op
                 ) -> None:
        if max_in_flight < 1 or max_commands < 1 or (max_weight is not None and max_weight < 1):
            raise ValueError("max_in_flight, max_commands and max_weight must be at least 1")
        self._send_batch = send
        self._max_in_flight = max_in_flight
        self._max_commands = max_commands
        self._max_weight = max_weight
        self._bound = batch_bound
        self._wait = batch_bound + _HANDOFF_MARGIN
        self._after_wake = after_wake
        self._lock = threading.Lock()
        # Invariant: a place on the wire is free only while the queue is empty.
        self._queue: deque[Command[Data, Result]] = deque()
        self._queued_weight = 0
        self._in_flight = 0  # places on the wire taken: batches sent, or waking their callers
        self._waking: list[_Batch[Data, Result]] = []  # returned, callers being woken
        self._returned = 0   # batches returned so far (a queued caller's sign of progress)
        self.calls = 0
        self.commands = 0

    @property
    def queued(self) -> int:
        """Weight of the commands waiting for a batch to be sent (commands, if each
        weighs one)."""
        return self._queued_weight

    def run(self, me: Command[Data, Result]) -> None:
        """Return once ``me`` is settled (``result`` or ``error`` set).  Raises
        Unavailable (and sets nothing) if it waited too long to be sent."""
        if self._max_weight is not None and not 0 < me.weight <= self._max_weight:
            raise ValueError(f"a command's weight must be 1 to {self._max_weight}")
        with self._lock:
            if self._in_flight < self._max_in_flight:  # then nobody is queued
                self._in_flight += 1
                batch = self._take(me)
            else:
                self._queue.append(me)
                self._queued_weight += me.weight
                me.seen = self._returned
                batch = None
        if batch is None:
            state = self._await(me)
            if state != _PROMOTED:
                if state == _HANDED:
                    self._hand_on(me)
                return
            with self._lock:
                batch = self._take(me)
        self._send(batch, me)

    def _take(self, first: Command[Data, Result]) -> _Batch[Data, Result]:
        """``first``'s batch: it and the queue's first commands (the caller holds the lock
        and a place on the wire)."""
        queue = self._queue
        commands = [first]
        weight = 0
        limit = self._max_weight
        total = first.weight
        while queue and len(commands) < self._max_commands and (
                limit is None or total + queue[0].weight <= limit):
            c = queue.popleft()
            weight += c.weight
            total += c.weight
            commands.append(c)
        self._queued_weight -= weight
        batch = _Batch(commands, time.monotonic() + self._bound)
        for c in commands:
            c.state = _SENT
            c.batch = batch
        self.calls += 1
        self.commands += len(commands)
        return batch

    def _send(self, batch: _Batch[Data, Result], me: Command[Data, Result]) -> None:
        try:
            self._send_batch(batch.commands)
        except BaseException as exc:  # e.g. KeyboardInterrupt: settle the batch, pass the turn
            for c in batch.commands:
                if c.result is None and c.error is None:
                    c.error = Unavailable(f"batched call interrupted: {exc!r}")
            raise
        finally:
            with self._lock:
                batch.settled = True
                self._returned += 1
                self._waking.append(batch)
            self._hand_on(me)

    # --- the chain of wake-ups --------------------------------------------------------

    def _hand_on(self, me: Command[Data, Result]) -> None:
        """``me`` is settled and awake: wake the next command of its batch (passing over
        callers that gave up), or, the last, give the turn to the next batch."""
        batch = me.batch
        assert batch is not None
        commands = batch.commands
        for i in range(commands.index(me) + 1, len(commands)):
            c = commands[i]
            with self._lock:
                state = c.state
                if state == _SENT:
                    c.state = _HANDED
            if state == _SENT:
                c.wake.release()
                return
            if state != _GONE:
                return  # carried on by another (a caller that left before its turn)
        if me is not commands[0]:
            failpoints.hit("batcher.before_pass_turn")  # the last caller woken
        self._pass_turn(batch)

    def _pass_turn(self, batch: _Batch[Data, Result]) -> None:
        with self._lock:
            if batch.turn_passed:  # taken by a queued caller that waited too long
                return
            batch.turn_passed = True
            self._waking.remove(batch)
            nxt = self._promote()
        if nxt is not None:
            nxt.wake.release()

    def _promote(self) -> Command[Data, Result] | None:
        """The queue's first command, promoted to send the next batch (with the lock); or
        None, and the place on the wire is free."""
        if not self._queue:
            self._in_flight -= 1
            return None
        nxt = self._queue.popleft()
        self._queued_weight -= nxt.weight
        nxt.state = _PROMOTED
        return nxt

    # --- waiting ----------------------------------------------------------------------

    def _await(self, me: Command[Data, Result]) -> int:
        """Wait (bounded) until ``me`` is handed its result or promoted; its state then
        (_GONE: settled, but it left before its turn in the chain)."""
        wake = me.wake
        while not wake.acquire(True, self._wait):
            with self._lock:
                state = me.state
                if state in (_HANDED, _PROMOTED):
                    wake.acquire()  # just now: released, or about to be
                    break
                if state == _QUEUED:
                    if self._late_turn(me):
                        return _PROMOTED
                    continue  # batches keep returning: still in line
                batch = me.batch
                assert batch is not None
                if time.monotonic() < batch.deadline + _HANDOFF_MARGIN:
                    continue  # it was sent later than it began to wait
                me.state = _GONE  # the chain passes over it
                if batch.settled:
                    return _GONE  # its predecessor in the chain is late; its result is in
            raise Unavailable("timed out waiting for a batched call (its outcome is"
                              " unknown)")
        self._after_wake()
        return me.state

    def _late_turn(self, me: Command[Data, Result]) -> bool:
        """``me``, queued, waited a bound for its turn (the lock is held): take the place
        of a returned batch whose callers are still being woken (the one to pass the turn
        not scheduled) and send; else wait on while batches keep returning; else give
        up, unsent."""
        if self._waking:
            self._waking.pop(0).turn_passed = True
            self._queue.remove(me)
            self._queued_weight -= me.weight
            me.state = _PROMOTED
            return True
        if self._returned != me.seen:
            me.seen = self._returned
            return False
        self._queue.remove(me)
        self._queued_weight -= me.weight
        raise Unavailable("timed out waiting to send a batched call (it was not sent)")

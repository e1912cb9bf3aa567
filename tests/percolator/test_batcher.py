"""Batcher (percolator._transport.batcher): concurrent callers' commands gathered into
batches -- a lone caller at once, callers arriving while batches are on the wire
together in the next one, at most ``max_commands`` per batch and ``max_in_flight``
batches at once -- every command settled, every wait bounded.

The wire is a stand-in whose sends can be held: the queue, not a guessed delay, tells
a test that callers wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from bigtable_lite import Unavailable
from percolator._transport import batcher
from percolator._transport.batcher import Batcher, Command

WAIT = 10.0


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        threading.Event().wait(0.001)


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt in a sender's thread."""


class Wire:
    """``send`` for a Batcher: records every batch, answers each command with
    ``("re", data)``; a batch whose first command is in ``hold`` waits for its event
    first; one in ``interrupt`` raises Interrupted instead of answering."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.hold: dict[bytes, threading.Event] = {}
        self.entered: dict[bytes, threading.Event] = {}
        self.interrupt: set[bytes] = set()
        self.lock = threading.Lock()
        self.on_wire = 0
        self.most_on_wire = 0

    def held(self, data: bytes) -> threading.Event:
        self.hold[data] = threading.Event()
        self.entered[data] = threading.Event()
        return self.hold[data]

    def send(self, batch: list[Command[Any, Any]]) -> None:
        first = batch[0].data
        with self.lock:
            self.batches.append([c.data for c in batch])
            self.on_wire += 1
            self.most_on_wire = max(self.most_on_wire, self.on_wire)
        try:
            if first in self.hold:
                self.entered[first].set()
                assert self.hold[first].wait(WAIT)
            if first in self.interrupt:
                raise Interrupted()
            for c in batch:
                c.result = ("re", c.data)
        finally:
            with self.lock:
                self.on_wire -= 1


class Callers:
    """Callers of one Batcher, each on its own thread, started in order."""

    def __init__(self, b: Batcher[Any, Any]) -> None:
        self.batcher = b
        self.got: dict[bytes, Any] = {}
        self.threads: dict[bytes, threading.Thread] = {}

    def start(self, data: bytes, *, queued: int | None = None,
              after: Callable[[bytes], None] | None = None) -> Command[Any, Any]:
        """Start a caller of ``data``; wait until ``queued`` commands wait for a batch;
        ``after(data)`` runs in the caller's thread once it returns."""
        return self.start_command(Command(data), queued=queued, after=after)

    def start_command(self, command: Command[Any, Any], *, queued: int | None = None,
                      after: Callable[[bytes], None] | None = None) -> Command[Any, Any]:
        data = command.data

        def run() -> None:
            try:
                self.batcher.run(command)
                self.got[data] = command.error if command.error is not None else command.result
            except BaseException as exc:  # noqa: BLE001 -- recorded, asserted by the test
                self.got[data] = exc
            if after is not None:
                after(data)

        self.threads[data] = t = threading.Thread(target=run)
        t.start()
        if queued is not None:
            wait_until(lambda: self.batcher.queued == queued, f"{data!r} waits for a batch")
        return command

    def join(self) -> None:
        for name, t in self.threads.items():
            t.join(timeout=WAIT)
            assert not t.is_alive(), f"{name!r} did not return"


@contextmanager
def callers(wire: Wire, *, max_in_flight: int = 1, max_commands: int = 64,
            batch_bound: float = WAIT) -> Iterator[Callers]:
    c = Callers(Batcher(wire.send, max_in_flight=max_in_flight, max_commands=max_commands,
                        batch_bound=batch_bound))
    try:
        yield c
    finally:
        for event in wire.hold.values():
            event.set()
        c.join()


def test_a_lone_caller_goes_at_once() -> None:
    wire = Wire()
    b: Batcher[Any, Any] = Batcher(wire.send, max_in_flight=1, max_commands=8, batch_bound=WAIT)
    command: Command[Any, Any] = Command(b"a")
    b.run(command)
    assert command.result == ("re", b"a") and command.error is None
    assert wire.batches == [[b"a"]] and (b.calls, b.commands, b.queued) == (1, 1, 0)


def test_callers_arriving_while_a_batch_is_on_the_wire_go_together_in_the_next() -> None:
    wire = Wire()
    release = wire.held(b"a")
    with callers(wire) as c:
        c.start(b"a")
        assert wire.entered[b"a"].wait(WAIT)
        for n, data in enumerate((b"b", b"c", b"d", b"e", b"f"), start=1):
            c.start(data, queued=n)
        assert wire.batches == [[b"a"]]
        release.set()
        c.join()
        assert wire.batches == [[b"a"], [b"b", b"c", b"d", b"e", b"f"]]  # in arrival order
        assert c.got == {d: ("re", d) for d in (b"a", b"b", b"c", b"d", b"e", b"f")}
        assert (c.batcher.calls, c.batcher.commands) == (2, 6)


def test_a_batch_never_holds_more_than_max_commands() -> None:
    wire = Wire()
    release = wire.held(b"a")
    with callers(wire, max_commands=3) as c:
        c.start(b"a")
        assert wire.entered[b"a"].wait(WAIT)
        queued = [b"q%d" % i for i in range(7)]
        for n, data in enumerate(queued, start=1):
            c.start(data, queued=n)
        release.set()
        c.join()
        assert [len(batch) for batch in wire.batches] == [1, 3, 3, 1]
        assert [d for batch in wire.batches[1:] for d in batch] == queued
        assert c.got == {d: ("re", d) for d in [b"a", *queued]}
        assert wire.most_on_wire == 1


def test_at_most_max_in_flight_batches_are_on_the_wire() -> None:
    wire = Wire()
    first, second = wire.held(b"a"), wire.held(b"b")
    with callers(wire, max_in_flight=2) as c:
        c.start(b"a")
        assert wire.entered[b"a"].wait(WAIT)
        c.start(b"b")  # a second batch goes while the first is on the wire
        assert wire.entered[b"b"].wait(WAIT)
        c.start(b"c", queued=1)
        c.start(b"d", queued=2)
        assert wire.batches == [[b"a"], [b"b"]]
        second.set()  # b's sender promotes c, which takes d along
        wait_until(lambda: len(wire.batches) == 3, "the third batch is sent")
        first.set()
        c.join()
        assert wire.batches == [[b"a"], [b"b"], [b"c", b"d"]]
        assert wire.most_on_wire == 2
        assert c.got == {d: ("re", d) for d in (b"a", b"b", b"c", b"d")}


def test_an_interrupted_send_settles_its_batch_and_the_next_batch_still_goes() -> None:
    wire = Wire()
    release_a, release_b = wire.held(b"a"), wire.held(b"b")
    wire.interrupt.add(b"b")
    with callers(wire) as c:
        c.start(b"a")
        assert wire.entered[b"a"].wait(WAIT)
        c.start(b"b", queued=1)
        c.start(b"c", queued=2)
        release_a.set()  # b is promoted and sends [b, c], which is held, then interrupted
        assert wire.entered[b"b"].wait(WAIT)
        c.start(b"d", queued=1)
        release_b.set()
        c.join()
    assert wire.batches == [[b"a"], [b"b", b"c"], [b"d"]]
    assert isinstance(c.got[b"b"], Interrupted), "the sender's own thread gets it"
    assert isinstance(c.got[b"c"], Unavailable), "its batch's other callers fail"
    assert c.got[b"a"] == ("re", b"a") and c.got[b"d"] == ("re", b"d")


def test_a_caller_that_waits_too_long_to_be_sent_gives_up_unsent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batcher, "_HANDOFF_MARGIN", 0.05)
    wire = Wire()
    release = wire.held(b"a")
    with callers(wire, batch_bound=0.05) as c:  # a caller waits 0.05 + 0.05 s
        c.start(b"a")
        assert wire.entered[b"a"].wait(WAIT)
        c.start(b"b")
        c.threads[b"b"].join(timeout=WAIT)
        assert isinstance(c.got[b"b"], Unavailable)
        assert c.batcher.queued == 0, "it left the queue: it will never be sent"
        release.set()
        c.join()
    assert wire.batches == [[b"a"]]


@pytest.mark.parametrize("arguments", [{"max_in_flight": 0}, {"max_commands": 0},
                                       {"max_weight": 0}])
def test_bounds_must_be_positive(arguments: dict[str, int]) -> None:
    settings = {"max_in_flight": 1, "max_commands": 1, **arguments}
    with pytest.raises(ValueError):
        Batcher(Wire().send, batch_bound=WAIT, **settings)  # type: ignore[arg-type]


def test_a_batch_never_weighs_more_than_max_weight() -> None:
    """The oracle's batches: commands weigh what they ask for; a batch takes queued
    commands in order while they fit, the rest wait for the next."""
    wire = Wire()
    release = wire.held(b"a")
    b: Batcher[Any, Any] = Batcher(wire.send, max_in_flight=1, max_commands=64,
                                   batch_bound=WAIT, max_weight=10)
    c = Callers(b)
    try:
        c.start(b"a")
        assert wire.entered[b"a"].wait(WAIT)
        total = 0
        for data, weight in ((b"w4", 4), (b"w5", 5), (b"w3", 3), (b"w9", 9), (b"w1", 1)):
            command: Command[Any, Any] = Command(data, weight)
            total += weight
            c.start_command(command, queued=total)
        with pytest.raises(ValueError):
            b.run(Command(b"too-heavy", 11))
        release.set()
        c.join()
    finally:
        release.set()
    assert wire.batches == [[b"a"], [b"w4", b"w5"], [b"w3"], [b"w9", b"w1"]]
    assert b.queued == 0


def test_callers_of_a_batch_are_woken_in_order_and_the_last_passes_the_turn() -> None:
    """Each caller woken from a batch wakes the next; the last gives the wire to the
    next batch, whose sender takes its batch when it runs: so a caller who asks again
    as soon as it is woken still joins the very next batch."""
    wire = Wire()
    release = wire.held(b"a")
    woken: list[bytes] = []
    b: Batcher[Any, Any] = Batcher(wire.send, max_in_flight=1, max_commands=64,
                                   batch_bound=WAIT)
    c = Callers(b)
    again: dict[bytes, Any] = {}

    def ask_again(data: bytes) -> None:
        woken.append(data)
        if data == b"b":  # b asks again at once: it must go in the batch after [a]'s next
            again_command: Command[Any, Any] = Command(b"b2")
            b.run(again_command)
            again[b"b2"] = again_command.result

    try:
        c.start(b"a")
        assert wire.entered[b"a"].wait(WAIT)
        wire.held(b"b")
        c.start(b"b", queued=1, after=ask_again)
        c.start(b"c", queued=2, after=ask_again)
        c.start(b"d", queued=3, after=ask_again)
        release.set()  # [a] returns; b sends [b, c, d], held
        assert wire.entered[b"b"].wait(WAIT)
        wire.hold[b"b"].set()
        c.join()
        wait_until(lambda: b"b2" in again, "b's second command is answered")
    finally:
        release.set()
    assert woken[:3] == [b"b", b"c", b"d"]
    assert wire.batches == [[b"a"], [b"b", b"c", b"d"], [b"b2"]]

"""A worker leaving the group ends its own pull waiting at the node at once, also while
the node holds the column's first assignment (owned and held are then both empty, which
looked settled: the pull waited out the hold or its long poll)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

from percolator import Client
from percolator.node import Node
from percolator.notifications import PullReply, PullRequest

from . import sum_observers
from .observer_fixtures import WAIT, eventually
from .worker_procs import SUM_OBSERVERS, WorkerProcess

NODE_WAIT = 30.0
"""How long the node holds a waiting pull in the worker-process test."""
HOLD = (60.0, 120.0)
"""A first assignment held far longer than any wait below: a pull that returns did not
wait it out."""


def test_leave_ends_a_pull_waiting_during_a_held_first_assignment(tmp_path: Path) -> None:
    """Through the verbs over gRPC: leave, sent on another connection while the worker's
    pull waits (30 s long poll, 60 s hold), ends that pull."""
    with Node(tmp_path / "data", "127.0.0.1:0") as node, \
            Client.connect(node.address) as client, Client.connect(node.address) as other:
        node.backend.notifications.hold_first_assignments(*HOLD)
        client.notifications.register(client.table, sum_observers.VALUE, backfill=False)
        replies: list[PullReply] = []

        def pull() -> None:
            replies.append(client.notifications.pull(client.table, PullRequest(
                "w", (sum_observers.VALUE,), 60_000, room=100, wait_ms=30_000)))

        waiting = threading.Thread(target=pull)
        waiting.start()
        eventually(lambda: "w" in {m.worker for m in other.notifications.members(
            other.table) if m.alive}, "the worker is a member, its pull waiting")
        assert waiting.is_alive(), "held: nothing to answer yet"
        other.notifications.leave(other.table, "w", (), b"")
        waiting.join(WAIT / 3)
        assert not waiting.is_alive(), "the pull still waits after its worker left"
        assert replies and replies[0].owned == {} and not replies[0].rows
        assert "w" not in {m.worker for m in other.notifications.members(other.table)
                           if m.alive}, "the pull did not make it a member again"


def test_a_worker_process_stopped_during_a_held_first_assignment_leaves_at_once(
        tmp_path: Path) -> None:
    """A real worker process, stopped (SIGTERM) while its pull waits for the held first
    assignment: its leave ends that pull at once.  The node stretches the pull's wait to
    NODE_WAIT (the worker asks for 2 s, too close to a loaded machine's delays to tell
    apart) and records when each pull began and ended and when the leave came."""
    with Node(tmp_path / "data", "127.0.0.1:0") as node, \
            Client.connect(node.address) as client:
        notifications = node.backend.notifications
        notifications.hold_first_assignments(*HOLD)
        pulls: list[tuple[float, float]] = []  # (began, ended) of each waiting pull
        leaves: list[float] = []
        waiting = threading.Event()
        real_pull, real_leave = notifications.pull, notifications.leave

        def pull(table: bytes, request: PullRequest) -> PullReply:
            if request.wait_ms <= 0:
                return real_pull(table, request)
            began = time.monotonic()
            waiting.set()
            try:
                return real_pull(table, replace(request, wait_ms=int(NODE_WAIT * 1000)))
            finally:
                pulls.append((began, time.monotonic()))

        def leave(*args: object, **kwargs: object) -> None:
            leaves.append(time.monotonic())
            real_leave(*args, **kwargs)  # type: ignore[arg-type]

        notifications.pull = pull  # type: ignore[method-assign]
        notifications.leave = leave  # type: ignore[method-assign]
        with WorkerProcess("--connect", node.address, "--observers", SUM_OBSERVERS,
                           "--worker-id", "w1", "--threads", "1") as worker:
            worker.wait_for("running as w1")
            assert waiting.wait(WAIT), "the worker's pull never waited at the node"
            eventually(lambda: any(m.worker == "w1" and m.alive and not m.owned
                                   for m in client.notifications.members(client.table)),
                       "w1 is a member, its first assignment held")
            assert worker.terminate() == 0, worker.stderr()
        assert leaves, "the worker never left"
        left = leaves[0]
        eventually(lambda: any(began < left <= ended for began, ended in pulls),
                   "the pull waiting when the leave came has ended")
        ended = min(ended for began, ended in pulls if began < left <= ended)
        # Without the leave ending it, that pull waits out NODE_WAIT at the node.
        assert ended - left < NODE_WAIT / 3, (leaves, pulls)
        assert "w1" not in {m.worker for m in client.notifications.members(client.table)
                            if m.alive}

"""The node's command metrics: each batched command counted by kind and outcome, and timed.

Outcomes (label ``outcome`` of ``percolator_node_commands_total``): ``ok``;
``conflict`` (a prewrite or one-phase commit that wrote nothing: a write conflict, a
live lock, its transaction rolled back); ``rolled_back`` (a commit or one-phase commit
whose primary's lock was gone); or the status code of a command that failed
(``INVALID_ARGUMENT``, ``DATA_LOSS``, ...).
"""

from __future__ import annotations

from google.protobuf.message import Message

from ._status import status_for
from .metrics import COMMAND_SECONDS, COMMANDS, NODE_BATCH_COMMANDS

__all__ = ["CommandMetrics", "outcome_of"]

OK = "ok"
CONFLICT = "conflict"
ROLLED_BACK = "rolled_back"
UNKNOWN_KIND = "unknown"


def outcome_of(kind: str, reply: Message | None) -> str:
    """The outcome a step's reply says (``ok`` unless it carries a conflict or a commit that
    did not happen)."""
    if reply is None:
        return OK
    if kind == "prewrite" or kind == "one_phase":
        if reply.HasField("conflict"):
            return CONFLICT
        if kind == "one_phase" and not reply.commit.committed:  # type: ignore[attr-defined]
            return ROLLED_BACK
    elif kind == "commit" and not reply.committed:  # type: ignore[attr-defined]
        return ROLLED_BACK
    return OK


class CommandMetrics:
    """Counts and times one node's commands.  Thread-safe."""

    def __init__(self) -> None:
        self._batch = NODE_BATCH_COMMANDS.labels()

    def batch(self, commands: int) -> None:
        self._batch.observe(commands)

    def done(self, kind: str, outcome: str, seconds: float) -> None:
        COMMANDS.labels(kind, outcome).inc()
        COMMAND_SECONDS.labels(kind).observe(seconds)

    def failed(self, kind: str | None, exc: BaseException, seconds: float) -> None:
        kind = kind or UNKNOWN_KIND
        self.done(kind, status_for(exc)[0].name, seconds)

"""Threads that may not wait: the native transport's loop serves every connection from
one thread, so a request it runs must not sleep (for a lock's owner, or backing off
while the store is unavailable) or wait (for a busy session) -- the other connections
would wait with it.

Such a thread marks itself (:func:`refuse_waits`); code about to wait calls
:func:`check_may_wait` first, which there raises :class:`MayWait`, and the request runs
again from the start on a thread that may wait.  So a wait point must come before the
request's first effect, or the request must be harmless to run twice (a read at a
snapshot; a Transactions call, whose retries answer the first outcome: a Commit whose
outcome is being learned after a store failure runs again as a Commit the node no longer
holds, answered from the data).
"""

from __future__ import annotations

import threading

__all__ = ["MayWait", "check_may_wait", "refuse_waits"]

_thread = threading.local()


class MayWait(Exception):
    """The request may wait: run it on a thread that may."""


def refuse_waits() -> None:
    """From now on, the calling thread may not wait (:func:`check_may_wait` raises)."""
    _thread.refuses = True


def check_may_wait() -> None:
    """Raise MayWait on a thread that may not wait; nothing elsewhere."""
    if getattr(_thread, "refuses", False):
        raise MayWait()

"""Failpoints: named places in the code where a test can make the process fail.

Configured by ``PERCOLATOR_FAILPOINTS="name=action;name=action"`` when this module is
first imported, or in-process with :func:`enable` / :func:`disable` / :func:`reset`.

Actions:
    exit        os._exit(FAILPOINT_EXIT_CODE) at once: no cleanup, no flush (a crash)
    raise       raise FailpointError
    unavailable raise bigtable_lite's Unavailable: the store failing as it does for a
                while (closing, a commit in progress too long), which callers back off from
    sleep(MS)   sleep MS milliseconds, then continue
    off         do nothing

``hit(name)`` costs one dict lookup while nothing is enabled.  Names follow
``<area>.<before|after>_<step>``, e.g. ``commit.after_prewrite_primary``.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from dataclasses import dataclass

from bigtable_lite.errors import Unavailable

ENV_VAR = "PERCOLATOR_FAILPOINTS"
FAILPOINT_EXIT_CODE = 86

_ACTION = re.compile(r"^(exit|raise|unavailable|off|sleep\((\d+)\))$")


class FailpointError(RuntimeError):
    """Raised by a failpoint whose action is ``raise``."""


@dataclass(frozen=True, slots=True)
class _Action:
    kind: str
    millis: int = 0


_active: dict[str, _Action] = {}
_lock = threading.Lock()


def _parse(action: str) -> _Action:
    match = _ACTION.match(action.strip())
    if not match:
        raise ValueError(f"unknown failpoint action {action!r}; use exit, raise, unavailable,"
                         " sleep(MS) or off")
    if match.group(2) is not None:
        return _Action("sleep", int(match.group(2)))
    return _Action(match.group(1))


def enable(name: str, action: str) -> None:
    """Arm failpoint ``name`` with ``action`` (``off`` disarms it)."""
    parsed = _parse(action)
    with _lock:
        if parsed.kind == "off":
            _active.pop(name, None)
        else:
            _active[name] = parsed


def disable(name: str) -> None:
    with _lock:
        _active.pop(name, None)


def reset() -> None:
    """Disarm every failpoint (tests call this around each test)."""
    with _lock:
        _active.clear()


def configure(spec: str) -> None:
    """Arm failpoints from a ``name=action;name=action`` string."""
    for item in spec.split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, action = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"malformed failpoint {item!r}; expected name=action")
        enable(name.strip(), action)


def active() -> dict[str, str]:
    with _lock:
        return {name: a.kind if a.kind != "sleep" else f"sleep({a.millis})"
                for name, a in _active.items()}


def hit(name: str) -> None:
    """Trigger failpoint ``name`` if armed; free otherwise."""
    if not _active:
        return
    action = _active.get(name)
    if action is None:
        return
    if action.kind == "exit":
        sys.stderr.write(f"failpoint {name}: exit\n")
        sys.stderr.flush()
        os._exit(FAILPOINT_EXIT_CODE)
    if action.kind == "raise":
        raise FailpointError(f"failpoint {name}")
    if action.kind == "unavailable":
        raise Unavailable(f"failpoint {name}: the store is unavailable")
    if action.kind == "sleep":
        time.sleep(action.millis / 1000.0)


if os.environ.get(ENV_VAR):
    configure(os.environ[ENV_VAR])

"""``--watch``: a command's report refreshed in place, like ``top``, until Ctrl-C.

Each frame is rendered whole first and then written at once, so the terminal never
shows half a report.  On a terminal a frame replaces the one before (cursor home,
screen cleared); piped, frames follow one another (with ``--json``, one object per
line: a stream a script can read).  A refresh that fails (the node restarting) shows
the error in its frame and the watch goes on.  Ctrl-C ends it with status 0.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from bigtable_lite import StorageError

from ..errors import PercolatorError

__all__ = ["DEFAULT_INTERVAL", "capture", "watch"]

DEFAULT_INTERVAL = 2.0
_CLEAR = "\x1b[H\x1b[2J"


def capture(report: Callable[[], object]) -> str:
    """What ``report()`` prints on stdout, as one string."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        report()
    return out.getvalue()


def watch(render: Callable[[], str], interval: float, *, title: str, out: TextIO | None = None,
          stop: threading.Event | None = None) -> int:
    """Write ``render()`` every ``interval`` seconds until Ctrl-C (or ``stop`` is set)."""
    out = out or sys.stdout
    stop = stop or threading.Event()
    tty = out.isatty()
    try:
        while not stop.is_set():
            began = time.monotonic()
            try:
                frame = render()
            except (StorageError, PercolatorError, OSError) as exc:
                frame = f"error: {exc}\n"
            if tty:
                header = f"every {interval:g}s: {title}    {time.strftime('%H:%M:%S')}\n\n"
                out.write(f"{_CLEAR}{header}{frame}")
            else:
                out.write(frame)
            out.flush()
            stop.wait(max(0.0, interval - (time.monotonic() - began)))
    except KeyboardInterrupt:
        if tty:
            out.write("\n")
            out.flush()
    return 0

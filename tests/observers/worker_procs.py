"""`percolator worker` in a subprocess, for the multi-process and crash tests."""

from __future__ import annotations

import json
import signal
from typing import Any

from tests.procs import LineProcess

from .observer_fixtures import WAIT

SUM_OBSERVERS = "tests.observers.sum_observers:OBSERVERS"


class WorkerProcess(LineProcess):
    """A worker process; its stdout lines arrive on a queue, stderr is kept for failures."""

    def __init__(self, *args: str, failpoints: str | None = None) -> None:
        super().__init__(["-m", "percolator", "worker", *args], failpoints=failpoints)

    def wait_for(self, text: str, timeout: float = WAIT) -> str:
        """The first stdout line containing ``text``."""
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"worker exited before {text!r}: {self.stderr()}")
            if text in line:
                return line

    def stats(self) -> dict[str, Any]:
        """The stats JSON the worker printed when it stopped or went idle."""
        for line in reversed(self.stdout):
            if "; {" in line:
                parsed: dict[str, Any] = json.loads(line.split("; ", 1)[1])
                return parsed
        raise AssertionError(f"no stats printed: {''.join(self.stdout)} {self.stderr()}")

    def terminate(self, timeout: float = WAIT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        return code

    def wait(self, timeout: float = WAIT) -> int:
        return super().wait(timeout)

    def stderr(self) -> str:
        return self.stderr_text()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()

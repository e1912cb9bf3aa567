"""`percolator worker` in a subprocess, for the multi-process and crash tests."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import Any

from .observer_fixtures import REPO, WAIT

SUM_OBSERVERS = "tests.observers.sum_observers:OBSERVERS"


class WorkerProcess:
    """A worker process; its stdout lines arrive on a queue, stderr is kept for failures."""

    def __init__(self, *args: str, failpoints: str | None = None) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("PERCOLATOR_FAILPOINTS", None)
        if failpoints:
            env["PERCOLATOR_FAILPOINTS"] = failpoints
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "percolator", "worker", *args], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line)
        self.lines.put(None)

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

    def kill(self) -> None:
        """kill -9: no cleanup at all."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=WAIT)

    def wait(self, timeout: float = WAIT) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        return code

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()

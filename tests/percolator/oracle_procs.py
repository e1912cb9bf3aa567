"""Helpers for the oracle tests that run client processes (tests/percolator/oracle_child.py)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WAIT = 60.0


class ChildProcess:
    """`python -m tests.percolator.oracle_child ...`; its stdout lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("PERCOLATOR_FAILPOINTS", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.percolator.oracle_child", *args], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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

    def next_line(self, timeout: float = WAIT) -> str:
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise AssertionError(f"child exited early: {self.stderr_text()}")
        return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = WAIT) -> list[str]:
        """Close stdin, wait (bounded) for exit 0; return every stdout line."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        assert code == 0, f"child exited {code}: {self.stderr_text()}"
        return list(self.stdout)

    def stderr_text(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)

"""Helpers for the oracle tests that run client processes (tests/percolator/oracle_child.py)."""

from __future__ import annotations

from pathlib import Path

from tests.procs import LineProcess

REPO = Path(__file__).resolve().parents[2]
WAIT = 60.0


class ChildProcess(LineProcess):
    """`python -m tests.percolator.oracle_child ...`; its stdout lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        super().__init__(["-m", "tests.percolator.oracle_child", *args], stdin=True)

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


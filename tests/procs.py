"""Test helpers for real processes: a `percolator serve` subprocess and friends."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

LISTENING = re.compile(r"listening on (\S+):(\d+)")
START_TIMEOUT = 30.0


def percolator_command(*args: str) -> list[str]:
    """The `percolator` console script, run through this interpreter."""
    return [sys.executable, "-m", "percolator", *args]


class ServerProcess:
    """`percolator serve` on ``listen`` (127.0.0.1 port 0) in a subprocess; learns its port
    from stdout (``address`` is always 127.0.0.1:PORT)."""

    def __init__(self, data_dir: str | os.PathLike[str], *extra_args: str,
                 env: dict[str, str] | None = None, listen: str = "127.0.0.1:0",
                 session: bool = False) -> None:
        """``session``: start it in a session of its own, as a service manager would (with
        the kernel's autogroup scheduling, then also a scheduling group of its own)."""
        self.data_dir = Path(data_dir)
        self.session = session
        self.extra_args: Sequence[str] = extra_args
        self.env = env
        self.listen = listen
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.port = 0
        self.output: list[str] = []

    def start(self, timeout: float = START_TIMEOUT, *, same_port: bool = False
              ) -> ServerProcess:
        """Start on ``listen``; ``same_port``: on the port of the previous start (a
        restart clients reconnect to)."""
        env = dict(os.environ)
        env.update(self.env or {})
        self.output = []
        listen = (f"{self.listen.rpartition(':')[0]}:{self.port}" if same_port and self.port
                  else self.listen)
        self.proc = subprocess.Popen(
            percolator_command("serve", "--data-dir", str(self.data_dir),
                               "--listen", listen, *self.extra_args),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=self.session,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                raise TimeoutError(f"server did not start in {timeout}s: {''.join(self.output)}")
            if line is None:
                raise RuntimeError(f"server exited during start-up: {''.join(self.output)}")
            match = LISTENING.search(line)
            if match:
                self.port = int(match.group(2))
                self.address = f"127.0.0.1:{self.port}"
                return self

    def peak_rss_bytes(self) -> int:
        """The most memory the server has held resident so far (VmHWM from /proc)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/PID/status")

    def kill(self) -> None:
        """kill -9: no cleanup at all."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait (bounded) for a graceful exit; return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


REPO = Path(__file__).resolve().parents[1]


class LineProcess:
    """A Python subprocess of this repository whose stdout lines arrive on a queue.

    ``failpoints`` sets PERCOLATOR_FAILPOINTS for the child (and nothing inherited
    does); stderr is kept for failure messages.
    """

    def __init__(self, argv: Sequence[str], *, failpoints: str | None = None,
                 stdin: bool = False) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("PERCOLATOR_FAILPOINTS", None)
        if failpoints:
            env["PERCOLATOR_FAILPOINTS"] = failpoints
        self.proc = subprocess.Popen(
            [sys.executable, *argv], cwd=REPO, env=env,
            stdin=subprocess.PIPE if stdin else None, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
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

    def stderr_text(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read()

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        return code

    def kill(self, timeout: float = 60.0) -> None:
        """kill -9: no cleanup at all."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=timeout)


class JsonLinesProcess:
    """Any program whose stdout is JSON lines (a Node.js script, a Python child), read on a
    thread; :meth:`next` waits (bounded) for the next object."""

    def __init__(self, argv: Sequence[str], *, cwd: str | os.PathLike[str] = REPO) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("PERCOLATOR_FAILPOINTS", None)
        self.argv = list(argv)
        self.proc = subprocess.Popen(self.argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout: float) -> dict[str, object]:
        """The next JSON object printed; RuntimeError (with stderr) if the process ended."""
        import json

        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.argv}: no line in {timeout}s") from None
        if line is None:
            code = self.proc.wait(timeout=timeout)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"{self.argv} exited {code} without a line: {err}")
        value = json.loads(line)
        assert isinstance(value, dict), line
        return value

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        return code

    def kill(self, timeout: float = 60.0) -> None:
        """kill -9: no cleanup at all."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=timeout)

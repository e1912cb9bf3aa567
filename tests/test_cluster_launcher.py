"""`percolator cluster` starts the compose topology as local processes and verifies the demo."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


def test_cluster_loads_and_verifies_a_small_graph(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "percolator", "cluster", "--data-dir", str(tmp_path / "c"),
         "--papers", "200"],
        capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "node listening on 127.0.0.1:" in out
    assert out.count("started worker") == 2
    assert "verified:" in out, out
    assert "Traceback" not in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_launcher_leaves_no_service_running(tmp_path: Path, sig: int) -> None:
    """Each service in a session of its own (its own scheduling group, as a container of
    its own); Ctrl-C (SIGINT to the launcher alone now) and SIGTERM stop the workers, then
    the node, and the launcher exits: nothing outlives it."""
    launcher = subprocess.Popen(
        [sys.executable, "-m", "percolator", "cluster", "--data-dir", str(tmp_path / "c"),
         "--papers", "50", "--keep-running"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert launcher.stdout is not None
        for line in launcher.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    children: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while not any("up; Ctrl-C to stop" in line for line in seen):
            left = deadline - time.monotonic()
            assert left > 0, "".join(seen)
            try:
                seen.append(lines.get(timeout=left))
            except queue.Empty:
                raise AssertionError("cluster not up in time:\n" + "".join(seen)) from None
        children += [int(pid) for pid in Path(
            f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()]
        assert len(children) == 3, children  # the node and two workers
        for pid in children:
            assert os.getsid(pid) == pid  # each leads a session of its own
        os.kill(launcher.pid, sig)
        assert launcher.wait(timeout=120) == 0
        for pid in children:  # reaped by the launcher: gone, not even zombies
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:  # a failure leaves nothing behind (the services are in sessions of their own;
        if launcher.poll() is None:  # while the launcher lives, their pids are theirs)
            for pid in [*children, launcher.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            launcher.wait(timeout=30)

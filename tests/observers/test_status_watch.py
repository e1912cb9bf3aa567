"""`percolator status --watch`: refreshed like `top` until Ctrl-C, which ends it cleanly."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from percolator import Client
from tests.procs import REPO

from .observer_fixtures import WAIT, running_node

CLEAR = "\x1b[H\x1b[2J"


def watch(*args: str, stdout: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PERCOLATOR_FAILPOINTS", None)
    return subprocess.Popen([sys.executable, "-m", "percolator", "status", *args], cwd=REPO,
                            env=env, stdout=stdout, stderr=subprocess.PIPE)


def interrupted(proc: subprocess.Popen[bytes]) -> str:
    """Ctrl-C: the watch ends with status 0 and says nothing on stderr."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=WAIT) == 0
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert err == "", err
    return err


def test_piped_json_is_one_object_per_refresh_and_follows_the_data(tmp_path: Path) -> None:
    with running_node(tmp_path / "node") as address, Client.connect(address) as client:
        client.register_observed_columns([b"watched"])
        proc = watch("--connect", address, "--json", "--watch", "0.1", stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())
            assert first["pending"] == 0 and first["observed_columns"] == ["watched"]
            with client.transaction() as txn:
                txn.set(b"row", b"watched", b"1")
            deadline = time.monotonic() + WAIT
            while json.loads(proc.stdout.readline())["pending"] != 1:
                assert time.monotonic() < deadline, "no refresh showed the new notification"
            interrupted(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT)


def test_on_a_terminal_each_refresh_replaces_the_last(tmp_path: Path) -> None:
    with running_node(tmp_path / "node") as address:
        master, slave = pty.openpty()
        proc = watch("--connect", address, "--watch", "0.1", stdout=slave)
        os.close(slave)
        try:
            seen = ""
            deadline = time.monotonic() + WAIT
            while seen.count(CLEAR) < 3:
                assert time.monotonic() < deadline, f"fewer than 3 frames: {seen!r}"
                ready, _, _ = select.select([master], [], [], 1.0)
                if ready:
                    seen += os.read(master, 65536).decode(errors="replace")
            frame = seen.split(CLEAR)[2]
            assert frame.startswith(f"every 0.1s: percolator status ({address})"), frame
            assert "parked notifications: 0 cells" in frame
            interrupted(proc)
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT)

"""`percolator cluster` starts the compose topology as local processes and verifies the demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


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

"""`percolator demo` end to end at a tiny size, as a user runs it: exit 0 and `verified`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .observer_fixtures import REPO, draw_seed

pytestmark = pytest.mark.slow


def percolator(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PERCOLATOR_FAILPOINTS", None)
    return subprocess.run([sys.executable, "-m", "percolator", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_demo_runs_end_to_end_and_verifies() -> None:
    seed = draw_seed("demo")
    done = percolator("demo", "--papers", "300", "--edits", "15", "--seed", str(seed))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.rstrip().endswith("verified"), out
    for text in (f"seed {seed}", "batch recount (snapshot + MapReduce)",
                 "edit reflected, p50 (15 edits)", "edit reflected, p99",
                 "load with observers, until counted", "observer conflicts"):
        assert text in out, f"{text!r} missing from:\n{out}"
    assert "(temporary)" in out


def test_demo_keeps_a_given_data_dir_which_verifies_again(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    done = percolator("demo", "--papers", "200", "--edits", "5", "--naive", "--seed", "3",
                      "--data-dir", str(data), "--worker-threads", "1",
                      "--observer-batch", "7")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "naive read-modify-write, up to 7 papers per observer transaction" in done.stdout
    final = next(line for line in done.stdout.splitlines() if line.startswith("final check:"))
    papers = final.split("verified: ", 1)[1].split(",")[0]  # e.g. "204 papers"
    again = percolator("citations", "verify", "--data-dir", str(data))
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith(f"verified: {papers},"), again.stdout
    refused = percolator("demo", "--papers", "10", "--data-dir", str(data))
    assert refused.returncode == 1
    assert "is not empty" in refused.stderr
    assert "Traceback" not in refused.stderr

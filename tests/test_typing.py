"""The packages and the benchmarks are mypy --strict clean (configuration in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["bigtable_lite", "percolator", "observers"]
# bench/ is not a package (nothing installs it): checked as the namespace package `bench`,
# so that bench/bench_txn.py and bench_metrics' `bench.bench_txn` are one module to mypy.
BENCH = ["-p", "bench"]


@pytest.mark.parametrize("targets", [PACKAGES, BENCH], ids=["packages", "bench"])
def test_mypy_strict_is_clean(targets: list[str]) -> None:
    pytest.importorskip("mypy")
    done = subprocess.run([sys.executable, "-m", "mypy", *targets], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

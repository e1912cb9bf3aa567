"""`percolator worker`, `percolator status` and `percolator notifications` as an operator
uses them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from observers import Backoff, Worker, citations, observer
from percolator import Client, Transaction

from . import sum_observers
from .observer_fixtures import REPO, WAIT, eventually, running_node, write_cells
from .worker_procs import SUM_OBSERVERS, WorkerProcess


def percolator(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PERCOLATOR_FAILPOINTS", None)
    return subprocess.run([sys.executable, "-m", "percolator", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=WAIT)


@observer(b"fragile")
def fragile(txn: Transaction, row: bytes, column: bytes) -> None:
    if row == b"bad":
        raise ValueError("cannot handle bad")
    txn.set(row, b"ok", b"1")


def test_status_and_parked_notifications_of_a_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Client.embedded(data) as client:
        worker = Worker(client, [fragile], threads=1, max_failures=2, backoff=Backoff(0.0),
                        worker_id="cli-worker")
        write_cells(client, {(b"good", b"fragile"): b"1", (b"bad", b"fragile"): b"1"})
        worker.run_until_idle(timeout=30)
    text = percolator("status", "--data-dir", str(data))
    assert text.returncode == 0, text.stderr
    assert "fragile: registered at" in text.stdout and "0 pending, 0 live workers" in text.stdout
    assert "parked notifications: 1 cells" in text.stdout
    [line] = [ln for ln in text.stdout.splitlines() if ln.startswith("cli-worker")]
    state, buckets, _found, processed, skipped, conflicts, failures, parked = line.split()[1:9]
    assert (state, buckets, processed, skipped, conflicts, failures, parked) == (
        "stopped", "-", "1", "0", "0", "2", "1")
    assert "cannot handle bad" in text.stdout
    as_json = json.loads(percolator("status", "--data-dir", str(data), "--json").stdout)
    assert as_json["workers"][0]["stats"]["processed"] == 1
    assert as_json["parked"][0]["row"] == "bad"
    assert as_json["oracle"] is None and "oracle:" not in text.stdout  # no node to ask

    listed = percolator("notifications", "list", "--data-dir", str(data))
    assert listed.returncode == 0 and "(b'bad', b'fragile')" in listed.stdout
    replayed = percolator("notifications", "replay", "--data-dir", str(data), "--row", "bad",
                          "--column", "fragile")
    assert replayed.stdout.strip() == "replayed 1 cells", replayed.stderr
    after = percolator("status", "--data-dir", str(data)).stdout
    assert "1 pending, 0 live workers" in after
    assert "columns with pending notifications but no live worker: fragile (1 pending)" in after
    compacted = percolator("notifications", "compact", "--data-dir", str(data))
    assert compacted.returncode == 0, compacted.stderr


def test_worker_command_runs_until_sigterm_and_status_sees_it_alive(tmp_path: Path) -> None:
    with running_node(tmp_path / "data") as address, Client.connect(address) as client:
        with WorkerProcess("--connect", address, "--observers", SUM_OBSERVERS,
                           "--worker-id", "svc", "--threads", "2") as proc:
            proc.wait_for("running as svc")
            write_cells(client, {(b"r%d" % i, sum_observers.VALUE): b"2" for i in range(20)})
            # The worker persists its stats every second; wait for the work and a report.
            def reported() -> bool:
                out = json.loads(percolator("status", "--connect", address, "--json").stdout)
                return any(w["alive"] and w["stats"] and w["stats"]["processed"] == 20
                           for w in out["workers"])

            eventually(reported, "the worker reports its work", timeout=WAIT)
            assert proc.terminate() == 0, proc.stderr()
            assert proc.stats()["processed"] == 20
        assert sum_observers.total(client) == 40
        text = percolator("status", "--connect", address).stdout
        assert "svc" in text and "stopped" in text
        oracle = json.loads(percolator("status", "--connect", address, "--json").stdout)["oracle"]
        # The writer's and the worker's transactions took timestamps from the node's oracle.
        assert oracle["timestamps_served"] >= 2 * 20 and oracle["requests"] >= 1
        assert oracle["persisted_high_water"] >= oracle["timestamps_served"]
        assert oracle["mean_batch_size"] == oracle["timestamps_served"] / oracle["requests"]
        assert re.match(r"oracle: [\d,]+ timestamps served in [\d,]+ requests \(mean batch"
                        r" [\d.]+\), persisted high-water [\d,]+\n", text), text
        compacted = percolator("notifications", "compact", "--connect", address)
        assert compacted.returncode == 0 and "compacted" in compacted.stdout, compacted.stderr


def test_worker_command_reports_bad_specs_in_one_line(tmp_path: Path) -> None:
    bad = percolator("worker", "--data-dir", str(tmp_path / "d"), "--observers",
                     "tests.observers.plugin_fixtures:one,tests.observers.plugin_fixtures:"
                     "one_again", "--until-idle")
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("percolator worker: error: two observers registered")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_until_idle_fails_when_it_parked_a_notification(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Client.embedded(data) as client:
        client.register_observed_columns([b"plug:fragile"])
        write_cells(client, {(b"good", b"plug:fragile"): b"1", (b"bad", b"plug:fragile"): b"1"})
    done = percolator("worker", "--data-dir", str(data), "--observers",
                      "tests.observers.plugin_fixtures:fragile", "--max-failures", "1",
                      "--until-idle")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert re.search(r"running as \S+ \(1 observer on plug:fragile\) until idle", done.stdout)
    assert json.loads(done.stdout.split("idle; ", 1)[1])["parked"] == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        "percolator worker: error: parked 1 notification whose observer kept failing")
    listed = percolator("notifications", "list", "--data-dir", str(data))
    assert "(b'bad', b'plug:fragile')" in listed.stdout and "cannot handle bad" in listed.stdout


def test_the_start_line_names_columns_as_text_and_counts_observers(tmp_path: Path) -> None:
    with running_node(tmp_path / "data") as address:
        with WorkerProcess("--connect", address, "--observers",
                           "tests.observers.plugin_fixtures:LIST", "--worker-id", "two") as proc:
            line = proc.wait_for("running as two")
            assert "(2 observers on plug:one, plug:two, 4 threads)" in line, line
            assert proc.terminate() == 0, proc.stderr()


@pytest.mark.parametrize(("observers", "says"), [
    (["--observers", ""], "argument --observers: expected pkg.module:name"),
    (["--observers", "tests.observers.plugin_fixtures:one,,x:y"], "argument --observers"),
    ([], "one of the arguments --observers --all-installed is required"),
])
def test_a_worker_runs_only_observers_it_was_told_to(tmp_path: Path, observers: list[str],
                                                      says: str) -> None:
    with Client.embedded(tmp_path / "data"):
        pass
    done = percolator("worker", "--data-dir", str(tmp_path / "data"), *observers,
                      "--until-idle")
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert "running as" not in done.stdout


def test_all_installed_runs_the_installed_entry_points(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "data"):
        pass
    done = percolator("worker", "--data-dir", str(tmp_path / "data"), "--all-installed",
                      "--until-idle")
    assert done.returncode == 0, done.stderr
    # The citation example's entry point (pyproject.toml): its two observers.
    columns = ", ".join(sorted(c.decode() for c in (citations.REFS, citations.FOLD)))
    assert f"(2 observers on {columns}) until idle" in done.stdout, done.stdout

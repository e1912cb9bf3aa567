"""`percolator serve` and the Node: start-up line, graceful shutdown, one server per directory."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bigtable_lite import LocalStore, RemoteStore, Unavailable
from percolator import cli
from percolator.node import Node
from percolator.oracle_client import RemoteOracle
from percolator.oracle_service import SERVICE_NAME
from tests.procs import ServerProcess, percolator_command

WAIT = 30.0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(percolator_command(*args), check=False, capture_output=True, text=True,
                          timeout=WAIT)


def must_fail_in_one_line(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("percolator serve: error: "), done.stderr
    for text in expected:
        assert text in last


def health(address: str, service: str, timeout: float = WAIT) -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return int(reply.status)


def accepts_calls(address: str) -> bool:
    try:
        status = health(address, "", timeout=1.0)
    except grpc.RpcError:
        return False
    return status == int(health_pb2.HealthCheckResponse.SERVING)


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll an observable state (bounded); the state, not a guessed delay, is the signal."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        threading.Event().wait(0.005)


# --- the subprocess -----------------------------------------------------------------------


def test_serve_prints_real_port_and_sigterm_keeps_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        assert server.port != 0
        assert f"listening on 127.0.0.1:{server.port}" in "".join(server.output)
        assert health(server.address, "") == health_pb2.HealthCheckResponse.SERVING
        assert health(server.address, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
        with RemoteStore(server.address) as store:
            for i in range(50):
                store.put("t", f"row{i:02}", "c", 7, f"value{i}")
        with RemoteOracle(server.address) as oracle:
            before = oracle.get_timestamps(100) + 99
        assert server.terminate() == 0
        assert "stopped" in "".join(server.output)

        server.start()
        with RemoteStore(server.address) as store:
            rows = list(store.scan_rows("t"))
            assert [r.row for r in rows] == [f"row{i:02}".encode() for i in range(50)]
            assert store.get("t", "row07", "c").value == b"value7"  # type: ignore[union-attr]
        with RemoteOracle(server.address) as oracle:
            assert oracle.get_timestamp() > before


def test_sigint_also_shuts_down_cleanly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(timeout=WAIT) == 0
    finally:
        server.kill()
    with LocalStore(tmp_path / "data"):  # released: the directory can be opened again
        pass


def test_second_server_on_same_directory_fails_clearly(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        done = run_cli("serve", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0")
        must_fail_in_one_line(done, "already in use", str(server.proc.pid if server.proc else ""))
        with RemoteOracle(server.address) as oracle:  # the first server is unharmed
            oracle.get_timestamp()
        assert server.terminate() == 0


def test_port_in_use_fails_clearly(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "a") as server:
        done = run_cli("serve", "--data-dir", str(tmp_path / "b"), "--listen", server.address)
        must_fail_in_one_line(done, "cannot listen", server.address)
    with LocalStore(tmp_path / "b"):  # the failed server released its directory
        pass


# --- the CLI in-process -------------------------------------------------------------------


def test_locked_directory_in_process_is_one_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with LocalStore(tmp_path / "data"):
        assert cli.main(["serve", "--data-dir", str(tmp_path / "data"),
                         "--listen", "127.0.0.1:0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already in use" in err


@pytest.mark.parametrize("argv", [
    [],
    ["nonsense"],
    ["serve"],
    ["serve", "--data-dir", "x", "--listen", "no-port"],
    ["serve", "--data-dir", "x", "--listen", "host:99999"],
    ["serve", "--data-dir", "x", "--sync", "sometimes"],
    ["serve", "--data-dir", "x", "--oracle-block", "0"],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "usage: percolator" in capsys.readouterr().err


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    commands = cli.installed_commands()
    assert {"serve", "worker", "status", "notifications", "citations", "demo",
            "cluster"} <= set(commands)
    for name, module in commands.items():
        summary = cli.summary(module)
        assert summary and f"{name} {summary}" in out


# --- Node: graceful stop ------------------------------------------------------------------


def test_node_stop_lets_in_flight_calls_finish(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    node = Node(tmp_path / "data", "127.0.0.1:0").start()
    entered, release = threading.Event(), threading.Event()
    original = node.oracle.get_timestamps

    def held(count: int) -> int:  # holds the first call only
        if not entered.is_set():
            entered.set()
            assert release.wait(WAIT)
        return original(count)

    monkeypatch.setattr(node.oracle, "get_timestamps", held)
    results: list[int | Exception] = []
    with RemoteOracle(node.address, timeout=WAIT) as client:
        def call() -> None:
            try:
                results.append(client.get_timestamp())
            except Exception as exc:  # noqa: BLE001 -- recorded, asserted below
                results.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        assert entered.wait(WAIT)
        stopper = threading.Thread(target=node.stop, kwargs={"grace": WAIT})
        stopper.start()
        wait_until(lambda: not accepts_calls(node.address), "the node refuses new calls")
        release.set()
        caller.join(timeout=WAIT)
        stopper.join(timeout=WAIT)
        assert not caller.is_alive() and not stopper.is_alive()
        assert len(results) == 1 and isinstance(results[0], int), results
        with pytest.raises(Unavailable):
            client.get_timestamp()
    with LocalStore(tmp_path / "data"):  # the store was closed cleanly
        pass
    node.stop()  # idempotent

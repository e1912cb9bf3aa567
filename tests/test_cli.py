"""The `percolator` command line as a user meets it: no traps, one-line errors, quiet logs.

Subcommands come from the entry-point group ``percolator.commands``; each trap below
was once seen (issue 18): a mistyped ``--data-dir`` became a new empty store, a bad
file or address gave a traceback or the wrong reason, gRPC's C core wrote its own
lines to stderr.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from bigtable_lite.v1 import tablet_pb2
from percolator import Client, cli
from tests.procs import REPO, ServerProcess

WAIT = 60.0


def percolator(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, PYTHONPATH=str(REPO))
    for key in ("PERCOLATOR_FAILPOINTS", "GRPC_VERBOSITY", "GRPC_TRACE"):
        full_env.pop(key, None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "percolator", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=WAIT, check=False)


def in_process(capsys: pytest.CaptureFixture[str], *args: str
               ) -> subprocess.CompletedProcess[str]:
    """``cli.main(args)`` in this process (no interpreter to start), as a completed run."""
    capsys.readouterr()
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse: usage errors and --help
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["percolator", *args], code, out, err)


def one_error_line(done: subprocess.CompletedProcess[str], command: str, *expected: str) -> str:
    """The run failed with status 1 and exactly one line on stderr, naming the command."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"percolator {command}: error: "), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def usage_error(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "usage: percolator" in done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr


# --- the script ------------------------------------------------------------------------------


def test_nothing_imported_before_main_imports_grpc() -> None:
    """gRPC reads GRPC_VERBOSITY once, at import: main() sets it first, so the script's
    own module and everything it imports must leave grpc unimported."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, percolator.cli; print('grpc' in sys.modules)"],
        cwd=REPO, capture_output=True, text=True, timeout=WAIT, check=True)
    assert done.stdout.strip() == "False", done.stderr


def test_help_imports_no_command_module() -> None:
    code = ("import sys\nfrom percolator import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('observers', 'grpc')"
            " or '.commands.' in m), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=WAIT, check=True)
    assert done.stderr.strip() == "[]", done.stderr
    assert "worker" in done.stdout and "Run a node" in done.stdout


def test_commands_come_from_their_packages() -> None:
    commands = cli.installed_commands()
    assert commands["serve"].startswith("percolator.commands.")
    for name in ("worker", "status", "notifications"):
        assert commands[name].startswith("observers.commands."), name
    for name in ("citations", "demo", "cluster"):
        assert commands[name].startswith("observers.citations.commands."), name


def test_version_comes_from_the_package_metadata() -> None:
    done = percolator("--version")
    # The distribution that provides the package (a checkout may also hold stale
    # metadata of an earlier name: the installed one is the one with the entry point).
    [dist] = {d.metadata["Name"] for d in importlib.metadata.distributions()
              if any(ep.name == "percolator" and ep.group == "console_scripts"
                     for ep in d.entry_points)}
    assert done.returncode == 0 and done.stdout == (
        f"percolator {importlib.metadata.version(dist)}\n"), done.stderr


def test_a_broken_command_entry_point_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    commands = {"serve": "percolator.commands.serve", "broken": "no_such_package.command",
                "object": "percolator.commands.serve:run"}
    monkeypatch.setattr(cli, "installed_commands", lambda: commands)
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])  # the others still list
    assert info.value.code == 0 and "broken" in capsys.readouterr().out
    assert cli.main(["broken"]) == 1
    assert capsys.readouterr().err == (
        "percolator: error: cannot import command module no_such_package.command: No module"
        " named 'no_such_package'\n")
    assert cli.main(["object"]) == 1
    assert "names a module, not 'percolator.commands.serve:run'" in capsys.readouterr().err


def test_two_packages_claiming_one_command_name_is_an_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    group = cli.ENTRY_POINT_GROUP
    claims = [importlib.metadata.EntryPoint("serve", "percolator.commands.serve", group),
              importlib.metadata.EntryPoint("serve", "other.serve", group)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: claims)
    assert cli.main(["serve", "--help"]) == 1
    assert "command 'serve' is installed twice (percolator.commands.serve and other.serve)" in (
        capsys.readouterr().err)


@pytest.mark.parametrize("where", ["before", "after"])
def test_log_level_is_global(tmp_path: Path, where: str) -> None:
    Client.embedded(tmp_path / "data").close()
    level = ["--log-level", "DEBUG"]
    args = ["status", "--data-dir", str(tmp_path / "data")]
    done = percolator(*(level + args if where == "before" else args + level))
    assert done.returncode == 0, done.stderr
    usage_error(percolator("--log-level", "loud", *args), "--log-level")


# --- commands that read refuse a directory that is not a store ----------------------------


@pytest.mark.parametrize("command", [
    ["status"],
    ["notifications", "list"],
    ["notifications", "replay"],
    ["notifications", "compact"],
    ["citations", "verify"],
    ["worker", "--observers", "observers.citations:OBSERVERS", "--until-idle"],
    ["scan"],
    ["scan", "--raw"],
    ["get", "r", "c"],
    ["locks"],
    ["locks", "--resolve"],
])
@pytest.mark.parametrize("exists", [False, True])
def test_a_mistyped_data_dir_is_refused_not_created(tmp_path: Path, command: list[str],
                                                    exists: bool,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    mistyped = tmp_path / "mistyped"
    if exists:
        mistyped.mkdir()
    done = in_process(capsys, *command, "--data-dir", str(mistyped))
    one_error_line(done, command[0], f"{mistyped} is not a data directory")
    assert mistyped.exists() == exists
    assert not exists or not any(mistyped.iterdir())


def test_loading_may_create_a_data_dir(tmp_path: Path) -> None:
    done = percolator("citations", "load", "--generate", "20", "--data-dir",
                      str(tmp_path / "new"), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "loaded 20 papers" in done.stdout
    assert percolator("status", "--data-dir", str(tmp_path / "new")).returncode == 0


# --- bad input: one line, nothing changed -------------------------------------------------


@pytest.mark.parametrize(("content", "says"), [
    (b"# a comment\n1\t2\nthree\t4\n", "snap.txt:3: node id b'three'"),
    (b"1\t2\t3\n", "snap.txt:1: expected 2 node ids"),
    (gzip.compress(b"1\t2\n" * 1000)[:40], "corrupt gzip data"),
])
def test_a_malformed_snap_file_is_one_line_and_loads_nothing(
        tmp_path: Path, content: bytes, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    snap = tmp_path / "snap.txt"
    snap.write_bytes(content)
    done = in_process(capsys, "citations", "load", "--snap", str(snap), "--data-dir",
                      str(tmp_path / "data"))
    one_error_line(done, "citations", says, "nothing was loaded")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("address", "says"), [
    ("foo", "the port is missing"),
    ("foo:", "the port is missing"),
    (":7070", "the host is missing"),
    ("foo:0", "the port must be a number from 1 to 65535"),
    ("foo:http", "the port must be a number"),
])
def test_connect_needs_host_and_port(address: str, says: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    usage_error(in_process(capsys, "status", "--connect", address), f"'{address}'", says)


def test_listen_on_an_impossible_address_says_why(tmp_path: Path) -> None:
    done = percolator("serve", "--data-dir", str(tmp_path / "data"), "--listen",
                      "999.1.1.1:70", "--insecure")
    one_error_line(done, "serve", "cannot listen on 999.1.1.1:70: cannot resolve host"
                   " '999.1.1.1'")


def test_the_native_transport_beyond_loopback_needs_tls_and_tokens(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = in_process(capsys, "serve", "--data-dir", str(tmp_path / "data"),
                      "--native-listen", "0.0.0.0:7071")
    one_error_line(done, "serve", "refusing to serve 0.0.0.0:7071 without TLS and tokens",
                   "--insecure")
    assert not (tmp_path / "data").exists()
    done = in_process(capsys, "serve", "--data-dir", str(tmp_path / "data"),
                      "--native-listen", "0.0.0.0:x")
    usage_error(done, "--native-listen")


def test_listen_on_a_busy_port_says_so_and_grpc_keeps_quiet(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "a") as server:
        done = percolator("serve", "--data-dir", str(tmp_path / "b"), "--listen",
                          server.address)
        # One line: none of gRPC's own (absl::InitializeLog, add_port.cc).
        one_error_line(done, "serve", f"cannot listen on {server.address}: Address already in"
                       " use")
        loud = percolator("serve", "--data-dir", str(tmp_path / "b"), "--listen",
                          server.address, env={"GRPC_VERBOSITY": "ERROR"})
        assert "add_port.cc" in loud.stderr  # the user's own setting wins


def test_cluster_refuses_a_directory_with_data(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c" / "node").mkdir(parents=True)
    done = in_process(capsys, "cluster", "--data-dir", str(tmp_path / "c"))
    one_error_line(done, "cluster", "is not empty: pass --reuse")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["node"]


def test_cluster_reuse_takes_a_directory_with_data_as_it_is(tmp_path: Path) -> None:
    from observers.citations.commands.cluster import data_root

    (tmp_path / "c" / "node").mkdir(parents=True)
    assert data_root(str(tmp_path / "c"), reuse=True) == tmp_path / "c"
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["node"]
    assert data_root(str(tmp_path / "new"), reuse=False).is_dir()  # created: nothing to lose


def test_compact_help_tells_the_truth(capsys: pytest.CaptureFixture[str]) -> None:
    done = in_process(capsys, "notifications", "--help")
    text = " ".join(done.stdout.split())
    assert "embedded only" not in text and "of the node, or of the data directory" in text


# --- the node's log: one line per failed request ------------------------------------------


def test_the_node_logs_one_line_per_failed_request(tmp_path: Path) -> None:
    inverted = tablet_pb2.ReadRowsRequest(reads=[tablet_pb2.RowRead(
        table=b"t", row=b"r", time_range=tablet_pb2.TimeRange(min_ts=5, max_ts=4))])
    with ServerProcess(tmp_path / "data") as server:
        with grpc.insecure_channel(server.address) as channel:
            read = channel.unary_unary("/bigtable_lite.v1.TabletService/ReadRows")
            for request in (inverted.SerializeToString(), b"\xff\xff\xff") * 2:
                with pytest.raises(grpc.RpcError) as info:
                    read(request, timeout=WAIT)
                assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert server.terminate() == 0
        output = "".join(server.output)
    failed = [line for line in output.splitlines() if "failed:" in line]
    assert len(failed) == 2, output
    assert all(" WARNING bigtable_lite._service: bigtable_lite.v1.TabletService/ReadRows"
               " failed: INVALID_ARGUMENT: " in line for line in failed), failed
    # Bytes that do not decode: one line per method and cause (any client could send them
    # by the million).
    undecodable = [line for line in output.splitlines() if "undecodable request" in line]
    assert len(undecodable) == 1 and "(logged once)" in undecodable[0], output
    assert "Traceback" not in output


@pytest.mark.parametrize("args,named", [
    (["serve", "--data-dir", "d", "--gc-client-lease", "inf"], "--gc-client-lease"),
    (["serve", "--data-dir", "d", "--grace", "nan"], "--grace"),
    (["serve", "--data-dir", "d", "--grace", "-1"], "--grace"),
    (["serve", "--data-dir", "d", "--oracle-block", "99999999999999999999"], "--oracle-block"),
    (["status", "--data-dir", "d", "--watch", "1e300"], "--watch"),
    (["worker", "--data-dir", "d", "--observers", "x:y", "--lock-ttl", "inf"], "--lock-ttl"),
    (["cluster", "--data-dir", "d", "--papers", "0"], "--papers"),
])
def test_numbers_out_of_range_are_usage_errors_before_anything_starts(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], named: str
        ) -> None:
    """inf, nan, 1e300 seconds (a traceback at the first wait), an oracle block that would
    put the mark at 2**64 (the directory then has no timestamps left), no papers: refused
    by the parser, one usage line, nothing started or written."""
    args = [str(tmp_path / "d") if a == "d" else a for a in args]
    usage_error(in_process(capsys, *args), f"error: argument {named}")
    assert not (tmp_path / "d").exists()

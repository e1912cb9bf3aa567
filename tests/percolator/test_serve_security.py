"""`percolator serve` under attack and as a careless operator would run it (issue 16).

Every test runs a real `percolator serve` process and talks to it over gRPC: protected
mode, TLS and tokens end to end (a transaction, the CLI), the 1,500-read memory attack
(server memory read from /proc), unread streams that once took every server thread, and
undecodable bytes sent to each service.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bigtable_lite import (
    DEFAULT_LIMITS,
    Cell,
    PermissionDenied,
    RemoteStore,
    RowRead,
    ScanRequest,
    Unauthenticated,
    wire,
)
from bigtable_lite._service import SERVICE_NAME as TABLET
from bigtable_lite.credentials import connect_channel
from bigtable_lite.remote import channel_options
from bigtable_lite.server import HEALTH_STREAMS, REFLECTION_STREAMS
from percolator import Client, cli
from percolator._node_codec import SERVICE_NAME as NODE
from percolator._txn_service import SERVICE_NAME as TRANSACTIONS
from percolator.node import MIN_WORKERS, stream_shares
from percolator.oracle_client import RemoteOracle
from percolator.oracle_service import SERVICE_NAME as ORACLE
from percolator.v1 import node_pb2
from tests.certs import CA
from tests.procs import ServerProcess, percolator_command

WAIT = 30.0
MiB = 1 << 20
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
Code = grpc.StatusCode


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(percolator_command(*args), check=False, capture_output=True, text=True,
                          timeout=WAIT, env=None if env is None else {**os.environ, **env})


def health_check(channel: grpc.Channel, timeout: float) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                      timeout=timeout)
    return int(reply.status)


def wait_for_output(server: ServerProcess, text: str) -> None:
    deadline = time.monotonic() + WAIT
    while not any(text in line for line in server.output):
        if time.monotonic() > deadline:
            raise AssertionError(f"the server never said {text!r}: {''.join(server.output)}")
        time.sleep(0.05)


# --- protected mode -----------------------------------------------------------------------


def test_serve_beyond_loopback_without_tls_and_tokens_refuses_in_one_line(tmp_path: Path
                                                                          ) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("admin-token-0123456789 admin\n")
    for extra in ((), ("--auth-tokens", str(tokens))):
        done = run_cli("serve", "--data-dir", str(tmp_path / "d"), "--listen", "0.0.0.0:0",
                       *extra)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("percolator serve: error: refusing to serve 0.0.0.0:0"
                                   " without TLS"), lines[0]
        assert "--insecure" in lines[0]
        assert not (tmp_path / "d").exists()  # refused before the data directory is made
    with ServerProcess(tmp_path / "d", "--insecure", listen="0.0.0.0:0") as server:
        with grpc.insecure_channel(server.address) as channel:
            assert health_check(channel, WAIT) == health_pb2.HealthCheckResponse.SERVING


def test_a_bad_token_file_is_one_line(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("short admin\n")
    done = run_cli("serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0",
                   "--auth-tokens", str(tokens))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("line 1: a token must have 16 to 256 characters,"
                                        " this one has 5")


# --- TLS and tokens end to end ----------------------------------------------------------------


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path, dict[str, str]]]:
    """A node with TLS and tokens: (server, CA file, {role: token})."""
    ca = CA("node CA")
    cert, key = ca.issue("node", server=True).write(tmp_path, "node")
    tokens = {role: f"{role}-token-{os.urandom(8).hex()}" for role in ("read", "write", "admin")}
    (tmp_path / "tokens").write_text("".join(f"{t} {r}\n" for r, t in tokens.items()))
    with ServerProcess(tmp_path / "data", "--tls-cert", str(cert), "--tls-key", str(key),
                       "--auth-tokens", str(tmp_path / "tokens")) as server:
        yield server, ca.write(tmp_path / "ca.pem"), tokens


def test_transactions_need_tls_and_a_write_token(
        secured: tuple[ServerProcess, Path, dict[str, str]]) -> None:
    server, ca, tokens = secured
    with Client.connect(server.address, token=tokens["write"], tls_ca=ca, timeout=WAIT) as client:
        with client.transaction() as txn:
            txn.set(b"acct", b"balance", b"100")
        assert client.begin().get(b"acct", b"balance") == b"100"
    with Client.connect(server.address, token=tokens["read"], tls_ca=ca, timeout=WAIT) as client:
        assert client.begin().get(b"acct", b"balance") == b"100"  # reads need read
        with pytest.raises(PermissionDenied):  # writes need write
            with client.transaction() as txn:
                txn.set(b"acct", b"balance", b"1000000")
        assert client.begin().get(b"acct", b"balance") == b"100"
    with Client.connect(server.address, tls_ca=ca, timeout=WAIT) as client:
        with pytest.raises(Unauthenticated):
            client.begin()
    for role in ("read", "write"):
        with connect_channel(server.address, token=tokens[role], tls_ca=ca) as channel:
            assert RemoteOracle(channel, timeout=WAIT).get_timestamp() > 0  # read may
            with pytest.raises(PermissionDenied):  # raw writes: admin only
                RemoteStore(channel, timeout=WAIT).put(b"t", b"r", b"c", 1, b"v")
    with connect_channel(server.address, token=tokens["admin"], tls_ca=ca) as channel:
        RemoteStore(channel, timeout=WAIT).put(b"t", b"r", b"c", 1, b"v")
    with connect_channel(server.address, tls_ca=ca) as channel:  # probes need no token
        assert health_check(channel, WAIT) == health_pb2.HealthCheckResponse.SERVING


def test_cli_commands_take_the_token_from_the_environment_or_a_file(
        secured: tuple[ServerProcess, Path, dict[str, str]], tmp_path: Path) -> None:
    server, ca, tokens = secured
    base = ("status", "--connect", server.address, "--tls-ca", str(ca), "--json")
    done = run_cli(*base, env={"PERCOLATOR_TOKEN": tokens["write"]})
    assert done.returncode == 0, done.stderr
    token_file = tmp_path / "write.token"
    token_file.write_text(tokens["write"] + "\n")
    assert run_cli(*base, "--token-file", str(token_file)).returncode == 0
    done = run_cli(*base, env={"PERCOLATOR_TOKEN": ""})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "UNAUTHENTICATED" in done.stderr.strip().splitlines()[-1]
    done = run_cli("status", "--connect", server.address, "--json",
                   env={"PERCOLATOR_TOKEN": tokens["write"]})  # no TLS: refused by the node
    assert done.returncode == 1 and "UNAVAILABLE" in done.stderr


def test_every_connecting_command_takes_the_security_flags() -> None:
    commands = cli.installed_commands()
    for name in commands:
        if name in ("serve", "cluster", "demo", "dev-secrets"):
            continue
        parser = cli.build_parser(commands, name)
        required = {"notifications": ["list"], "citations": ["verify"],
                    "worker": ["--all-installed"], "get": ["r", "c"], "repair": ["r", "c"],
                    "observers": ["list"]}
        args = parser.parse_args([name, *required.get(name, []),
                                  "--connect", "h:1", "--token", "x", "--tls-ca", "ca.pem",
                                  "--tls-cert", "c.pem", "--tls-key", "k.pem"])
        assert (args.token, str(args.tls_ca)) == ("x", "ca.pem"), name


# --- memory: one small request must not take the server to gigabytes -------------------------


def test_1500_reads_of_a_1mib_cell_are_refused_without_gathering_them(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server, \
            grpc.insecure_channel(server.address) as channel:
        store = RemoteStore(channel, timeout=WAIT)
        store.put(b"t", b"big", b"c", 1, os.urandom(MiB))
        before = server.peak_rss_bytes()
        request = wire.read_request_to_pb([RowRead(b"t", b"big")] * 1500).SerializeToString()
        assert len(request) < 30_000
        read_rows = channel.unary_unary(f"/{TABLET}/ReadRows")
        with pytest.raises(grpc.RpcError) as info:
            read_rows(request, timeout=WAIT)
        assert info.value.code() is Code.RESOURCE_EXHAUSTED
        assert "budget" in (info.value.details() or "")
        peak = server.peak_rss_bytes()
        assert peak < 1 << 30 and peak - before < 400 * MiB, (before, peak)
        # What a client legitimately asks beyond the budget it still gets, streamed.
        rows = store.read_rows([RowRead(b"t", b"big")] * 24)
        assert [len(r[0].value) for r in rows] == [MiB] * 24
        assert server.peak_rss_bytes() < 1 << 30


def test_a_batch_of_1500_reads_of_a_1mib_cell_stops_at_the_reply_budget(tmp_path: Path
                                                                         ) -> None:
    """The same attack on the node's own batches: the reads past the reply's budget are
    not run but answered RESOURCE_EXHAUSTED while the reply is gathered (the node's
    memory measured during the attack), and their clients get them by reading alone."""
    value = os.urandom(MiB)
    with ServerProcess(tmp_path / "data") as server, \
            Client.connect(server.address, timeout=WAIT) as client:
        with client.transaction() as txn:
            txn.set(b"big", b"c", value)
        at = client.timestamp()
        read = node_pb2.Command(read=node_pb2.ReadRequest(
            table=client.table, start_ts=at,
            rows=[node_pb2.RowColumns(row=b"big", columns=[b"c"])]))
        request = node_pb2.BatchRequest(commands=[read] * 1500).SerializeToString()
        assert len(request) < 50_000
        before = server.peak_rss_bytes()
        with grpc.insecure_channel(server.address,
                                   options=channel_options(DEFAULT_LIMITS)) as channel:
            raw = channel.unary_unary(f"/{NODE}/Batch")(request, timeout=WAIT)
        peak = server.peak_rss_bytes()
        results = node_pb2.BatchResponse.FromString(raw).results
        answered = [r for r in results if r.WhichOneof("kind") == "read"]
        refused = [r for r in results if r.WhichOneof("kind") == "error"]
        assert len(answered) + len(refused) == 1500
        assert 0 < len(answered) <= 64, len(answered)  # a reply holds at most 64 MiB
        assert all(r.read.values[0].value == value for r in answered)
        assert all(r.error.code == Code.RESOURCE_EXHAUSTED.value[0] for r in refused)
        assert peak < 1 << 30 and peak - before < 400 * MiB, (before, peak)
        # Many clients' reads of it share batches; each gets its value.
        with ThreadPoolExecutor(32) as pool:
            got = list(pool.map(lambda _: client.backend.read(
                client.table, at, [(b"big", b"c")]).values[(b"big", b"c")], range(96)))
        assert got == [value] * 96
        assert server.peak_rss_bytes() < 1 << 30


# --- threads: unread streams must not starve health checks and small reads ---------------------


BIG_ROWS = 64
"""Rows of 1 MiB in the table unread scans read: more than a client buffers unread
(with 12 MiB, 40 unread scans of an unguarded node all finished sending)."""


def big_table(store: RemoteStore, rows: int) -> None:
    for i in range(rows):
        store.put(b"big", b"r%03d" % i, b"c", 1, os.urandom(MiB))


def test_streams_of_every_kind_together_leave_threads_to_unary_calls() -> None:
    for workers in range(MIN_WORKERS, 129):
        held = sum(stream_shares(workers)) + HEALTH_STREAMS + REFLECTION_STREAMS
        assert workers - held >= max(2, workers // 4), workers
    with pytest.raises(ValueError):
        stream_shares(MIN_WORKERS - 1)


def started(calls: list[grpc.Call], within: float) -> None:
    """Wait (bounded) until the server has answered every call: a first message or a status."""
    done = threading.Event()

    def wait() -> None:
        for call in calls:
            call.initial_metadata()
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    assert done.wait(within), "the server took no more calls: its threads are all held"


def test_40_unread_scans_leave_health_checks_and_small_reads_through(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", "--stream-idle-timeout", "120") as server, \
            grpc.insecure_channel(server.address) as channel:
        store = RemoteStore(channel, timeout=WAIT)
        big_table(store, BIG_ROWS)
        store.put(b"small", b"r", b"c", 1, b"v")
        scan = channel.unary_stream(f"/{TABLET}/Scan")
        request = wire.scan_request_to_pb(ScanRequest(b"big")).SerializeToString()
        calls = [scan(request, timeout=300) for _ in range(40)]  # never read
        try:
            started(calls, within=WAIT)
            t0 = time.monotonic()
            assert health_check(channel, timeout=5.0) == health_pb2.HealthCheckResponse.SERVING
            assert RemoteStore(channel, timeout=5.0).get(b"small", b"r", b"c") == Cell(
                b"c", 1, b"v")
            assert RemoteOracle(channel, timeout=5.0).get_timestamp() > 0
            assert time.monotonic() - t0 < 5.0
            refused = [c for c in calls if c.done()]  # the rest hold their stream slots
            assert refused and all(c.code() is Code.RESOURCE_EXHAUSTED for c in refused)
        finally:
            for call in calls:
                call.cancel()


def test_a_stream_its_client_does_not_read_is_cancelled(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data", "--stream-idle-timeout", "1") as server, \
            grpc.insecure_channel(server.address) as channel:
        store = RemoteStore(channel, timeout=WAIT)
        big_table(store, BIG_ROWS)
        request = wire.scan_request_to_pb(ScanRequest(b"big")).SerializeToString()
        unread = channel.unary_stream(f"/{TABLET}/Scan")(request, timeout=300)
        started([unread], within=WAIT)
        wait_for_output(server, "stream cancelled: its client read nothing for 1 s")
        got = 0
        with pytest.raises(grpc.RpcError) as info:
            for _ in unread:
                got += 1
        assert info.value.code() is Code.CANCELLED
        assert got < BIG_ROWS  # it never got to the end
        assert len(list(store.scan(ScanRequest(b"big")))) == BIG_ROWS  # a reading client does


# --- bytes that do not decode -------------------------------------------------------------------


UNDECODABLE = b"\xff"
UNARY = [(TABLET, "ReadRows"), (ORACLE, "GetTimestamps"), (ORACLE, "GetOracleStats"),
         (NODE, "Batch"), (TRANSACTIONS, "Begin"), (TRANSACTIONS, "Commit"), (HEALTH, "Check")]
SERVER_STREAMS = [(TABLET, "Scan"), (TABLET, "ReadRowsStream"), (HEALTH, "Watch")]
BIDI = [(ORACLE, "StreamTimestamps"), (NODE, "BatchStream"), (REFLECTION, "ServerReflectionInfo")]


def test_undecodable_requests_to_every_service_are_invalid_argument_logged_once(
        tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server, \
            grpc.insecure_channel(server.address) as channel:
        for _ in range(3):
            for service, method in UNARY + SERVER_STREAMS + BIDI:
                path = f"/{service}/{method}"
                with pytest.raises(grpc.RpcError) as info:
                    if (service, method) in UNARY:
                        channel.unary_unary(path)(UNDECODABLE, timeout=WAIT)
                    elif (service, method) in SERVER_STREAMS:
                        list(channel.unary_stream(path)(UNDECODABLE, timeout=WAIT))
                    else:
                        list(channel.stream_stream(path)(iter([UNDECODABLE]), timeout=WAIT))
                assert info.value.code() is Code.INVALID_ARGUMENT, (path, info.value)
        assert health_check(channel, WAIT) == health_pb2.HealthCheckResponse.SERVING
        assert server.terminate() == 0
    log = "".join(server.output)
    assert "Traceback" not in log
    for service, method in [(ORACLE, "GetTimestamps"), (HEALTH, "Check"),
                            (REFLECTION, "ServerReflectionInfo"), (TABLET, "ReadRows")]:
        lines = [line for line in server.output
                 if f"/{service}/{method}: undecodable request" in line]
        assert len(lines) == 1, (method, log)

"""The Transactions service behind the guard (issue 16): tokens, roles, TLS, reply budgets,
and the caller of a native connection's TXN frames.

Callers use the service's contract only (``txn_service_client``), over channels that
carry a token (``connect_channel``).  Nodes are real, in-process on 127.0.0.1 port 0,
with a token table; one is a ``percolator serve`` process, whose memory is read from
/proc during the attack on the reply budget.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bigtable_lite import DEFAULT_LIMITS
from bigtable_lite.auth import Role, TokenTable
from bigtable_lite.credentials import ServerTLS, connect_channel
from bigtable_lite.server import ServerPolicy
from percolator import Client
from percolator._backend import CellWrite, PrewriteRequest
from percolator._txn_service import ROLES, SERVICE_NAME
from percolator.node import Node
from percolator.records import PUT
from percolator.v1 import node_pb2
from percolator.v1 import transactions_pb2 as pb
from tests.certs import CA
from tests.procs import REPO, ServerProcess

from .txn_service_client import NativeFrames, ServiceClient, ServiceError, ServiceTxn

WAIT = 30.0
MiB = 1 << 20
Code = grpc.StatusCode
TOKENS = {role: f"{role.label}-token-{os.urandom(8).hex()}" for role in Role}
CELL = (b"acct", b"balance")


OTHER_WRITER = f"write-token-{os.urandom(8).hex()}"
"""A second caller with the write role."""


def token_policy(**kwargs: object) -> ServerPolicy:
    tokens = {t: role for role, t in TOKENS.items()} | {OTHER_WRITER: Role.WRITE}
    return ServerPolicy(tokens=TokenTable(tokens), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with Node(tmp_path / "node", "127.0.0.1:0", policy=token_policy(),
              txn_lock_wait=0.3) as n:
        yield n


def service(address: str, role: Role | None, *, stream: bool = False,
            token: str | None = None, **tls: Path) -> ServiceClient:
    token = token or (None if role is None else TOKENS[role])
    channel = connect_channel(address, token=token, **tls)  # type: ignore[arg-type]
    return ServiceClient(address, timeout=WAIT, stream=stream, channel=channel)


def native(node: Node, role: Role) -> Client:
    return Client.connect(node.address, token=TOKENS[role], timeout=WAIT)


def mutual_tls(tmp_path: Path, caller: str) -> tuple[ServerTLS, Path, Path, Path]:
    """A node's TLS requiring client certificates of a client CA: (the node's ServerTLS,
    the node CA's file, ``caller``'s certificate and key files, issued by the client CA)."""
    ca, clients = CA("node CA"), CA("client CA")
    cert, key = ca.issue("node", server=True).write(tmp_path, "node")
    ca_file = ca.write(tmp_path / "ca.pem")
    client_cert, client_key = clients.issue(caller, server=False).write(tmp_path, caller)
    return ServerTLS(cert, key, clients.write(tmp_path / "clients.pem")), ca_file, \
        client_cert, client_key


def must_fail(code: grpc.StatusCode, fn: object, *args: object) -> ServiceError:
    assert callable(fn)
    with pytest.raises(ServiceError) as info:
        fn(*args)
    assert info.value.code == code, info.value
    return info.value


def test_every_method_has_a_declared_role() -> None:
    """Commit alone writes; a method the contract adds without a role here is admin-only
    (the guard's default), so the service's own check keeps this list complete."""
    methods = set(pb.DESCRIPTOR.services_by_name["Transactions"].methods_by_name)
    assert set(ROLES) == methods
    assert {m for m, role in ROLES.items() if role > Role.READ} == {"Commit"}


def test_without_a_valid_token_every_method_is_unauthenticated(node: Node) -> None:
    requests = {"Begin": pb.TxnBeginRequest(), "Get": pb.TxnGetRequest(txn_id=1),
                "BatchGet": pb.TxnBatchGetRequest(txn_id=1),
                "Scan": pb.TxnScanRequest(txn_id=1), "Commit": pb.TxnCommitRequest(txn_id=1),
                "Rollback": pb.TxnRollbackRequest(txn_id=1)}
    assert set(requests) | {"Stream"} == set(ROLES)
    for token in (None, "not-a-token-of-this-node-at-all"):
        with connect_channel(node.address, token=token) as channel:
            for method, request in requests.items():
                call = channel.unary_unary(f"/{SERVICE_NAME}/{method}")
                with pytest.raises(grpc.RpcError) as info:
                    call(request.SerializeToString(), timeout=WAIT)
                assert info.value.code() == Code.UNAUTHENTICATED, (method, info.value)
            stream = channel.stream_stream(f"/{SERVICE_NAME}/Stream")
            begin = pb.TxnStreamRequest(begin=pb.TxnBeginRequest()).SerializeToString()
            with pytest.raises(grpc.RpcError) as info:
                list(stream(iter([begin]), timeout=WAIT))
            assert info.value.code() == Code.UNAUTHENTICATED
    assert node.transactions.sessions.open == 0, "nothing was begun"


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_read_token_reads_and_ends_its_transactions_but_cannot_commit(
        node: Node, stream: bool) -> None:
    with native(node, Role.WRITE) as writer:
        with writer.transaction() as txn:
            txn.set(*CELL, b"100")
    with service(node.address, Role.READ, stream=stream) as reader:
        held = reader.begin([CELL])
        assert held.values == {CELL: b"100"}
        assert held.get(*CELL) == b"100"
        assert held.batch_get([CELL]) == {CELL: b"100"}
        assert list(held.scan()) == [(*CELL, b"100")]
        held.set(*CELL, b"1000000")
        refused = must_fail(Code.PERMISSION_DENIED, held.commit)
        assert "Commit needs the write role" in refused.details
        assert held.get(*CELL) == b"100", "the refused commit changed nothing, the stream goes on"
        held.rollback()
        assert node.transactions.sessions.open == 0
    with native(node, Role.READ) as check:
        assert check.begin().get(*CELL) == b"100"
    with service(node.address, Role.WRITE, stream=stream) as writer_svc:
        held = writer_svc.begin([CELL])
        held.set(*CELL, b"90")
        assert held.commit() > held.txn_id
    with native(node, Role.READ) as check:
        assert check.begin().get(*CELL) == b"90"


def test_a_stream_checks_each_request_against_the_callers_role(node: Node) -> None:
    """A Commit on a reader's stream is answered PERMISSION_DENIED as that request's
    result, in order, between answered reads: the stream is neither ended nor trusted."""
    with connect_channel(node.address, token=TOKENS[Role.READ]) as channel:
        sent: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        replies = channel.stream_stream(f"/{SERVICE_NAME}/Stream")(iter(sent.get, None),
                                                                  timeout=WAIT)

        def ask(request: pb.TxnStreamRequest) -> pb.TxnStreamResponse:
            sent.put(request.SerializeToString())
            return pb.TxnStreamResponse.FromString(next(replies))

        begun = ask(pb.TxnStreamRequest(begin=pb.TxnBeginRequest()))
        txn_id = begun.begin.txn_id
        assert txn_id > 0
        commit = ask(pb.TxnStreamRequest(commit=pb.TxnCommitRequest(
            txn_id=txn_id, writes=[pb.TxnWrite(row=CELL[0], column=CELL[1], value=b"x")])))
        assert commit.WhichOneof("result") == "error"
        assert commit.error.code == Code.PERMISSION_DENIED.value[0]
        got = ask(pb.TxnStreamRequest(get=pb.TxnGetRequest(txn_id=txn_id, row=CELL[0],
                                                          column=CELL[1])))
        assert got.WhichOneof("result") == "get" and not got.get.value.found
        ended = ask(pb.TxnStreamRequest(rollback=pb.TxnRollbackRequest(txn_id=txn_id)))
        assert ended.WhichOneof("result") == "rollback"
        sent.put(None)
        assert list(replies) == []


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_transaction_is_its_callers_alone(node: Node, stream: bool) -> None:
    """Ids are timestamps, easy to guess: another caller's calls on an open transaction
    are answered NOT_FOUND, as for an id the node does not hold -- a reader cannot end
    or hold up a writer's transaction, another writer cannot commit into it or decide
    it -- and the owner's transaction is untouched and commits."""
    with service(node.address, Role.WRITE) as owner:
        txn = owner.begin([CELL])
        txn.set(*CELL, b"mine")
        with service(node.address, Role.READ, stream=stream) as reader, \
                service(node.address, None, token=OTHER_WRITER, stream=stream) as writer:
            for caller in (reader, writer):
                must_fail(Code.NOT_FOUND, caller.call, "Get", pb.TxnGetRequest(
                    txn_id=txn.txn_id, row=CELL[0], column=CELL[1]))
                must_fail(Code.NOT_FOUND, caller.call, "BatchGet", pb.TxnBatchGetRequest(
                    txn_id=txn.txn_id, cells=[node_pb2.Key(row=CELL[0], column=CELL[1])]))
                must_fail(Code.NOT_FOUND, caller.call, "Scan",
                          pb.TxnScanRequest(txn_id=txn.txn_id))
                must_fail(Code.NOT_FOUND, caller.call, "Rollback",
                          pb.TxnRollbackRequest(txn_id=txn.txn_id))
            forged = pb.TxnCommitRequest(txn_id=txn.txn_id, writes=[
                pb.TxnWrite(row=CELL[0], column=CELL[1], value=b"theirs")])
            must_fail(Code.NOT_FOUND, writer.call, "Commit", forged)
        assert node.transactions.sessions.open == 1
        committed = txn.commit()
    with native(node, Role.READ) as check:
        reader_txn = check.begin()
        assert reader_txn.get(*CELL) == b"mine" and reader_txn.start_ts > committed


def test_one_token_cannot_take_every_open_transaction_of_the_node(tmp_path: Path) -> None:
    """Open transactions are bounded per token as well as per node: a token at its
    bound is refused RESOURCE_EXHAUSTED naming the bound, and another token still
    begins; ending one of the first token's lets it begin again."""
    with Node(tmp_path / "node", "127.0.0.1:0", policy=token_policy(), max_transactions=10,
              max_transactions_per_token=3) as node, \
            service(node.address, Role.WRITE) as greedy, \
            service(node.address, None, token=OTHER_WRITER) as other:
        held = [greedy.begin() for _ in range(3)]
        refused = must_fail(Code.RESOURCE_EXHAUSTED, greedy.begin)
        assert "--max-transactions-per-token 3" in refused.details, refused.details
        others = [other.begin() for _ in range(3)]  # not starved by the first token
        assert node.transactions.sessions.open == 6
        held.pop().rollback()
        held.append(greedy.begin())
        for txn in held + others:
            txn.rollback()
        assert node.transactions.sessions.open == 0


def test_transactions_over_tls_and_mutual_tls(tmp_path: Path) -> None:
    """The service speaks TLS on the node's port like every other: a caller trusting the
    node's CA commits; a plain-text caller gets no answer; with mutual TLS a caller
    without a client certificate is refused in the handshake."""
    tls, ca_file, client_cert, client_key = mutual_tls(tmp_path, "caller")
    with Node(tmp_path / "node", "127.0.0.1:0", policy=token_policy(tls=tls)) as node:
        with service(node.address, Role.WRITE, tls_ca=ca_file, tls_cert=client_cert,
                     tls_key=client_key) as caller:
            txn = caller.begin()
            txn.set(*CELL, b"7")
            committed = txn.commit()
            assert caller.begin([CELL]).values == {CELL: b"7"}
        with ServiceClient(node.address, timeout=5) as plain:
            assert must_fail(Code.UNAVAILABLE, plain.begin).code == Code.UNAVAILABLE
        with service(node.address, Role.WRITE, tls_ca=ca_file) as no_cert:
            must_fail(Code.UNAVAILABLE, no_cert.begin)
        with Client.connect(node.address, token=TOKENS[Role.READ], tls_ca=ca_file,
                            tls_cert=client_cert, tls_key=client_key, timeout=WAIT) as check:
            reader = check.begin()
            assert reader.get(*CELL) == b"7" and reader.start_ts > committed


@pytest.mark.parametrize("native", ["0", "1"], ids=["grpc", "native"])
def test_the_node_js_example_reaches_a_node_with_tokens_and_mutual_tls(tmp_path: Path,
                                                                      native: str) -> None:
    """examples/node's bank (its client, percolator.js) on a node with tokens and mutual
    TLS, by gRPC and in TXN frames on the native port: --token / PERCOLATOR_TOKEN,
    --tls-ca, --tls-cert and --tls-key; without a token it is UNAUTHENTICATED, with a
    read token its writes are PERMISSION_DENIED."""
    node_js = shutil.which("node")
    if node_js is None:
        pytest.skip("node (Node.js) is not installed: this test runs examples/node")
    if not (REPO / "examples" / "node" / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("examples/node has no node_modules: run `npm ci --prefix examples/node`"
                    " (.ci/run does) before the tests")
    tls, ca_file, client_cert, client_key = mutual_tls(tmp_path, "bank")
    with Node(tmp_path / "node", "127.0.0.1:0", policy=token_policy(tls=tls)) as node:

        def bank(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
            env = {k: v for k, v in os.environ.items() if k != "PERCOLATOR_TOKEN"}
            if token is not None:
                env["PERCOLATOR_TOKEN"] = token
            return subprocess.run(
                [node_js, str(REPO / "examples" / "node" / "bank.js"), node.address, *args,
                 "--native", native, "--tls-ca", str(ca_file), "--tls-cert", str(client_cert),
                 "--tls-key", str(client_key)], capture_output=True, text=True, timeout=WAIT,
                env=env, check=False)

        def answer(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
            assert done.returncode == 0, done.stderr
            parsed: dict[str, object] = json.loads(done.stdout)
            return parsed

        assert answer(bank("load", "--token", TOKENS[Role.WRITE]))["loaded"] == 10
        moved = answer(bank("transfer", "--transfers", "20", "--audit-every", "5",
                            token=TOKENS[Role.WRITE]))  # the token from the environment
        assert moved["committed"] == 20 and moved["badAudits"] == 0, moved
        assert answer(bank("total", "--token", TOKENS[Role.READ])) == {"total": 1000}
        unauthenticated = bank("total")
        assert unauthenticated.returncode == 1
        assert "UNAUTHENTICATED" in unauthenticated.stderr, unauthenticated.stderr
        denied = bank("load", "--token", TOKENS[Role.READ])
        assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr, denied.stderr
        assert answer(bank("total", "--token", TOKENS[Role.READ])) == {"total": 1000}


def test_a_batch_get_gathers_values_only_up_to_the_reply_budget(node: Node,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """Forty cells of 1 MiB named in one BatchGet (and Begin): refused RESOURCE_EXHAUSTED
    after reading about a reply's budget (a quarter of the message limit) plus one value,
    not all 40 MiB; the cells are read in smaller calls."""
    keys = [(b"r%02d" % i, b"c") for i in range(40)]
    with native(node, Role.WRITE) as writer:
        for start in range(0, 40, 8):
            with writer.transaction() as txn:
                for key in keys[start:start + 8]:
                    txn.set(*key, os.urandom(MiB))
    gathered: list[int] = []
    read = node.backend.read

    def counting(*args: object, **kwargs: object) -> object:
        result = read(*args, **kwargs)  # type: ignore[arg-type]
        gathered.append(sum([len(v or b"") for v in result.values.values()]))
        return result

    monkeypatch.setattr(node.backend, "read", counting)
    budget = DEFAULT_LIMITS.max_message_bytes // 4
    with service(node.address, Role.READ) as reader:
        for attempt in (lambda: reader.begin(keys), lambda: reader.begin().batch_get(keys)):
            gathered.clear()
            refused = must_fail(Code.RESOURCE_EXHAUSTED, attempt)
            assert "a reply may carry" in refused.details
            assert 0 < sum(gathered) <= budget + DEFAULT_LIMITS.max_value_bytes, gathered
        held = reader.begin()
        assert all(len(held.batch_get(keys[i:i + 3])) == len(keys[i:i + 3])  # a 4 MiB channel
                   for i in range(0, 40, 3))


def test_a_batch_get_naming_one_large_cell_1000_times_is_refused_in_bounded_memory(
        tmp_path: Path) -> None:
    """The issue's 1,500 reads of a 1 MiB cell, through the Transactions service (1,000
    names a call): one read of the cell, and the reply refused before it holds a
    gigabyte of copies (the node's memory measured during the attack)."""
    with ServerProcess(tmp_path / "data") as server:
        with Client.connect(server.address, timeout=WAIT) as client:
            with client.transaction() as txn:
                txn.set(*CELL, os.urandom(MiB))
        cells = [node_pb2.Key(row=CELL[0], column=CELL[1])] * 1000
        before = server.peak_rss_bytes()
        with ServiceClient(server.address, timeout=WAIT) as caller:
            held = caller.begin()
            for request in (lambda: caller.call("Begin", pb.TxnBeginRequest(reads=cells)),
                            lambda: caller.call("BatchGet", pb.TxnBatchGetRequest(
                                txn_id=held.txn_id, cells=cells))):
                must_fail(Code.RESOURCE_EXHAUSTED, request)
            assert held.batch_get([CELL] * 3)[CELL] is not None
        peak = server.peak_rss_bytes()
        assert peak - before < 300 * MiB, (before, peak)


def test_native_frames_run_as_their_connections_caller(node: Node) -> None:
    """On the native transport a connection's TXN frames run as the caller whose token
    its HELLO carried (the node binds its identity and role, as for its batches): a
    transaction is that caller's alone -- another connection's calls on it are NOT_FOUND,
    another writer cannot commit into it -- and a reader's Commit is PERMISSION_DENIED,
    the connection going on."""
    port = node.native.port if node.native is not None else 0
    assert port, "a node with tokens serves the native transport on loopback"

    def connect(token: str) -> ServiceClient:
        return ServiceClient(node.address, timeout=WAIT,
                             frames=NativeFrames("127.0.0.1", port, WAIT, token))

    opened = node.native.open_connections if node.native is not None else 0
    with connect(TOKENS[Role.WRITE]) as owner, connect(TOKENS[Role.READ]) as reader, \
            connect(OTHER_WRITER) as writer:
        assert node.native is not None and node.native.open_connections == opened + 3
        txn = owner.begin([CELL])
        txn.set(*CELL, b"mine")
        for caller in (reader, writer):
            must_fail(Code.NOT_FOUND, caller.call, "Get", pb.TxnGetRequest(
                txn_id=txn.txn_id, row=CELL[0], column=CELL[1]))
            must_fail(Code.NOT_FOUND, caller.call, "Rollback",
                      pb.TxnRollbackRequest(txn_id=txn.txn_id))
        must_fail(Code.NOT_FOUND, writer.call, "Commit", pb.TxnCommitRequest(
            txn_id=txn.txn_id, writes=[pb.TxnWrite(row=CELL[0], column=CELL[1],
                                                   value=b"theirs")]))
        held = reader.begin([CELL])
        held.set(*CELL, b"the reader's")
        refused = must_fail(Code.PERMISSION_DENIED, held.commit)
        assert "Commit needs the write role" in refused.details
        held.rollback()  # the reader's connection goes on
        assert node.transactions.sessions.open == 1
        committed = txn.commit()
    with native(node, Role.READ) as check:
        after = check.begin()
        assert after.get(*CELL) == b"mine" and after.start_ts > committed


def test_another_token_cannot_end_a_transaction_whose_begin_is_still_reading(
        tmp_path: Path) -> None:
    """Ids are timestamps, easily guessed.  While a Begin waits on a lock for its first
    read, another token's Commit naming the id must find it held (NOT_FOUND, deciding
    nothing), not answer it from the data, which would roll it back under its owner."""
    with Node(tmp_path / "node", "127.0.0.1:0", policy=token_policy(),
              txn_lock_wait=WAIT) as node:
        backend = node.backend
        lock_ts = backend.timestamps(1)
        assert backend.prewrite(PrewriteRequest(b"percolator", lock_ts, CELL, 60_000, [
            (CELL[0], [CellWrite(CELL[1], PUT, b"locked")])])) is None
        owner, other = service(node.address, Role.WRITE), service(
            node.address, None, token=OTHER_WRITER)
        begun: queue.Queue[ServiceTxn] = queue.Queue()
        reader = threading.Thread(target=lambda: begun.put(owner.begin([CELL])))
        reader.start()
        try:
            deadline = time.monotonic() + WAIT
            while not len(backend.snapshots):  # its snapshot is taken: it reads, and waits
                assert time.monotonic() < deadline, "the Begin never took its snapshot"
                threading.Event().wait(0.005)
            for guess in range(lock_ts + 1, lock_ts + 4):
                err = must_fail(Code.NOT_FOUND, other.call, "Commit", pb.TxnCommitRequest(
                    txn_id=guess, writes=[pb.TxnWrite(row=b"x", column=b"y", value=b"z")]))
                assert "no open transaction" in str(err)
        finally:
            backend.rollback(b"percolator", lock_ts, CELL, [])  # the Begin reads on
            reader.join(WAIT)
        txn = begun.get(timeout=WAIT)
        txn.set(b"x", b"y", b"mine")
        assert txn.commit() > txn.txn_id
        owner.close()
        other.close()

"""The Transactions service used by other processes: Node.js clients (the example client in
examples/node, run by node) and their Python twins (txn_service_child.py, through the
service's contract only), beside native Python clients, on real nodes.

Each scenario runs from both languages; the Node.js runs skip only where ``node`` is not
installed (``.ci/run`` installs examples/node's packages from the npm registry).  The
Python twins also run it over the node's native transport ("python-native": the same
requests in TXN frames, docs/grpc.md).
"""

from __future__ import annotations

import random
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from percolator import Client, Transaction
from percolator.node import Node
from percolator.v1 import transactions_pb2 as pb
from tests.procs import REPO, JsonLinesProcess, ServerProcess

from .txn_service_client import ServiceClient, ServiceError

NODE = shutil.which("node")
EXAMPLES = REPO / "examples" / "node"
SCENARIOS = REPO / "tests" / "node" / "scenarios.js"
WAIT = 120.0  # bound of every wait for a process or a condition
RUNNERS = ["python", "python-native", "node"]
INITIAL = 100
COLUMN = b"balance"


def need(runner: str) -> None:
    if runner != "node":
        return
    if NODE is None:
        pytest.skip("node (Node.js) is not installed: this scenario runs the Node.js client")
    if not (EXAMPLES / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("examples/node has no node_modules: run `npm ci --prefix examples/node`"
                    " (.ci/run does) before the tests")


def scenario(runner: str, name: str, address: str, *args: object,
             calls: str = "unary") -> JsonLinesProcess:
    """A process running scenario ``name`` against ``address`` in ``runner``'s language
    (``calls`` of Node.js: "unary", "stream" on one Stream call, or "native" as TXN frames
    of the node's native transport; "python-native": Python, in TXN frames)."""
    need(runner)
    words = [str(a) for a in args]
    if runner == "node":
        assert NODE is not None
        return JsonLinesProcess([NODE, str(SCENARIOS), *([] if calls == "unary" else
                                                         [f"--{calls}"]), name, address, *words])
    assert calls == "unary"
    native = ["--native"] if runner == "python-native" else []
    return JsonLinesProcess([sys.executable, "-m", "tests.percolator.txn_service_child",
                             *native, name, address, *words])


def until(condition: object, what: str, timeout: float = WAIT) -> None:
    """Poll ``condition()`` until true (bounded)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with Node(tmp_path / "node", "127.0.0.1:0") as n:
        yield n


# --- bank transfers from every kind of client at once --------------------------------------------


def account(prefix: str, i: int) -> bytes:
    return f"{prefix}/acct{i:04d}".encode()


def native_transfers(address: str, prefix: str, accounts: int, count: int, seed: int,
                     moves: list[tuple[int, int, int]], errors: list[BaseException]) -> None:
    rng = random.Random(seed)
    try:
        with Client.connect(address) as client:
            for _ in range(count):
                a, b = rng.sample(range(accounts), 2)
                amount = rng.randint(1, 10)

                def move(txn: Transaction) -> bool:
                    ka, kb = account(prefix, a), account(prefix, b)
                    got = txn.get_many([(ka, COLUMN), (kb, COLUMN)])
                    va, vb = int(got[(ka, COLUMN)] or 0), int(got[(kb, COLUMN)] or 0)
                    if va < amount:
                        return False
                    txn.set(ka, COLUMN, b"%d" % (va - amount))
                    txn.set(kb, COLUMN, b"%d" % (vb + amount))
                    return True

                if client.run(move, max_attempts=100):
                    moves.append((a, b, amount))
    except BaseException as exc:  # reported by the test
        errors.append(exc)


@pytest.mark.parametrize("callers", ["python", "python+native-frames", "python+node"])
def test_bank_transfers_from_service_and_native_clients_at_once(node: Node,
                                                                callers: str) -> None:
    """Every snapshot sums to the total and every account ends at exactly its start plus
    what each client says it moved (a lost update would break it)."""
    with_node = callers == "python+node"
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    prefix, accounts, per_client = f"bank{seed}", 6, 30
    with Client.connect(node.address) as native, native.transaction() as txn:
        for i in range(accounts):
            txn.set(account(prefix, i), COLUMN, b"%d" % INITIAL)
    total = accounts * INITIAL
    if with_node:
        need("node")
    procs = [scenario("python", "bank", node.address, prefix, accounts, per_client, seed + 1)]
    if callers == "python+native-frames":
        procs += [scenario("python-native", "bank", node.address, prefix, accounts, per_client,
                           seed + k) for k in (2, 3)]
    if with_node:
        procs += [JsonLinesProcess([NODE or "node", str(EXAMPLES / "bank.js"), node.address,
                                    "transfer", "--accounts", str(accounts), "--prefix",
                                    prefix, "--transfers", str(per_client), "--seed",
                                    str(seed + k), *flags])
                  for k, flags in ((2, []), (3, ["--stream", "1"]), (4, ["--native", "1"]))]
    moves: list[tuple[int, int, int]] = []
    errors: list[BaseException] = []
    natives = [threading.Thread(target=native_transfers, args=(
        node.address, prefix, accounts, per_client, seed + 10 + k, moves, errors))
        for k in range(2)]
    for t in natives:
        t.start()
    audits = 0
    with Client.connect(node.address) as auditor, ServiceClient(node.address) as svc:
        cells = [(account(prefix, i), COLUMN) for i in range(accounts)]
        while any(p.proc.poll() is None for p in procs) or any(t.is_alive() for t in natives):
            seen = auditor.run(lambda txn: txn.get_many(cells))
            assert sum(int(v or 0) for v in seen.values()) == total
            through = svc.begin(cells)
            through.rollback()
            assert sum(int(v or 0) for v in through.values.values()) == total
            audits += 1
            assert audits < 100_000
        for t in natives:
            t.join(WAIT)
        assert not errors, errors
        reports = [p.next(WAIT) for p in procs]
        assert all(p.wait(WAIT) == 0 for p in procs)
        final = auditor.run(lambda txn: txn.get_many(cells))
    expected = [INITIAL] * accounts
    for report in reports:
        assert report["committed"] == per_client and report["badAudits"] == 0, report
        moves += [tuple(m) for m in report["moves"]]  # type: ignore[attr-defined,misc]
    for a, b, amount in moves:
        expected[a] -= amount
        expected[b] += amount
    assert [int(final[c] or 0) for c in cells] == expected
    assert audits > 0


# --- a client killed mid-commit -------------------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_client_killed_mid_commit_leaves_its_writes_whole_and_no_lock(
        tmp_path: Path, runner: str) -> None:
    """The caller dies (kill -9) after sending a two-phase Commit, while the node holds its
    locks between prewrite and commit: the node runs the commit to its end, every cell
    written, no lock left.  The node holds them past their TTL (3 s), so only its
    heartbeats keep the waiting reader from rolling the transaction back."""
    need(runner)
    env = {"PERCOLATOR_FAILPOINTS": "commit.after_prewrite=sleep(4500)"}
    cells, size = 6, 3_000_000  # over one step's 16 MiB of values: two-phase commit
    with ServerProcess(tmp_path / "n", env=env) as server, \
            Client.connect(server.address) as native:
        keys = [(f"big/{i}".encode(), b"blob") for i in range(cells)]
        writer = scenario(runner, "commit-big", server.address, "big", cells, size)
        try:
            assert "committing" in writer.next(WAIT)
            until(lambda: len(native.backend.read(native.table, None, keys).locked) == cells,
                  "the commit's locks (mid-commit)")
        finally:
            writer.kill()
        # a snapshot taken mid-commit waits for the locks, then sees all or nothing
        values = native.run(lambda txn: txn.get_many(keys))
        assert len(set(values.values())) == 1
        until(lambda: not native.backend.read(native.table, None, keys).locked,
              "the commit to end")
        after = native.backend.read(native.table, None, keys)
        assert set(after.values.values()) == {b"x" * size}


@pytest.mark.parametrize("failpoint, committed", [
    ("commit.after_prewrite", False), ("commit.after_commit_primary", True)])
def test_a_node_crash_mid_commit_is_decided_by_the_retried_commit(
        tmp_path: Path, failpoint: str, committed: bool) -> None:
    """The node dies (exit failpoint) inside a two-phase Commit: the caller gets UNAVAILABLE;
    the same Commit sent to the restarted node is answered from the data, never a second
    commit, and leaves the cells whole with no lock."""
    data = tmp_path / "n"
    cells, size = 6, 3_000_000
    keys = [(f"big/{i}".encode(), b"blob") for i in range(cells)]
    with ServerProcess(data, env={"PERCOLATOR_FAILPOINTS": f"{failpoint}=exit"}) as server:
        with ServiceClient(server.address) as svc:
            txn = svc.begin()
            for row, column in keys:
                txn.set(row, column, b"y" * size)
            request = txn.commit_request()
            with pytest.raises(ServiceError) as info:
                txn.commit()
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert server.proc is not None and server.proc.wait(WAIT) != 0
    with ServerProcess(data) as server, ServiceClient(server.address) as svc, \
            Client.connect(server.address) as native:
        if committed:
            reply = svc.call("Commit", request)
            commit_ts = reply.commit_ts  # type: ignore[attr-defined]
            assert commit_ts > txn.txn_id
            assert svc.call("Commit", request).commit_ts == commit_ts  # type: ignore[attr-defined]
        else:
            with pytest.raises(ServiceError) as info:
                svc.call("Commit", request)
            assert info.value.code == grpc.StatusCode.NOT_FOUND
        after = native.backend.read(native.table, None, keys)
        assert after.locked == []
        assert set(after.values.values()) == ({b"y" * size} if committed else {None})


# --- abandoned transactions ---------------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_an_abandoned_transaction_expires_and_frees_its_snapshot(node: Node, runner: str) -> None:
    sessions = node.transactions.sessions
    caller = scenario(runner, "begin-and-hang", node.address, 300)
    try:
        txn_id = int(str(caller.next(WAIT)["begun"]))
        assert sessions.open == 1 and node.backend.snapshots.oldest() == txn_id
    finally:
        caller.kill()
    until(lambda: sessions.open == 0, "the abandoned transaction to expire")
    assert len(node.backend.snapshots) == 0
    with ServiceClient(node.address) as svc, pytest.raises(ServiceError) as info:
        svc.call("Rollback", pb.TxnRollbackRequest(txn_id=txn_id))
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_node_sees_its_idle_transaction_expire(node: Node) -> None:
    caller = scenario("node", "expire", node.address, 300)
    assert "begun" in caller.next(WAIT)
    assert caller.next(WAIT) == {"afterTtl": "NOT_FOUND"}
    assert caller.wait(WAIT) == 0


# --- what a Node.js caller sees ------------------------------------------------------------


@pytest.mark.parametrize("calls", ["unary", "stream", "native"])
def test_wrong_input_from_node_is_invalid_argument(node: Node, calls: str) -> None:
    caller = scenario("node", "bad-input", node.address, calls=calls)
    codes = caller.next(WAIT)
    assert caller.wait(WAIT) == 0
    assert codes.pop("unknownTxn") == "NOT_FOUND"
    assert codes.pop("afterwards") == "OK"  # the transaction stayed open and committed
    assert set(codes.values()) == {"INVALID_ARGUMENT"}, codes
    assert len(codes) == 8


@pytest.mark.parametrize("calls", ["unary", "stream", "native"])
def test_node_reads_the_conflicting_cell_from_the_status_details(node: Node, calls: str) -> None:
    caller = scenario("node", "conflict", node.address, "hot", "col", calls=calls)
    got = caller.next(WAIT)
    assert caller.wait(WAIT) == 0
    assert got["second"] == "ABORTED"
    assert got["conflict"] == {"reason": "WRITE_CONFLICT", "row": "hot", "column": "col",
                               "commitTs": got["committed"]}

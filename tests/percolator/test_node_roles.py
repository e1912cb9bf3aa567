"""The node checks the protocol: a ``write`` client cannot reach around it (issue 16).

Each bypass the issue found is sent as an attacker would, as raw protobuf over gRPC with
a ``write`` token: through the tablet service (``MutateRows``, ``SplitTablet``) and as
commands of the node's own batches (``Node.Batch``: ``mutate_rows``; ``prewrite`` with a
TTL of its choosing).  Each is refused -- PERMISSION_DENIED (or INVALID_ARGUMENT for a
request the protocol cannot express) -- and the data is unchanged.  The same bytes sent
with an ``admin`` token do what the attack meant, so each test could fail: it shows the
attack is real, and that only the role stops it.  In a batch, a refused command fails
alone: the command beside it is answered.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from bigtable_lite import MAX_TS, PermissionDenied, Put, RowMutation, RowRead, ScanRequest
from bigtable_lite._service import SERVICE_NAME as TABLET
from bigtable_lite.auth import Role, TokenTable
from bigtable_lite.server import ServerPolicy
from bigtable_lite.v1 import tablet_pb2 as tpb
from percolator import Client, layout, records
from percolator._backend import CellWrite, Key, PrewriteRequest
from percolator._node_codec import SERVICE_NAME as NODE
from percolator._notify import log as notify_log
from percolator.errors import PercolatorError
from percolator.node import Node
from percolator.oracle import ORACLE_TABLE
from percolator.v1 import node_pb2 as npb
from percolator.v1 import oracle_pb2

WAIT = 30.0
Code = grpc.StatusCode
TOKENS = {role: f"{role.label}-token-{os.urandom(8).hex()}" for role in Role}
T = b"bank"


@dataclass
class Served:
    node: Node
    path: Path

    @property
    def address(self) -> str:
        return self.node.address

    def restart(self) -> None:
        """Stop the node and start another on the same data directory (a restart)."""
        self.node.stop()
        self.node = start_node(self.path)


def start_node(path: Path) -> Node:
    policy = ServerPolicy(tokens=TokenTable({token: role for role, token in TOKENS.items()}))
    return Node(path, "127.0.0.1:0", policy=policy, max_workers=16).start()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(start_node(tmp_path / "data"), tmp_path / "data")
    try:
        yield s
    finally:
        s.node.stop()


def connect(served: Served, role: Role, **kwargs: object) -> Client:
    return Client.connect(served.address, table=T, token=TOKENS[role], timeout=WAIT,
                          **kwargs)  # type: ignore[arg-type]


class Attacker:
    """Raw protobuf calls with one role's token, as anyone who reaches the port could make."""

    def __init__(self, served: Served, role: Role) -> None:
        self._channel = grpc.insecure_channel(served.address)
        self._metadata = (("authorization", f"Bearer {TOKENS[role]}"),)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Attacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, path: str, request: bytes) -> tuple[grpc.StatusCode, bytes]:
        try:
            reply = self._channel.unary_unary(path)(request, metadata=self._metadata,
                                                    timeout=WAIT)
        except grpc.RpcError as exc:
            return exc.code(), b""
        return Code.OK, reply

    def mutate_rows(self, rows: Sequence[tpb.RowMutation], sync: bool = False) -> grpc.StatusCode:
        request = tpb.MutateRowsRequest(rows=rows, sync=sync)
        return self._call(f"/{TABLET}/MutateRows", request.SerializeToString())[0]

    def split(self, table: bytes, row: bytes) -> grpc.StatusCode:
        request = tpb.SplitTabletRequest(table=table, row=row)
        return self._call(f"/{TABLET}/SplitTablet", request.SerializeToString())[0]

    def batch(self, commands: Sequence[npb.Command]) -> list[npb.Result]:
        code, reply = self._call(f"/{NODE}/Batch", npb.BatchRequest(
            commands=commands).SerializeToString())
        assert code is Code.OK, code
        results = list(npb.BatchResponse.FromString(reply).results)
        assert len(results) == len(commands)
        return results

    def batch_mutate(self, rows: Sequence[tpb.RowMutation]) -> grpc.StatusCode:
        """``rows`` as a mutate_rows command beside a timestamp request, in one batch: the
        code of the mutation (the timestamp must be answered whatever it is)."""
        mutate, stamp = self.batch([
            npb.Command(mutate_rows=tpb.MutateRowsRequest(rows=rows)),
            npb.Command(get_timestamps=oracle_pb2.GetTimestampsRequest(count=1))])
        assert stamp.WhichOneof("kind") == "get_timestamps" and stamp.get_timestamps.first > 0
        return command_code(mutate)


def command_code(result: npb.Result) -> grpc.StatusCode:
    if result.WhichOneof("kind") != "error":
        return Code.OK
    return next(c for c in Code if c.value[0] == result.error.code)


@pytest.fixture
def attacker(served: Served) -> Iterator[Attacker]:
    a = Attacker(served, Role.WRITE)
    yield a
    a.close()


@pytest.fixture
def admin(served: Served) -> Iterator[Attacker]:
    a = Attacker(served, Role.ADMIN)
    yield a
    a.close()


def put(table: bytes, row: bytes, column: bytes, ts: int, value: bytes) -> tpb.RowMutation:
    return tpb.RowMutation(table=table, row=row, mutations=[tpb.Mutation(
        put=tpb.Put(column=column, ts=ts, value=value))])


def refused_both_ways(attacker: Attacker, rows: Sequence[tpb.RowMutation]) -> None:
    """The write-role attacker's rows are refused by the tablet service and in a batch."""
    assert attacker.mutate_rows(rows) is Code.PERMISSION_DENIED
    assert attacker.mutate_rows(rows, sync=True) is Code.PERMISSION_DENIED
    assert attacker.batch_mutate(rows) is Code.PERMISSION_DENIED


def balance(served: Served, row: bytes = b"alice") -> bytes | None:
    with connect(served, Role.READ) as client:
        return client.begin().get(row, b"balance")


def committed(served: Served, row: bytes, value: bytes) -> tuple[int, int]:
    """Commit ``value`` to (row, balance) as a write client; (start_ts, commit_ts)."""
    with connect(served, Role.WRITE) as client:
        txn = client.begin()
        txn.set(row, b"balance", value)
        return txn.start_ts, txn.commit()


# --- the eight bypasses -------------------------------------------------------------------------


def test_rewrite_a_committed_value(served: Served, attacker: Attacker, admin: Attacker) -> None:
    start_ts, commit_ts = committed(served, b"alice", b"100")
    forged = [put(T, b"alice", layout.write_column(b"balance"), commit_ts,
                  records.write_bytes(records.PUT, start_ts, b"1000000"))]
    refused_both_ways(attacker, forged)
    assert balance(served) == b"100"
    assert admin.mutate_rows(forged) is Code.OK
    assert balance(served) == b"1000000"  # what the attack would have done


def test_change_what_a_transaction_reads_between_two_reads_of_its_snapshot(
        served: Served, attacker: Attacker, admin: Attacker) -> None:
    committed(served, b"alice", b"100")
    with connect(served, Role.WRITE) as victim:
        victim.backend.timestamps(10)  # a gap below the snapshot for the forged write
        snapshot = victim.backend.timestamps(1)
        key = (b"alice", b"balance")

        def read() -> bytes | None:
            result = victim.backend.read(T, snapshot, [key])
            assert not result.locked
            return result.values[key]

        assert read() == b"100"
        below = [put(T, b"alice", layout.write_column(b"balance"), snapshot - 1,
                     records.write_bytes(records.PUT, snapshot - 2, b"0"))]
        refused_both_ways(attacker, below)
        assert read() == b"100"
        assert admin.mutate_rows(below) is Code.OK
        assert read() == b"0"  # the same snapshot read something else


def test_lock_a_row_forever(served: Served, attacker: Attacker, admin: Attacker) -> None:
    start_ts, _ = committed(served, b"alice", b"100")
    lock = [put(T, b"alice", layout.lock_column(b"balance"), layout.LOCK_SLOT_TS,
                records.lock_bytes(start_ts + 1, records.PUT, b"alice", b"balance",
                                   MAX_TS, True, b"0"))]
    refused_both_ways(attacker, lock)
    # Through the protocol a lock lives at most MAX_TTL_MS unless its owner heartbeats.
    prewrite = npb.Command(prewrite=npb.PrewriteRequest(
        table=T, start_ts=start_ts + 1, primary=npb.Key(row=b"alice", column=b"balance"),
        ttl_ms=2**32 - 1, rows=[npb.RowWrites(row=b"alice", cells=[
            npb.CellWrite(column=b"balance", value=b"0")])]))
    [result] = attacker.batch([prewrite])
    assert command_code(result) is Code.INVALID_ARGUMENT
    assert "ttl_ms" in result.error.message
    with connect(served, Role.READ) as reader:
        key = (b"alice", b"balance")
        assert reader.backend.read(T, None, [key]).values == {key: b"100"}
        assert admin.mutate_rows(lock) is Code.OK
        assert reader.backend.read(T, None, [key]).locked  # for good


@pytest.mark.parametrize("mark", [1, MAX_TS], ids=["back", "to-2^64-1"])
def test_set_the_oracles_high_water_mark(served: Served, attacker: Attacker, mark: int
                                         ) -> None:
    with connect(served, Role.WRITE) as client:
        handed_out = client.backend.timestamps(100) + 99
    forged = [put(ORACLE_TABLE, b"high_water", b"mark", 0, struct.pack(">Q", mark))]
    refused_both_ways(attacker, forged)
    served.restart()
    with connect(served, Role.WRITE) as client:
        assert client.backend.timestamps(1) > handed_out
    with Attacker(served, Role.ADMIN) as admin:
        assert admin.mutate_rows(forged) is Code.OK
    served.restart()
    with connect(served, Role.WRITE) as client:
        if mark == MAX_TS:
            with pytest.raises(PercolatorError):  # every transaction fails from now on
                client.backend.timestamps(1)
        else:
            assert client.backend.timestamps(1) <= handed_out  # stale snapshots


def test_commit_another_clients_transaction_with_different_content(
        served: Served, attacker: Attacker, admin: Attacker) -> None:
    with connect(served, Role.WRITE, one_phase=False) as victim:
        start_ts = victim.backend.timestamps(1)
        primary: Key = (b"carol", b"balance")
        assert victim.backend.prewrite(PrewriteRequest(
            T, start_ts, primary, 60_000, [(b"carol", [CellWrite(b"balance", b"P", b"5")])]
        )) is None
    # The commit command carries no values (they come from the prewritten lock); what an
    # attacker can do is rewrite the lock, then commit.
    forged = [put(T, b"carol", layout.lock_column(b"balance"), layout.LOCK_SLOT_TS,
                  records.lock_bytes(start_ts, records.PUT, b"carol", b"balance",
                                     MAX_TS, True, b"999"))]
    refused_both_ways(attacker, forged)
    commit = npb.Command(commit=npb.CommitRequest(
        table=T, start_ts=start_ts, primary=npb.Key(row=b"carol", column=b"balance")))
    [result] = attacker.batch([commit])  # committing it (rolling it forward) is allowed
    assert result.WhichOneof("kind") == "commit" and result.commit.committed
    assert balance(served, b"carol") == b"5"  # with the victim's content

    with connect(served, Role.WRITE) as victim:  # the same attack, by an admin
        start_ts = victim.backend.timestamps(1)
        assert victim.backend.prewrite(PrewriteRequest(
            T, start_ts, (b"dave", b"balance"), 60_000,
            [(b"dave", [CellWrite(b"balance", b"P", b"5")])])) is None
    assert admin.mutate_rows([put(T, b"dave", layout.lock_column(b"balance"),
                                  layout.LOCK_SLOT_TS, records.lock_bytes(
                                      start_ts, records.PUT, b"dave", b"balance", MAX_TS,
                                      True, b"999"))]) is Code.OK
    [result] = admin.batch([npb.Command(commit=npb.CommitRequest(
        table=T, start_ts=start_ts, primary=npb.Key(row=b"dave", column=b"balance")))])
    assert result.commit.committed
    assert balance(served, b"dave") == b"999"


def log_entries(served: Served) -> list[tuple[bytes, bytes]]:
    """(log row, data row) of every entry in T's notification log."""
    return [(row.row, cell.column) for row in served.node.store.scan(
        ScanRequest(layout.notify_table(T))) for cell in row.cells]


def registry(served: Served) -> list[bytes]:
    [cells] = served.node.store.read_rows([RowRead(layout.config_table(T), layout.OBSERVED_ROW)])
    return [c.column for c in cells]


def test_delete_notifications_or_the_observed_column_registry(
        served: Served, attacker: Attacker, admin: Attacker) -> None:
    """Wiping an entry of the notification log, deleting one exactly, forging one,
    unregistering a column, or writing the registry through a transaction on the config
    table: all refused.  Workers hand back handled entries with the Done verb."""
    with connect(served, Role.WRITE) as client:
        client.notifications.register(T, b"balance")
    committed(served, b"alice", b"100")
    notify, config = layout.notify_table(T), layout.config_table(T)
    [(log_row, data_row)] = log_entries(served)
    assert data_row == b"alice" and registry(served) == [b"balance"]
    wipe = [tpb.RowMutation(table=notify, row=log_row, mutations=[tpb.Mutation(
        delete_range=tpb.DeleteRange(column=data_row, min_ts=0, max_ts=MAX_TS))])]
    handled = [tpb.RowMutation(table=notify, row=log_row, mutations=[tpb.Mutation(
        delete_version=tpb.DeleteVersion(column=data_row, ts=0))])]
    column, bucket, position = notify_log.decode_key(log_row)
    forge = [put(notify, notify_log.log_key(column, bucket, position + 1), b"bob", 0,
                 notify_log.encode_entry(notify_log.WRITE, position + 1))]
    unregister = [tpb.RowMutation(table=config, row=layout.OBSERVED_ROW, mutations=[
        tpb.Mutation(delete_version=tpb.DeleteVersion(column=b"balance", ts=0))])]
    for rows in (wipe, handled, forge, unregister):
        refused_both_ways(attacker, rows)
    # A transaction "on" the config table would write its lock over the registration.
    prewrite = npb.Command(one_phase=npb.OnePhaseRequest(
        table=config, start_ts=position, rows=[npb.RowWrites(
            row=layout.OBSERVED_ROW, cells=[npb.CellWrite(column=b"alance", value=b"x")])]))
    [result] = attacker.batch([prewrite])
    assert command_code(result) is Code.INVALID_ARGUMENT
    assert "cannot hold transactions" in result.error.message
    with connect(served, Role.WRITE) as client, pytest.raises(PermissionDenied):
        client.notifications.unregister(T, b"balance")  # the verb: an operator's
    assert log_entries(served) == [(log_row, data_row)] and registry(served) == [b"balance"]
    for rows in (wipe, unregister):
        assert admin.mutate_rows(rows) is Code.OK
    assert log_entries(served) == [] and registry(served) == []


def test_split_the_notify_table_2000_times(served: Served, attacker: Attacker,
                                           admin: Attacker) -> None:
    notify = layout.notify_table(T)
    store = served.node.store
    for i in range(50):  # every one refused; 2,000 would be too
        assert attacker.split(notify, b"row%04d" % i) is Code.PERMISSION_DENIED
    # No batch command splits: a command of a kind the node does not know is refused.
    unknown = npb.Command()
    unknown.MergeFromString(bytes([15 << 3 | 2, 2]) + b"\x0a\x00")  # field 15: no such kind
    [result] = attacker.batch([unknown])
    assert command_code(result) is Code.INVALID_ARGUMENT
    assert len(store.list_tablets(notify)) == 1
    for i in range(5):
        assert admin.split(notify, b"row%04d" % i) is Code.OK
    assert len(store.list_tablets(notify)) == 6


# --- roles per command ----------------------------------------------------------------------


def test_read_role_reads_but_every_write_command_is_refused_alone(served: Served) -> None:
    start_ts, commit_ts = committed(served, b"alice", b"100")
    with Attacker(served, Role.READ) as reader:
        key = npb.Key(row=b"alice", column=b"balance")
        writes = {
            "prewrite": npb.PrewriteRequest(table=T, start_ts=5, primary=key, ttl_ms=1000,
                                            rows=[npb.RowWrites(row=b"alice", cells=[
                                                npb.CellWrite(column=b"balance")])]),
            "commit": npb.CommitRequest(table=T, start_ts=5, primary=key),
            "one_phase": npb.OnePhaseRequest(table=T, start_ts=5, rows=[npb.RowWrites(
                row=b"alice", cells=[npb.CellWrite(column=b"balance")])]),
            "resolve": npb.ResolveRequest(table=T, start_ts=5, cells=[npb.RowColumns(
                row=b"alice", columns=[b"balance"])]),
            "rollback": npb.RollbackRequest(table=T, start_ts=5, primary=key),
            "heartbeat": npb.HeartbeatRequest(table=T, start_ts=5, primary=key, ttl_ms=1000),
            "register_observed": npb.RegisterObservedRequest(table=T, columns=[b"balance"]),
            "mutate_rows": tpb.MutateRowsRequest(rows=[put(T + layout.PARKED_SUFFIX, b"r",
                                                           b"c", 1, b"v")]),
        }
        reads = {
            "get_timestamps": oracle_pb2.GetTimestampsRequest(count=1),
            "read": npb.ReadRequest(table=T, rows=[npb.RowColumns(row=b"alice",
                                                                  columns=[b"balance"])]),
            "scan": npb.ScanRequest(table=T, start_ts=commit_ts, limit=10),
            "observed_columns": npb.ObservedColumnsRequest(table=T),
            "check_txn_status": npb.CheckTxnStatusRequest(table=T, primary=key,
                                                          start_ts=start_ts),
            "read_rows": tpb.ReadRowsRequest(reads=[tpb.RowRead(table=T, row=b"alice")]),
        }
        commands = []
        for kind, msg in [*writes.items(), *reads.items()]:
            command = npb.Command()
            getattr(command, kind).CopyFrom(msg)
            commands.append(command)
        results = reader.batch(commands)
        for kind, result in zip([*writes, *reads], results):
            if kind in writes:
                assert command_code(result) is Code.PERMISSION_DENIED, kind
                needed = "admin" if kind == "mutate_rows" else "write"
                assert f"needs the {needed} role; the call's token has read" in \
                    result.error.message, kind
            else:
                assert result.WhichOneof("kind") == kind, (kind, result)
        assert results[len(writes) + 1].read.values[0].value == b"100"
    assert balance(served) == b"100"


def test_side_tables_take_raw_writes_from_admins_only(served: Served, attacker: Attacker,
                                                     admin: Attacker) -> None:
    """The workers' reported counters and parked notifications are the node's: a write
    client reaches them only through the Notifications verbs (a forged parked entry
    would be replayed into the log, forged counters shown by ``percolator status``)."""
    for rows in ([put(T + layout.WORKERS_SUFFIX, b"w1", b"stats", 0, b"{}")],
                 [put(T + layout.PARKED_SUFFIX, b"alice", b"nbalance", 1, b"x")]):
        refused_both_ways(attacker, rows)
        assert admin.batch_mutate(rows) is Code.OK
    with connect(served, Role.WRITE) as client, pytest.raises(PermissionDenied):
        client.store.mutate_rows([RowMutation(T + layout.PARKED_SUFFIX, b"bob",
                                              (Put(b"ibalance", 0, b"{}"),))], sync=True)
    assert served.node.store.read_rows([RowRead(T + layout.PARKED_SUFFIX, b"bob")]) == [[]]


def test_a_batch_stream_is_checked_per_command_too(served: Served) -> None:
    """The role is read once per stream; every batch on it is checked against it."""
    committed(served, b"alice", b"100")
    with Attacker(served, Role.WRITE) as attacker:
        channel = attacker._channel
        stream = channel.stream_stream(f"/{NODE}/BatchStream")
        forged = tpb.MutateRowsRequest(rows=[put(T, b"alice", layout.write_column(b"balance"),
                                                 1, b"x")])
        batches = [npb.BatchRequest(commands=[
            npb.Command(mutate_rows=forged),
            npb.Command(get_timestamps=oracle_pb2.GetTimestampsRequest(count=1))])] * 3
        replies = list(stream(iter([b.SerializeToString() for b in batches]),
                              metadata=attacker._metadata, timeout=WAIT))
    assert len(replies) == 3
    for raw in replies:
        mutate, stamp = npb.BatchResponse.FromString(raw).results
        assert command_code(mutate) is Code.PERMISSION_DENIED
        assert stamp.WhichOneof("kind") == "get_timestamps"
    assert balance(served) == b"100"


def test_a_batch_without_a_token_is_unauthenticated(served: Served) -> None:
    with grpc.insecure_channel(served.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(f"/{NODE}/Batch")(npb.BatchRequest().SerializeToString(),
                                                 timeout=WAIT)
    assert info.value.code() is Code.UNAUTHENTICATED


def test_reserved_tables_hold_no_transactions(tmp_path: Path) -> None:
    for table in (b"_oracle", b"t.notify", b"t.config", b"t.workers", b"t.parked"):
        with pytest.raises(ValueError, match="cannot hold transactions"):
            Client.embedded(tmp_path / "d", table=table)
    with Client.embedded(tmp_path / "d", table=b"t.notes") as client:  # only the suffixes
        with client.transaction() as txn:
            txn.set(b"r", b"c", b"v")

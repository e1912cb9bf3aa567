"""Garbage collection as users and other layers meet it: the error, its status code, the
safe point handed out with timestamps, the registry of running transactions, and the
commands (`percolator gc`, `percolator serve --gc-*`, `percolator status`)."""

from __future__ import annotations

import gc as python_gc
import json
import logging
import threading
from pathlib import Path

import grpc
import pytest

import percolator
from bigtable_lite import StorageError, WrongTablet
from percolator import Client, SnapshotTooOld, Transaction, TransactionError
from percolator._local import LocalBackend
from percolator._snapshots import ActiveSnapshots, Reporter, SnapshotReport
from percolator._status import command_error, error_for, error_name, status_for
from percolator._transport.framing import tags
from percolator.clock import FakeClock
from percolator.errors import TooManyClients
from percolator.oracle import OracleConflict
from percolator.oracle_client import RemoteOracle
from percolator.v1 import node_pb2
from tests.procs import ServerProcess
from tests.test_cli import in_process, one_error_line, usage_error

from .gc_helpers import eventually, gc_node, settle_reports

Code = grpc.StatusCode


def test_snapshot_too_old_is_a_public_transaction_error() -> None:
    assert "SnapshotTooOld" in percolator.__all__
    assert issubclass(SnapshotTooOld, TransactionError)
    assert "restart the transaction with a new snapshot" in str(SnapshotTooOld.below(3, 7))


def test_snapshot_too_old_maps_to_failed_precondition_and_back_by_name() -> None:
    exc = SnapshotTooOld.below(3, 7)
    code, message = status_for(exc)
    assert code is Code.FAILED_PRECONDITION
    assert "restart the transaction with a new snapshot" in message
    assert error_name(exc) == "SnapshotTooOld"
    back = command_error(code.value[0], message, error_name(exc))
    assert type(back) is SnapshotTooOld and "below the GC safe point 7" in str(back)
    # The code alone still means what it meant; other names keep their classes.
    assert type(error_for(Code.FAILED_PRECONDITION, "m")) is OracleConflict
    assert type(error_for(Code.FAILED_PRECONDITION, "m", "OracleConflict")) is OracleConflict
    assert type(error_for(Code.FAILED_PRECONDITION, "m", "WrongTablet")) is WrongTablet


def test_command_tags_past_field_15_take_two_bytes() -> None:
    command = tags(node_pb2.Command.DESCRIPTOR)
    assert command["report_snapshots"] == bytes((15 << 3 | 2,))
    assert command["collect_garbage"] == bytes((0x82, 0x01))  # field 16, varint tag
    wire = node_pb2.Command(collect_garbage=node_pb2.CollectGarbageRequest())
    assert wire.SerializeToString() == command["collect_garbage"] + b"\x00"
    assert tags(node_pb2.BatchRequest.DESCRIPTOR)["client_id"] == b"\x12"


def test_the_safe_point_is_handed_out_with_timestamps_and_fresh_reads(tmp_path: Path) -> None:
    with gc_node(tmp_path / "node") as node, Client.connect(node.address) as client:
        for value in (b"1", b"2"):
            with client.transaction() as txn:
                txn.set(b"a", b"c", value)
        settle_reports(client)
        done = client.collect_garbage()
        assert done.safe_point > 0
        backend = client.backend
        client.timestamp()
        assert backend.safe_point == done.safe_point  # type: ignore[attr-defined]
        with RemoteOracle(node.address) as oracle:
            assert oracle.get_timestamp() > done.safe_point
        # A reader of an older snapshot is refused by the client itself, which knows the
        # safe point now (the node would refuse it too).
        with pytest.raises(SnapshotTooOld):
            Transaction(client.ctx, done.safe_point - 1).get(b"a", b"c")
        assert client.run(lambda txn: txn.get(b"a", b"c")) == b"2"


def test_a_dropped_transaction_stops_holding_the_safe_point(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "d", gc_life_time=0, gc_interval=None) as client:
        registry = client.backend.snapshots
        txn = client.begin()
        assert txn.get(b"a", b"c") is None
        assert registry.oldest() == txn.start_ts
        start_ts = txn.start_ts
        del txn  # never committed nor rolled back
        python_gc.collect()
        assert registry.oldest() is None
        assert client.collect_garbage().safe_point > start_ts
        committed = client.begin()
        committed.commit()
        rolled = client.begin()
        rolled.rollback()
        assert len(registry) == 0


def said(registry: ActiveSnapshots, at_least: int = 0) -> tuple[int | None, int]:
    """(oldest, seen) of a report of ``registry`` now."""
    report = registry.report(at_least)
    return report.oldest, report.seen


def test_a_placeholder_holds_until_the_start_ts_is_known() -> None:
    floor = [10]
    registry = ActiveSnapshots(lambda: floor[0])

    class Owner:
        pass

    owner = Owner()
    token = registry.enter(owner)
    floor[0] = 50
    assert registry.oldest() == 10  # below every timestamp the request can return
    registry.started(token, 12)
    assert said(registry) == (12, 0)
    registry.saw(40)
    assert said(registry) == (12, 40)
    registry.leave(token)
    assert registry.oldest() is None


def test_a_placeholder_below_the_known_safe_point_is_still_reported() -> None:
    """A client that received no timestamp for a while: its new transaction's
    placeholder (``seen``) lies below the safe point it has learnt since.  A report taken
    before the start_ts is recorded must still hold for it (at the safe point), or the
    node drops the client's hold and the safe point may pass the start_ts to come; a
    start_ts below the safe point holds nothing (it is refused already)."""
    registry = ActiveSnapshots()
    registry.saw(5)

    class Owner:
        pass

    owner, stale = Owner(), Owner()
    old = registry.enter(stale)
    registry.started(old, 3)  # below the safe point below: refused, holds nothing
    token = registry.enter(owner)  # placeholder 5
    assert said(registry, 20) == (20, 5)
    registry.started(token, 25)
    assert said(registry, 20) == (25, 5)
    registry.leave(token)
    assert said(registry, 20) == (None, 5)


# --- commands -------------------------------------------------------------------------------


def test_percolator_gc_prints_what_it_removed(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    with Client.embedded(data, gc_interval=None) as client:
        for value in (b"1", b"2", b"3"):
            with client.transaction() as txn:
                txn.set(b"a", b"c", value)
    done = in_process(capsys, "gc", "--data-dir", str(data), "--gc-life-time", "0")
    assert done.returncode == 0, done.stderr
    assert "removed 2 versions (2 write records" in done.stdout, done.stdout
    done = in_process(capsys, "gc", "--data-dir", str(data), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == 0
    status = in_process(capsys, "status", "--data-dir", str(data), "--json")
    assert status.returncode == 0, status.stderr
    gc = json.loads(status.stdout)["gc"]
    assert gc["safe_point"] > 0 and gc["tables"] == ["percolator"]
    assert gc["last_pass"]["removed"] == 0
    text = in_process(capsys, "status", "--data-dir", str(data))
    assert text.stdout.startswith("gc: safe point "), text.stdout


def test_percolator_gc_at_a_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ServerProcess(tmp_path / "data", "--gc-life-time", "0", "--gc-interval", "3600"
                       ) as server:
        with Client.connect(server.address) as client:
            for value in (b"1", b"2"):
                with client.transaction() as txn:
                    txn.set(b"a", b"c", value)
        done = in_process(capsys, "gc", "--connect", server.address)
        assert done.returncode == 0, done.stderr
        assert "removed 1 versions" in done.stdout, done.stdout
        status = in_process(capsys, "status", "--connect", server.address)
        assert "gc: safe point" in status.stdout and "removed 1 versions" in status.stdout
        refused = in_process(capsys, "gc", "--connect", server.address, "--gc-life-time", "0")
        one_error_line(refused, "gc", "--gc-life-time applies to --data-dir")


@pytest.mark.parametrize("option,value", [
    ("--gc-life-time", "-1"), ("--gc-life-time", "soon"), ("--gc-interval", "0"),
    ("--gc-client-lease", "-2"),
])
def test_serve_refuses_bad_gc_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       option: str, value: str) -> None:
    done = in_process(capsys, "serve", "--data-dir", str(tmp_path / "d"), option, value)
    usage_error(done, option)


class _Owner:
    """A transaction's stand-in: the registry holds its owner weakly."""


def _running(registry: ActiveSnapshots, start_ts: int) -> tuple[_Owner, int]:
    """A transaction running at ``start_ts`` in ``registry``: its owner (keep it alive)
    and its token."""
    owner = _Owner()
    token = registry.enter(owner)
    registry.saw(start_ts)
    registry.started(token, start_ts)
    return owner, token


def test_the_reporter_sleeps_while_idle_and_reports_what_is_held() -> None:
    registry = ActiveSnapshots()
    sent: list[tuple[int | None, int]] = []

    def send(report: SnapshotReport) -> int:
        sent.append((report.oldest, report.seen))
        return 300  # a lease of 0.3 s: reports every 0.1 s

    reporter = Reporter(registry, send)
    try:
        threading.Event().wait(0.3)
        assert sent == []  # nothing held, nothing received: no report
        owner, token = _running(registry, 7)
        reporter.kick()
        eventually(lambda: (7, 7) in sent, "the running transaction was reported")
        eventually(lambda: sent.count((7, 7)) >= 3, "it is reported again, lease by lease")
        registry.leave(token)
        eventually(lambda: sent[-1] == (None, 7), "its end was reported")
        settled = len(sent)
        threading.Event().wait(0.3)
        assert len(sent) == settled  # idle again
    finally:
        reporter.close()
    assert sent[-1] == (None, 7)


def test_the_reporter_logs_an_outage_once_not_every_attempt(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = ActiveSnapshots()
    down = threading.Event()
    down.set()
    attempts: list[int] = []

    def send(report: SnapshotReport) -> int:
        attempts.append(report.seen)
        if down.is_set():
            raise StorageError("node unavailable")
        return 300

    owner, token = _running(registry, 7)
    caplog.set_level(logging.DEBUG, logger="percolator._snapshots")
    reporter = Reporter(registry, send, first_interval=0.01)
    try:
        reporter.kick()
        eventually(lambda: len(attempts) >= 20, "the reporter retried through the outage")
        down.clear()
        eventually(lambda: any("resumed" in r.getMessage() for r in caplog.records),
                   "the recovery was logged")
    finally:
        registry.leave(token)
        reporter.close()
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) >= 20
    assert [r.levelno for r in failed].count(logging.WARNING) == 1


def test_the_reporter_outlives_a_refusal_of_its_principals_clients() -> None:
    """A client forgotten after its lease passed, whose principal filled its clients
    meanwhile, is refused TooManyClients: its reporter retries (the thread died with it
    once, and the client never reported again)."""
    registry = ActiveSnapshots()
    refusing = threading.Event()
    refusing.set()
    sent: list[int | None] = []
    refused: list[int] = []

    def send(report: SnapshotReport) -> int:
        if refusing.is_set():
            refused.append(report.seen)
            raise TooManyClients("refused a new client")
        sent.append(report.oldest)
        return 300

    owner, token = _running(registry, 7)
    reporter = Reporter(registry, send, first_interval=0.01)
    try:
        reporter.kick()
        eventually(lambda: len(refused) >= 3, "the reporter retried")
        refusing.clear()
        eventually(lambda: 7 in sent, "the report went through once the node took it")
    finally:
        registry.leave(token)
        reporter.close()


def test_a_step_of_the_wall_clock_does_not_end_the_clients_leases(tmp_path: Path) -> None:
    """Leases run on the monotonic clock: an NTP step or a resumed VM (the wall clock a
    minute ahead, a second passed) leaves a reporting client's transaction held."""

    class SteppedClock(FakeClock):
        step_ms = 0

        def now_ms(self) -> int:
            return super().now_ms() + self.step_ms

        def monotonic_ms(self) -> int:
            return FakeClock.now_ms(self)

    clock = SteppedClock()
    backend = LocalBackend.open(str(tmp_path / "data"), clock=clock, gc_life_time=0.0)
    try:
        start_ts = backend.timestamps(1, b"client")
        backend.report_snapshots(b"client", SnapshotReport(start_ts, start_ts, 1))
        backend.timestamps(5)  # others move the oracle on
        clock.step_ms = 60_000 + backend.safe_point.lease_ms
        clock.advance(1)
        assert backend.collect_garbage().safe_point <= start_ts
        assert backend.safe_point.holders()["clients"] == start_ts
        clock.advance(backend.safe_point.lease_ms / 1000 + 1)  # the lease does pass
        assert backend.collect_garbage().safe_point > start_ts
    finally:
        backend.close()

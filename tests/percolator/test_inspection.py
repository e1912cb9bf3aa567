"""Looking at the data: `percolator scan`, `get`, `locks` and `repair` (issue 18).

The finding this answers: a garbage lock written through the raw store API made every
read of its cell and every scan of its table fail with DataCorruption, and no tool
could show or remove it.  Here the tools find it, show it, and remove exactly it --
against a real `percolator serve` process and an embedded data directory.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bigtable_lite import DataCorruption, Put, RowMutation
from observers._layout import ack_column, encode_ack
from percolator import Client, cli, layout, records
from percolator._backend import CellWrite
from percolator._inspection import cell_records, list_locks, raw_rows
from percolator._notify import log as notify_log
from percolator._steps.prewrite import prewrite_row
from percolator.clock import FakeClock
from percolator.commands.byte_text import parse, show
from tests.observers.observer_fixtures import eventually
from tests.procs import REPO, ServerProcess

from .steps import must_commit, must_prewrite, new_txn, running_node

WAIT = 60.0
TABLE = layout.DEFAULT_TABLE
GARBAGE = b"garbage"


def percolator(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PERCOLATOR_FAILPOINTS", None)
    return subprocess.run([sys.executable, "-m", "percolator", *args], cwd=REPO, env=env,
                          input=stdin, capture_output=True, text=True, timeout=WAIT,
                          check=False)


def in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
               *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``cli.main(args)`` here (no interpreter to start), stdin given."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    try:
        code = cli.main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["percolator", *args], code, out, err)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert done.stderr == "", done.stderr
    return done.stdout


def one_error(done: subprocess.CompletedProcess[str], command: str, *expected: str) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"percolator {command}: error: "), line
    for text in expected:
        assert text in line, line
    return line


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def write_garbage_lock(client: Client, row: bytes, column: bytes) -> None:
    """What the issue saw: a lock slot written through the raw store API."""
    client.store.mutate_rows([RowMutation(TABLE, row, (
        Put(layout.lock_column(column), layout.LOCK_SLOT_TS, GARBAGE),))])


def bank(client: Client) -> None:
    with client.transaction() as txn:
        txn.set("alice", "bal", "100")
        txn.set("bob", "bal", "50")
        txn.set("bob", "note", "n" * 400)  # not inlined: a data version


@pytest.fixture(name="node")
def node_fixture(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "node") as node:
        yield node


# --- issue 18, against a real node ------------------------------------------------------------


def test_a_garbage_lock_is_found_shown_and_removed_by_the_tools(node: ServerProcess) -> None:
    where = ("--connect", node.address)
    with Client.connect(node.address) as client:
        bank(client)
        write_garbage_lock(client, b"bob", b"bal")
        # The finding: the cell's reads and the table's scans fail, naming nothing useful.
        with pytest.raises(DataCorruption, match=r"b'bob', b'bal'.*percolator repair"):
            client.begin().get("bob", "bal")
        with pytest.raises(DataCorruption):
            list(client.begin().scan())
        assert client.begin().get("alice", "bal") == b"100"  # other cells read fine
    one_error(percolator("get", "bob", "bal", *where), "get", "(b'bob', b'bal')",
              "percolator repair")
    one_error(percolator("scan", *where), "scan", "lock record of cell (b'bob', b'bal')")

    # scan --raw shows every record, the garbage one as such, and goes on.
    before = json_lines(ok(percolator("scan", "--raw", "--json", *where)))
    bad = [r for r in before if r["undecodable"]]
    assert bad == [{"table": "percolator", "row": "bob", "column": "bal", "kind": "lock",
                    "ts": 0, "undecodable": True, "store_column": "lbal",
                    "bytes_hex": GARBAGE.hex(), "error": "unknown lock record format 103"}]
    kinds = sorted((r["row"], r["column"], r["kind"]) for r in before if not r["undecodable"])
    assert kinds == [("alice", "bal", "write"), ("bob", "bal", "write"),
                     ("bob", "note", "data"), ("bob", "note", "write")]
    text = ok(percolator("scan", "--raw", *where))
    assert "UNDECODABLE" in text and "67 61 72 62 61 67 65" in text

    # locks lists it (no owner can be known), without failing.
    [listed] = json_lines(ok(percolator("locks", "--json", *where)))
    assert listed["undecodable"] and listed["owner"] == "unknown", listed

    # repair shows it and asks; "n" deletes nothing.
    refused = percolator("repair", "bob", "bal", *where, stdin="n\n")
    one_error(refused, "repair", "not confirmed")
    assert "! bal  lock     UNDECODABLE" in refused.stdout
    assert json_lines(ok(percolator("scan", "--raw", "--json", *where))) == before

    # "y" deletes exactly that version.
    done = ok(percolator("repair", "bob", "bal", *where, stdin="y\n"))
    assert "deleted 1 record" in done
    after = json_lines(ok(percolator("scan", "--raw", "--json", *where)))
    assert after == [r for r in before if not r["undecodable"]]
    assert ok(percolator("get", "bob", "bal", *where)) == "50\n"
    assert ok(percolator("scan", *where)).splitlines() == [
        "alice  bal  100", "bob  bal  50", f"bob  note  {'n' * 80}... (400 bytes)"]
    assert "nothing to repair" in ok(percolator("repair", "bob", "bal", "--yes", *where))
    with Client.connect(node.address) as client:
        with client.transaction() as txn:  # and the cell takes writes again
            txn.set("bob", "bal", "49")
        assert client.begin().get("bob", "bal") == b"49"


# --- repair of other records, embedded -------------------------------------------------------


def test_repair_deletes_only_the_undecodable_versions(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    with Client.embedded(data) as client:
        commits = []
        for value in (b"v1", b"v2"):
            with client.transaction() as txn:
                txn.set("r", "c", value)
            commits.append(txn.commit_ts)
        assert commits[0] is not None and commits[1] is not None
        between = commits[0] + 1  # a version between the two good ones
        assert between < commits[1]
        client.store.mutate_rows([
            RowMutation(TABLE, b"r", (Put(layout.write_column(b"c"), between, b"?"),)),
            RowMutation(layout.notify_table(TABLE),  # an entry of the log that is none
                        notify_log.log_key(b"c", notify_log.bucket_of(b"r"), between),
                        (Put(b"r", 0, b"\x09"),))])
        good = [r for r in cell_records(client.store, TABLE, b"r", b"c") if not r.undecodable]
        assert client.begin().get("r", "c") == b"v2"  # the newer version hides it
        with pytest.raises(DataCorruption, match="at ts"):  # a snapshot that meets it
            client.backend.read(TABLE, between, [(b"r", b"c")])
    where = ("--data-dir", str(data))
    done = in_process(capsys, monkeypatch, "repair", "r", "c", *where, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n! ") == 2 and "deleted 2 records" in done.stdout
    assert "reads see the version below it" in done.stdout
    with Client.embedded(data) as client:
        assert cell_records(client.store, TABLE, b"r", b"c") == good
        assert client.backend.read(TABLE, between, [(b"r", b"c")]).values == {
            (b"r", b"c"): b"v1"}


def test_repair_refuses_without_a_confirmation_and_on_a_mistyped_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    with Client.embedded(data) as client:
        bank(client)
        write_garbage_lock(client, b"bob", b"bal")
    done = in_process(capsys, monkeypatch, "repair", "bob", "bal", "--data-dir", str(data))
    one_error(done, "repair", "not confirmed")  # stdin at its end: no answer is no
    missing = tmp_path / "missing"
    one_error(in_process(capsys, monkeypatch, "repair", "bob", "bal", "--data-dir",
                         str(missing), "--yes"), "repair", "is not a data directory")
    assert not missing.exists()
    with Client.embedded(data) as client:
        assert [r.kind for r in cell_records(client.store, TABLE, b"bob", b"bal")
                if r.undecodable] == ["lock"]


# --- scan: committed and raw --------------------------------------------------------------------


def test_scan_shows_committed_values_at_a_snapshot(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    with Client.embedded(data) as client:
        bank(client)
        first = client.timestamp()
        with client.transaction() as txn:
            txn.set("alice", "bal", "90")
            txn.delete("bob", "note")
            txn.set("carol", "bal", "\x00\\bin")
    where = ("--data-dir", str(data))

    def scan(*args: str) -> list[str]:
        return ok(in_process(capsys, monkeypatch, "scan", *args, *where)).splitlines()

    assert scan() == ["alice  bal  90", "bob  bal  50", "carol  bal  \\x00\\\\bin"]
    assert scan("--at", str(first)) == ["alice  bal  100", "bob  bal  50",
                                        f"bob  note  {'n' * 80}... (400 bytes)"]
    assert scan("--start", "b", "--end", "c") == ["bob  bal  50"]
    assert scan("--limit", "1") == ["alice  bal  90"]
    assert scan("--columns", "note", "--at", str(first)) == [
        f"bob  note  {'n' * 80}... (400 bytes)"]
    [carol] = json_lines("\n".join(scan("--json", "--start", "carol")))
    assert parse(carol["value"]) == b"\x00\\bin" and carol["row"] == "carol"
    assert ok(in_process(capsys, monkeypatch, "get", "alice", "bal", *where, "--at",
                         str(first))) == "100\n"
    got = json.loads(ok(in_process(capsys, monkeypatch, "get", "bob", "note", "--json",
                                   *where)))
    assert got["value"] is None and got["row"] == "bob"
    one_error(in_process(capsys, monkeypatch, "get", "bob", "note", *where), "get",
              "has no value")
    future = in_process(capsys, monkeypatch, "scan", *where, "--at", "999999999")
    one_error(future, "scan", "above the newest timestamp")
    one_error(in_process(capsys, monkeypatch, "scan", "--raw", "--at", "5", *where), "scan",
              "--raw")


def test_scan_raw_decodes_every_kind_of_record(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    with Client.embedded(data) as client:
        client.register_observed_columns([b"obs"])
        with client.transaction() as txn:
            txn.set("a", "obs", "x")                          # a notification too
            txn.set_system(b"a", ack_column(b"obs"), encode_ack(7))  # an observers' ack
        put_ts = txn.commit_ts
        backend = client.backend
        doomed = new_txn(backend, TABLE, {(b"b", b"c"): b"gone"})
        must_prewrite(backend, doomed)
        backend.rollback(TABLE, doomed.start_ts, doomed.primary, doomed.keys)
        live = new_txn(backend, TABLE, {(b"c", b"c"): b"held", (b"c", b"d"): None})
        must_prewrite(backend, live, ttl_ms=3_600_000)
        now_ms = backend.now_ms()
    out = json_lines(ok(in_process(capsys, monkeypatch, "scan", "--raw", "--json",
                                   "--data-dir", str(data))))
    by = {(r["row"], r["column"], r["kind"]): r for r in out}
    write = by[("a", "obs", "write")]
    assert (write["commit_ts"], write["op"], write["value"]) == (put_ts, "put", "x")
    note = by[("a", "obs", "notify")]
    assert (note["table"], note["commit_ts"], note["weak"]) == ("percolator.notify", put_ts,
                                                                False)
    ack = by[("a", "\\x00ack:obs", "write")]
    assert ack["system"] == "ack of obs: changes up to observer transaction 7", ack
    assert by[("b", "c", "rollback")]["start_ts"] == doomed.start_ts
    assert ("b", "c", "lock") not in by and ("b", "c", "write") not in by
    primary = by[("c", "c", "lock")]
    assert (primary["start_ts"], primary["is_primary"], primary["op"], primary["value"]) == (
        live.start_ts, True, "put", "held")
    assert 3_000_000 < primary["ttl_left_ms"] <= primary["expires_at_ms"] - now_ms
    secondary = by[("c", "d", "lock")]
    assert (secondary["is_primary"], secondary["op"], secondary["primary_row"],
            secondary["primary_column"]) == (False, "delete", "c", "c")
    text = ok(in_process(capsys, monkeypatch, "scan", "--raw", "--data-dir", str(data)))
    assert "[ack of obs: changes up to observer transaction 7]" in text
    assert f"rollback start_ts={doomed.start_ts} (rolled back)" in text
    assert "primary=(c, c) ttl_left=" in text


def test_raw_rows_merge_the_notify_table_and_keep_the_row_limit(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "data") as client:
        client.register_observed_columns([b"c"])
        with client.transaction() as txn:
            for row in (b"a", b"b", b"d"):
                txn.set(row, b"other", b"1")
            txn.notify(b"c", b"c")  # a notification in a row with no data
        rows = [(row, sorted({r.kind for r in found}))
                for row, found in raw_rows(client.store, TABLE)]
        assert rows == [(b"a", ["write"]), (b"b", ["write"]), (b"c", ["notify"]),
                        (b"d", ["write"])]
        assert [row for row, _ in raw_rows(client.store, TABLE, limit=3)] == [b"a", b"b", b"c"]
        assert [row for row, _ in raw_rows(client.store, TABLE, start=b"b", end=b"d",
                                           columns=[b"c"])] == [b"c"]


# --- locks ------------------------------------------------------------------------------------


def test_locks_lists_owners_and_resolves_through_the_protocol(node: ServerProcess) -> None:
    where = ("--connect", node.address)
    with Client.connect(node.address) as client:
        backend = client.backend
        committed = new_txn(backend, TABLE, {(b"k1", b"c"): b"one", (b"k2", b"c"): b"two"})
        must_prewrite(backend, committed, ttl_ms=1)
        commit_ts = must_commit(backend, committed, [])  # the secondary stays locked
        expired = new_txn(backend, TABLE, {(b"x1", b"c"): b"lost", (b"x2", b"c"): b"lost"})
        must_prewrite(backend, expired, ttl_ms=1)
        live = new_txn(backend, TABLE, {(b"z", b"c"): b"live"})
        must_prewrite(backend, live, ttl_ms=3_600_000)
        # A secondary whose primary was never locked (a prewrite refuses to lock one; a
        # node that died undoing a failed prewrite leaves one), stored as a prewrite would.
        orphan_start = client.timestamp()
        assert client.store.mutate_rows([prewrite_row(
            TABLE, b"y", [CellWrite(b"c", records.PUT, b"orphan")], orphan_start,
            (b"p", b"c"), backend.now_ms() + 1)])[0].applied
        expired_at = backend.now_ms() + 2  # every ttl_ms=1 lock expired by the node's clock
        eventually(lambda: backend.now_ms() > expired_at, "the node's clock passes the TTLs")

    listed = json_lines(ok(percolator("locks", "--json", *where)))
    owners = {(r["row"], r["start_ts"]): r["owner"] for r in listed}
    assert owners == {("k2", committed.start_ts): "committed",
                      ("x1", expired.start_ts): "locked", ("x2", expired.start_ts): "locked",
                      ("y", orphan_start): "no trace", ("z", live.start_ts): "locked"}
    assert all(r["ttl_left_ms"] < 0 for r in listed if r["row"] != "z")
    assert [r["ttl_left_ms"] > 3_500_000 for r in listed if r["row"] == "z"] == [True]
    stale = json_lines(ok(percolator("locks", "--json", "--older-than", "0", *where)))
    assert sorted(r["row"] for r in stale) == ["k2", "x1", "x2", "y"]
    assert json_lines(ok(percolator("locks", "--json", "--older-than", "3600", *where))) == []
    text = ok(percolator("locks", *where))
    assert f"owner committed at {commit_ts}" in text and "5 locks" in text

    resolved = json_lines(ok(percolator("locks", "--older-than", "0", "--resolve", "--json",
                                        *where)))
    outcomes = {r["resolved"]: r["outcome"] for r in resolved if "resolved" in r}
    assert outcomes == {committed.start_ts: f"rolled forward (committed at {commit_ts})",
                        expired.start_ts: "rolled back", orphan_start: "rolled back"}
    assert [r["row"] for r in json_lines(ok(percolator("locks", "--json", *where)))] == ["z"]
    with Client.connect(node.address) as client:
        values = client.begin().get_many([("k1", "c"), ("k2", "c"), ("x1", "c"), ("x2", "c"),
                                          ("y", "c")])
        assert values == {(b"k1", b"c"): b"one", (b"k2", b"c"): b"two", (b"x1", b"c"): None,
                          (b"x2", b"c"): None, (b"y", b"c"): None}
        assert [info.owner for info in list_locks(client.store, TABLE)] == ["locked"]
        # --resolve on the live one leaves it: its transaction still commits.
        ok(percolator("locks", "--resolve", *where))
        assert must_commit(client.backend, live) > live.start_ts
        assert client.begin().get("z", "c") == b"live"


def test_locks_and_scan_of_another_table_at_a_data_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``locks --table`` and ``scan TABLE`` with ``--data-dir``: the same protocol, run in
    the command's process."""
    data, other = tmp_path / "data", b"other"
    with Client.embedded(data, table=other) as client:
        with client.transaction() as txn:
            txn.set("a", "c", "kept")
        backend = client.backend
        stranded = new_txn(backend, other, {(b"s1", b"c"): b"lost", (b"s2", b"c"): b"lost"})
        must_prewrite(backend, stranded, ttl_ms=1)
        live = new_txn(backend, other, {(b"z", b"c"): b"live"})
        must_prewrite(backend, live, ttl_ms=3_600_000)
        expired_at = backend.now_ms() + 2
        eventually(lambda: backend.now_ms() > expired_at, "the stranded locks expire")
    where = ("--data-dir", str(data))

    def locks(*args: str) -> list[dict[str, Any]]:
        return json_lines(ok(in_process(capsys, monkeypatch, "locks", "--table", "other",
                                        "--json", *args, *where)))

    assert ok(in_process(capsys, monkeypatch, "locks", "--json", *where)) == ""  # default table
    assert sorted((r["row"], r["start_ts"]) for r in locks()) == [
        ("s1", stranded.start_ts), ("s2", stranded.start_ts), ("z", live.start_ts)]
    assert sorted(r["row"] for r in locks("--older-than", "0")) == ["s1", "s2"]
    resolved = locks("--older-than", "0", "--resolve")
    assert {r["resolved"]: r["outcome"] for r in resolved if "resolved" in r} == {
        stranded.start_ts: "rolled back"}
    assert [r["row"] for r in locks()] == ["z"]
    before_live = str(live.start_ts - 1)  # a snapshot the live lock does not hold up
    scanned = json_lines(ok(in_process(capsys, monkeypatch, "scan", "other", "--json",
                                       "--at", before_live, *where)))
    assert [(r["row"], r["column"], r["value"]) for r in scanned] == [("a", "c", "kept")]
    assert ok(in_process(capsys, monkeypatch, "scan", "--json", *where)) == ""


# --- text of bytes ------------------------------------------------------------------------------


@given(st.binary(max_size=40))
def test_bytes_shown_parse_back(data: bytes) -> None:
    assert parse(show(data)) == data


@pytest.mark.parametrize(("data", "text"), [
    (b"plain", "plain"), (b"M\xc3\xbcller", "Müller"), (b"\x00ack:x", "\\x00ack:x"),
    (b"a\\b", "a\\\\b"), (b"\xff\x7f\n", "\\xff\\x7f\\x0a"),
])
def test_bytes_are_shown_as_text_where_they_are_text(data: bytes, text: str) -> None:
    assert show(data) == text


@pytest.mark.parametrize("text", ["a\\q", "\\x4", "end\\"])
def test_a_stray_backslash_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="backslash"):
        parse(text)


# --- the node's clock ---------------------------------------------------------------------------


def test_a_locks_ttl_left_is_judged_by_the_nodes_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    with running_node(tmp_path / "node", clock) as node, Client.connect(node.address) as client:
        assert client.backend.now_ms() == clock.now_ms()
        clock.advance(5.0)
        assert client.backend.now_ms() == clock.now_ms()  # not this process's clock
        txn = new_txn(client.backend, TABLE, {(b"r", b"c"): b"v"})
        must_prewrite(client.backend, txn, ttl_ms=2_000)
        [info] = list_locks(client.store, TABLE)
        assert info.owner == "locked" and info.ttl_left_ms(client.backend.now_ms()) == 2_000
        clock.advance(3.0)
        assert info.ttl_left_ms(client.backend.now_ms()) == -1_000

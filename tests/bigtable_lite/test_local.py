"""LocalStore specifics: directory ownership, persistence across reopen, closing, sync modes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bigtable_lite import (
    NOT_ATTEMPTED,
    Cell,
    DataCorruption,
    DeleteVersion,
    InvalidArgument,
    LimitExceeded,
    Limits,
    LocalStore,
    MutationResult,
    NoValuePrefixAt,
    NoVersionIn,
    Put,
    RowMutation,
    RowRead,
    StoreClosed,
    StoreLocked,
    TimeRange,
    ValuePrefixAt,
    VersionAt,
)
from bigtable_lite._datadir import LEVELDB_DIR, OWNER_FILE
from bigtable_lite._encoding import encode_bytes_list

T = b"t"
REPO = Path(__file__).resolve().parents[2]


def test_data_directory_layout(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "d") as store:
        store.put(T, b"r", b"c", 1, b"v")
        owner = (tmp_path / "d" / OWNER_FILE).read_text()
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [OWNER_FILE, LEVELDB_DIR]
    assert owner.strip().isdigit()


def test_second_store_on_same_directory_is_refused(tmp_path: Path) -> None:
    with LocalStore(tmp_path) as store:
        with pytest.raises(StoreLocked, match="already in use"):
            LocalStore(tmp_path)
        store.put(T, b"r", b"c", 1, b"still works")
        assert store.get(T, b"r", b"c") == Cell(b"c", 1, b"still works")
    with LocalStore(tmp_path) as again:  # released on close
        assert again.get(T, b"r", b"c") is not None


def test_second_process_is_refused_while_first_holds_the_directory(tmp_path: Path) -> None:
    child = textwrap.dedent("""
        import sys
        from bigtable_lite import LocalStore, StoreLocked
        try:
            LocalStore(sys.argv[1])
        except StoreLocked as exc:
            print("locked:", exc)
            sys.exit(3)
        sys.exit(0)
    """)
    run = [sys.executable, "-c", child, str(tmp_path)]
    with LocalStore(tmp_path):
        proc = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=60,
                              check=False)
        assert proc.returncode == 3, proc.stderr
        assert "locked:" in proc.stdout
    proc = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def test_closing_under_open_scans_does_not_crash(tmp_path: Path) -> None:
    """Scans abandoned while the store closes release their snapshots safely.

    Releasing a scan's snapshot while close() tore LevelDB down was a segfault (within
    60 rounds, every time); run in a child so a crash fails the test, not the run.
    """
    child = textwrap.dedent("""
        import sys, threading
        from bigtable_lite import LocalStore, Put, RowMutation, StoreClosed
        for n in range(60):
            store = LocalStore(f"{sys.argv[1]}/{n}")
            store.mutate_rows([RowMutation(b"t", b"r%04d" % i, (Put(b"c", 1, b"v"),))
                               for i in range(300)])
            started = threading.Event()
            def scanner():
                for _ in range(50):
                    try:
                        rows = store.scan_rows(b"t")
                        next(rows)
                        started.set()
                        rows.close()
                    except StoreClosed:
                        return
            threads = [threading.Thread(target=scanner) for _ in range(4)]
            for t in threads:
                t.start()
            started.wait(10)
            store.close()
            for t in threads:
                t.join(30)
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr)


def test_data_and_tablets_persist_across_reopen(tmp_path: Path) -> None:
    with LocalStore(tmp_path) as store:
        store.mutate_rows([RowMutation(T, b"r%03d" % i, (Put(b"c", 1, b"v" * 100),))
                           for i in range(300)])
        store.split_tablet(T, b"r100")
        store.split_tablet(T, b"r200")
        store.compact_table(T)  # flush to table files so sizes are measurable
        sizes = store.list_tablets(T)
    assert all(t.approximate_bytes > 0 for t in sizes)
    with LocalStore(tmp_path) as store:
        tablets = store.list_tablets()
        assert [(t.table, t.start_row, t.end_row) for t in tablets] == [
            (T, b"", b"r100"), (T, b"r100", b"r200"), (T, b"r200", None)]
        assert all(t.approximate_bytes > 0 for t in tablets)
        assert len(list(store.scan_rows(T))) == 300


def test_corrupt_tablet_metadata_is_reported(tmp_path: Path) -> None:
    with LocalStore(tmp_path) as store:
        store.put(T, b"r", b"c", 1, b"v")
        store.engine.put_meta(b"tablets/" + T, encode_bytes_list([b"a"])[:-1])
    with pytest.raises(DataCorruption):
        LocalStore(tmp_path)
    with pytest.raises(DataCorruption):  # not StoreLocked: the failed open let go of the directory
        LocalStore(tmp_path)


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.mutate_rows([RowMutation(T, b"r%03d" % i, (Put(b"c", 1, b"v"),)) for i in range(600)])
    scan = store.scan_rows(T)
    assert next(scan).row == b"r000"
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreClosed):
        store.put(T, b"r", b"c", 1, b"v")
    with pytest.raises(StoreClosed):
        store.get(T, b"r", b"c")
    with pytest.raises(StoreClosed):
        list(scan)  # a scan that outlives its store fails cleanly, it does not crash
    with pytest.raises(StoreClosed):
        list(store.scan_rows(T))


def test_close_waits_for_in_flight_calls(tmp_path: Path) -> None:
    """Calls racing close() either complete or raise StoreClosed; LevelDB is never used closed."""
    store = LocalStore(tmp_path)
    errors: list[BaseException] = []
    started = threading.Barrier(5, timeout=30)

    def writer(n: int) -> None:
        started.wait()
        i = 0
        try:
            while True:
                store.put(T, b"w%d-%d" % (n, i), b"c", 1, b"v")
                i += 1
        except StoreClosed:
            return
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    started.wait()
    store.close()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert errors == []


@pytest.mark.parametrize("mode", ["none", "always"])
def test_sync_modes(tmp_path: Path, mode: str) -> None:
    with LocalStore(tmp_path, sync=mode) as store:  # type: ignore[arg-type]
        store.put(T, b"r", b"c", 1, b"v")
        assert store.engine.sync == mode
    with LocalStore(tmp_path) as store:
        assert store.get(T, b"r", b"c") == Cell(b"c", 1, b"v")


def test_unknown_sync_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalStore(tmp_path, sync="sometimes")  # type: ignore[arg-type]
    LocalStore(tmp_path).close()  # the refused open did not keep the directory


def test_empty_row_mutation_does_not_create_its_table(tmp_path: Path) -> None:
    with LocalStore(tmp_path) as store:
        assert store.mutate_rows([RowMutation(b"ghost", b"r")])[0].applied
        assert store.list_tablets() == []


# --- conditions against a model ---------------------------------------------------------

_COLUMNS = [b"a", b"a\x00", b"ab", b"b", b"b\xff", b"c"]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_conditions_match_a_model(tmp_path_factory: pytest.TempPathFactory,
                                  data: st.DataObject) -> None:
    """Random versions and condition lists (the engine evaluates range conditions in key
    order, reusing seeks): the result is the first failing condition in the given order."""
    versions = data.draw(st.dictionaries(
        st.tuples(st.sampled_from(_COLUMNS), st.integers(0, 9)), st.binary(max_size=3),
        max_size=12))
    deleted = data.draw(st.sets(st.sampled_from(sorted(versions)) if versions else st.nothing()))
    ts = st.integers(0, 9)
    condition = st.one_of(
        st.builds(lambda c, lo, hi: NoVersionIn(c, min(lo, hi), max(lo, hi)),
                  st.sampled_from(_COLUMNS), ts, ts),
        st.builds(NoVersionIn, st.sampled_from(_COLUMNS)),
        st.builds(VersionAt, st.sampled_from(_COLUMNS), ts),
        st.builds(VersionAt, st.sampled_from(_COLUMNS), ts, st.binary(max_size=3)),
        st.builds(ValuePrefixAt, st.sampled_from(_COLUMNS), ts, st.binary(max_size=2)),
        st.builds(NoValuePrefixAt, st.sampled_from(_COLUMNS), ts, st.binary(max_size=2)))
    conditions = data.draw(st.lists(condition, max_size=6))
    live = {k: v for k, v in versions.items() if k not in deleted}

    def expected() -> MutationResult:
        for i, cond in enumerate(conditions):
            if isinstance(cond, NoVersionIn):
                hits = [t for (c, t) in live
                        if c == cond.column and cond.min_ts <= t <= cond.max_ts]
                if hits:
                    newest = max(hits)
                    return MutationResult(False, i,
                                          Cell(cond.column, newest, live[(cond.column, newest)]))
            elif isinstance(cond, ValuePrefixAt):
                value = live.get((cond.column, cond.ts))
                if value is None:
                    return MutationResult(False, i, None)
                if value[:len(cond.value_prefix)] != cond.value_prefix:
                    return MutationResult(False, i, Cell(cond.column, cond.ts, value))
            elif isinstance(cond, NoValuePrefixAt):
                value = live.get((cond.column, cond.ts))
                if value is not None and value[:len(cond.value_prefix)] == cond.value_prefix:
                    return MutationResult(False, i, Cell(cond.column, cond.ts, value))
            else:
                value = live.get((cond.column, cond.ts))
                if value is None:
                    return MutationResult(False, i, None)
                if cond.value is not None and value != cond.value:
                    return MutationResult(False, i, Cell(cond.column, cond.ts, value))
        return MutationResult(True)

    with LocalStore(tmp_path_factory.mktemp("model")) as store:
        store.mutate_rows([RowMutation(b"t", row, tuple(Put(c, t, v)
                                                        for (c, t), v in versions.items()))
                           for row in (b"r", b"r\x00", b"q")])
        store.mutate_rows([RowMutation(b"t", b"r", tuple(DeleteVersion(c, t) for c, t in deleted))])
        result = store.mutate_rows([RowMutation(b"t", b"r", (Put(b"z", 1, b""),),
                                                tuple(conditions))])[0]
        assert result == expected()


def test_range_conditions_out_of_key_order(local_store: LocalStore) -> None:
    local = local_store
    """A later condition on a smaller column must not reuse an earlier seek's position."""
    assert local.check_and_mutate(T, b"r", (), [Put(b"a", 5, b"A"), Put(b"c", 5, b"C")]).applied
    res = local.check_and_mutate(T, b"r", [NoVersionIn(b"b"), NoVersionIn(b"a", 0, 9)],
                                 [Put(b"z", 1, b"")])
    assert res == MutationResult(False, 1, Cell(b"a", 5, b"A"))
    res = local.check_and_mutate(T, b"r", [NoVersionIn(b"c", 6, 9), NoVersionIn(b"a", 6, 9),
                                           NoVersionIn(b"c", 0, 9)], [Put(b"z", 1, b"")])
    assert res == MutationResult(False, 2, Cell(b"c", 5, b"C"))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_newest_version_reads_match_a_model(tmp_path_factory: pytest.TempPathFactory,
                                            data: st.DataObject) -> None:
    """max_versions=1 reads of several columns (the engine reuses a seek that already landed
    past the next column's target): the newest live version in range of each column."""
    versions = data.draw(st.dictionaries(
        st.tuples(st.sampled_from(_COLUMNS), st.integers(0, 9)), st.binary(max_size=3),
        max_size=12))
    deleted = data.draw(st.sets(st.sampled_from(sorted(versions)) if versions else st.nothing()))
    columns = data.draw(st.lists(st.sampled_from(_COLUMNS), min_size=1, max_size=6))
    low, high = sorted(data.draw(st.tuples(st.integers(0, 9), st.integers(0, 9))))
    live = {k: v for k, v in versions.items() if k not in deleted}
    expected = []
    for column in sorted(set(columns)):
        hits = [t for (c, t) in live if c == column and low <= t <= high]
        if hits:
            expected.append(Cell(column, max(hits), live[(column, max(hits))]))
    with LocalStore(tmp_path_factory.mktemp("reads")) as store:
        for row in (b"q", b"r", b"r\x00"):
            store.mutate_rows([RowMutation(b"t", row, tuple(Put(c, t, v)
                                                            for (c, t), v in versions.items()))])
        store.mutate_rows([RowMutation(b"t", b"r", tuple(DeleteVersion(c, t) for c, t in deleted))])
        got = store.read_rows([RowRead(b"t", b"r", tuple(columns), (), TimeRange(low, high), 1)])
        assert got == [expected]


def test_unchecked_view_serves_the_same_data_and_closes_nothing(tmp_path: Path) -> None:
    with LocalStore(tmp_path) as store:
        view = store.unchecked()
        assert view.mutate_rows([RowMutation(T, b"r", (Put(b"c", 5, b"v"),))])[0].applied
        assert store.get(T, b"r", b"c") == Cell(b"c", 5, b"v")
        store.put(T, b"s", b"c", 7, b"w")
        reads = [RowRead(T, b"r", (b"c",), (), TimeRange(0, 10), 1),
                 RowRead(T, b"s", (b"c",), (), TimeRange(0, 10), 1)]
        assert view.read_rows(reads) == store.read_rows(reads)
        failed = view.mutate_row(RowMutation(T, b"r", (Put(b"c", 9, b"x"),),
                                             (NoVersionIn(b"c", 5, 5),)))
        assert failed == MutationResult(False, 0, Cell(b"c", 5, b"v"))
        assert [r.row for r in view.scan_rows(T)] == [b"r", b"s"]
        assert view.list_tablets(T) == store.list_tablets(T)
        view.close()
        assert store.get(T, b"s", b"c") == Cell(b"c", 7, b"w")  # still open


def test_unchecked_view_skips_only_the_checks(tmp_path: Path) -> None:
    """What the checked store refuses, the view applies as the engine does: it is for callers
    whose requests are well-formed by construction, never for outside input."""
    with LocalStore(tmp_path, limits=Limits(max_value_bytes=4)) as store:
        big = RowMutation(T, b"r", (Put(b"c", 1, b"12345"),))
        with pytest.raises(LimitExceeded):
            store.mutate_rows([big])
        assert store.get(T, b"r", b"c") is None
        assert store.unchecked().mutate_rows([big])[0].applied
        assert store.get(T, b"r", b"c") == Cell(b"c", 1, b"12345")


@pytest.mark.parametrize("unchecked", [False, True])
def test_guarded_rows_apply_only_after_the_first(tmp_path: Path, unchecked: bool) -> None:
    with LocalStore(tmp_path) as checked:
        store = checked.unchecked() if unchecked else checked
        store.put(T, b"a", b"c", 1, b"lock")
        first_fails = [RowMutation(T, b"a", (Put(b"w", 2, b"x"),), (VersionAt(b"c", 9),)),
                       RowMutation(T, b"b", (Put(b"w", 2, b"x"),))]
        assert store.mutate_guarded(first_fails) == [
            MutationResult(False, 0, None), NOT_ATTEMPTED]
        assert checked.get(T, b"b", b"w") is None, "nothing after a failed first row"
        first_holds = [RowMutation(T, b"a", (Put(b"w", 2, b"x"),), (VersionAt(b"c", 1),)),
                       RowMutation(T, b"b", (Put(b"w", 2, b"x"),), (VersionAt(b"c", 1),)),
                       RowMutation(T, b"c", (Put(b"w", 2, b"y"),))]
        assert [r.applied for r in store.mutate_guarded(first_holds)] == [True, False, True]
        assert [checked.get(T, r, b"w") for r in (b"a", b"b", b"c")] == [
            Cell(b"w", 2, b"x"), None, Cell(b"w", 2, b"y")]
        assert [r.applied for r in store.mutate_guarded(first_holds[2:])] == [True]


def test_guarded_rows_are_checked_by_the_checked_store(tmp_path: Path) -> None:
    with LocalStore(tmp_path) as store:
        with pytest.raises(InvalidArgument):
            store.mutate_guarded([RowMutation(T, b"a", (Put(b"w", 2, b"x"),)),
                                  RowMutation(T, b"", (Put(b"w", 2, b"x"),))])
        assert store.get(T, b"a", b"w") is None

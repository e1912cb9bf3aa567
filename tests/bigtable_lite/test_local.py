"""LocalStore specifics: directory ownership, persistence across reopen, closing, sync modes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from bigtable_lite import (
    Cell,
    DataCorruption,
    LocalStore,
    Put,
    RowMutation,
    StoreClosed,
    StoreLocked,
)
from bigtable_lite.encoding import encode_bytes_list
from bigtable_lite.engine import LEVELDB_DIR, OWNER_FILE

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

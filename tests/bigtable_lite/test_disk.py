"""A damaged disk is never served as data: flipped bytes are found by checksums
(DataCorruption, DATA_LOSS over gRPC), and a data directory that lost its CURRENT file is
refused, not re-created empty."""

from __future__ import annotations

import hashlib
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from bigtable_lite import (
    ALL_TIME,
    Cell,
    DataCorruption,
    LocalStore,
    NoVersionIn,
    Put,
    RowMutation,
    RowRead,
    StorageError,
    TimeRange,
)
from bigtable_lite._datadir import LEVELDB_DIR
from bigtable_lite._encoding import cell_key, column_prefix, meta_key, row_prefix, table_prefix
from bigtable_lite._leveldb import plyvel
from bigtable_lite.remote import RemoteStore

from .conftest import serve, shutdown

T = b"t"
ROWS = 240
SEED = 1616
FLIPS = 40
REMOTE_EVERY = 3  # offsets also read over gRPC (the engine is the same; the status is checked)


def value_of(i: int) -> bytes:
    """Distinct, poorly compressible values, so most of a table file is cell data."""
    return hashlib.sha256(b"%d" % i).digest() * 2


def write_and_compact(path: Path) -> None:
    with LocalStore(path) as store:
        store.mutate_rows([RowMutation(T, b"row%05d" % i, (Put(b"c", 7, value_of(i)),))
                           for i in range(ROWS)])
        store.engine.compact_range(None, None)  # into .ldb tables, out of the log


def files(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((path / LEVELDB_DIR).iterdir())}


def reads_of(store: object) -> list[Callable[[], object]]:
    """Every way a cell is read: lookups at its timestamp, seeks for its newest version,
    a scan, and a condition's check (a wrong value would show as a failure); one call
    each, so they cost one round trip over gRPC."""
    read_rows = store.read_rows  # type: ignore[attr-defined]
    scan_rows = store.scan_rows  # type: ignore[attr-defined]
    mutate_rows = store.mutate_rows  # type: ignore[attr-defined]
    every = [[Cell(b"c", 7, value_of(i))] for i in range(ROWS)]

    def lookups() -> object:
        assert read_rows([RowRead(T, b"row%05d" % i, (b"c",), (), TimeRange(7, 7), 1)
                          for i in range(ROWS)]) == every
        return None

    def newest() -> object:
        assert read_rows([RowRead(T, b"row%05d" % i, (b"c",), (), TimeRange(), 1)
                          for i in range(ROWS)]) == every
        return None

    def scan() -> object:
        rows = list(scan_rows(T))
        assert [(r.row, r.cells) for r in rows] == [
            (b"row%05d" % i, (Cell(b"c", 7, value_of(i)),)) for i in range(ROWS)]
        return None

    def conditions() -> object:
        # Would write only where the cell is missing: a read that loses a cell writes.
        results = mutate_rows([RowMutation(T, b"row%05d" % i, (Put(b"x", 8, b"!"),),
                                           (NoVersionIn(b"c", 7, 7),))
                               for i in range(0, ROWS, 5)])
        assert not any(r.applied for r in results)
        assert all(r.found == Cell(b"c", 7, value_of(i))
                   for r, i in zip(results, range(0, ROWS, 5)))
        return None

    return [lookups, newest, scan, conditions]


def test_a_flipped_byte_is_never_served(tmp_path: Path) -> None:
    """One byte of the table file flipped at many offsets: every read returns the
    original value or raises DataCorruption (in-process), DATA_LOSS (over gRPC)."""
    print(f"seed {SEED}")
    rng = random.Random(SEED)
    pristine = tmp_path / "pristine"
    write_and_compact(pristine)
    tables = sorted((pristine / LEVELDB_DIR).glob("*.ldb"))
    assert tables, "compaction left no table file"
    table = max(tables, key=lambda p: p.stat().st_size)
    size = table.stat().st_size
    offsets = sorted({0, size - 1, size - 48, size - 8, *rng.sample(range(size), FLIPS)})
    detected = {"at open": 0, "in-process": 0, "over gRPC": 0}
    for n, offset in enumerate(offsets):
        damaged = tmp_path / f"at{offset}"
        shutil.copytree(pristine, damaged)
        target = damaged / LEVELDB_DIR / table.name
        raw = bytearray(target.read_bytes())
        raw[offset] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(raw))
        try:
            served = serve(damaged)
        except DataCorruption:
            detected["at open"] += 1  # refused: never served
            continue
        try:
            with served.remote() as remote:
                stores = [("in-process", served.store), ("over gRPC", remote)]
                for where, store in stores[:None if n % REMOTE_EVERY == 0 else 1]:
                    for read in reads_of(store):
                        try:
                            read()
                        except DataCorruption:
                            detected[where] += 1
                        except StorageError as exc:
                            pytest.fail(f"offset {offset}, {read.__name__} {where}: {exc!r}"
                                        " instead of DataCorruption / DATA_LOSS")
                        except AssertionError as exc:
                            raise AssertionError(
                                f"offset {offset} of {size}: {read.__name__} {where}"
                                " served a wrong value") from exc
        finally:
            shutdown(served)
        shutil.rmtree(damaged)
    print(f"flips at {len(offsets)} offsets of {size} bytes; detected: {detected}")
    assert detected["in-process"] and detected["over gRPC"], detected


def test_a_directory_without_current_is_refused_and_left_alone(tmp_path: Path) -> None:
    write_and_compact(tmp_path)
    (tmp_path / LEVELDB_DIR / "CURRENT").rename(tmp_path / "CURRENT.saved")
    before = files(tmp_path)
    for _ in range(2):
        with pytest.raises(DataCorruption, match="no CURRENT"):
            LocalStore(tmp_path)
        assert files(tmp_path) == before, "the refused directory was changed"
    (tmp_path / "CURRENT.saved").rename(tmp_path / LEVELDB_DIR / "CURRENT")
    with LocalStore(tmp_path) as store:  # nothing was lost: the restored store reads whole
        for read in reads_of(store):
            read()


@pytest.mark.parametrize("current", [b"", b"MANIFEST-0000", b"MANIFEST-999999\n"])
def test_a_current_naming_no_manifest_is_refused(tmp_path: Path, current: bytes) -> None:
    write_and_compact(tmp_path)
    (tmp_path / LEVELDB_DIR / "CURRENT").write_bytes(current)
    tables = {n: h for n, h in files(tmp_path).items() if n.endswith((".ldb", ".log"))}
    with pytest.raises(DataCorruption, match="CURRENT"):
        LocalStore(tmp_path)
    assert {n: h for n, h in files(tmp_path).items() if n.endswith((".ldb", ".log"))} == tables


@pytest.mark.parametrize("leftovers", [None, [], ["LOCK"], ["LOCK", "LOG", "LOG.old"]])
def test_a_new_or_empty_directory_opens(tmp_path: Path, leftovers: list[str] | None) -> None:
    """New, empty, or holding only LevelDB's lock and text logs (a refused open leaves
    those): a new database is started."""
    if leftovers is not None:
        (tmp_path / LEVELDB_DIR).mkdir()
        for name in leftovers:
            (tmp_path / LEVELDB_DIR / name).write_bytes(b"")
    with LocalStore(tmp_path) as store:
        store.put(T, b"r", b"c", 1, b"v")
    with LocalStore(tmp_path) as store:
        assert store.get(T, b"r", b"c") == Cell(b"c", 1, b"v")


@pytest.mark.parametrize("damage", ["short", "long"])
def test_a_key_with_a_damaged_timestamp_is_data_corruption_never_a_version(
        tmp_path: Path, damage: str) -> None:
    """A cell key whose timestamp field is not 8 bytes (written behind the store's back,
    or damaged): every read and condition that meets it fails DataCorruption (DATA_LOSS
    over gRPC), never a bare error, never a version served."""
    path = tmp_path / "data"
    with LocalStore(path) as store:
        store.mutate_rows([RowMutation(T, b"r", (Put(b"x", 1, b"ok"),))])
    cpfx = column_prefix(row_prefix(table_prefix(T), b"r"), b"c")
    key = cpfx + b"\x00\x00\x01" if damage == "short" else cell_key(T, b"r", b"c", 7) + b"\x00"
    db = plyvel.DB(str(path / LEVELDB_DIR))
    db.put(key, b"junk")
    db.close()
    served = serve(path)
    try:
        with RemoteStore(f"127.0.0.1:{served.port}") as remote:
            for store in (served.store, remote):
                for read in (
                        lambda: store.read_rows([RowRead(T, b"r", (b"c",), (), ALL_TIME, 1)]),
                        lambda: store.read_row(T, b"r", columns=[b"c"]),
                        lambda: list(store.scan_rows(T)),
                        lambda: store.mutate_rows([RowMutation(T, b"r", (Put(b"y", 1, b"v"),),
                                                               (NoVersionIn(b"c"),))])):
                    with pytest.raises(DataCorruption, match="undecodable key"):
                        read()
    finally:
        shutdown(served)


def test_truncated_tablet_metadata_is_data_corruption(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with LocalStore(path) as store:
        store.mutate_rows([RowMutation(T, b"r", (Put(b"x", 1, b"ok"),))])
    db = plyvel.DB(str(path / LEVELDB_DIR))
    db.put(meta_key(b"tablets/" + T), b"\x00\x00")
    db.close()
    with pytest.raises(DataCorruption, match="tablet metadata"):
        LocalStore(path)

"""The installed distribution: its name and command, and the LevelDB binding it brings.

The binding must have Snappy: one built without it writes tables uncompressed and reports
every table written with Snappy as corrupt, so a store would become unreadable after moving
between installs (one plyvel-next release shipped such wheels for one platform).
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from bigtable_lite._leveldb import plyvel

VALUES = 2000
VALUE = b"a" * 1000  # Snappy shrinks a run of one byte to a few percent


def test_the_binding_compresses_tables_with_snappy(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path), create_if_missing=True, paranoid_checks=True)
    try:
        for i in range(VALUES):
            db.put(b"k%06d" % i, VALUE)
        db.compact_range()  # the memtable goes to a table, compressed if Snappy is there
        assert db.get(b"k%06d" % (VALUES - 1), verify_checksums=True) == VALUE
    finally:
        db.close()
    tables = sum(p.stat().st_size for p in tmp_path.iterdir() if p.suffix in (".ldb", ".sst"))
    assert 0 < tables < VALUES * len(VALUE) // 4, f"{tables} bytes of tables: no Snappy"


def test_the_distribution_installs_the_percolator_command_and_its_binding() -> None:
    dist = metadata.distribution("percolator-txn")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts["percolator"] == "percolator.cli:main"
    binding = "plyvel-next" if sys.version_info >= (3, 12) else "plyvel-ci"
    assert metadata.version(binding) == plyvel.__version__

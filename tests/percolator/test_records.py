"""records: the lock and write records' bytes (the lock's format 2, with its owner's
start_ts), pinned and round-tripped; anything else is refused with DataCorruption."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bigtable_lite import MAX_TS, DataCorruption, Put, RowMutation
from percolator import layout, records
from percolator.records import Lock

from .steps import fake_node_fixture, open_world  # noqa: F401 - registers the fixture

TS = st.integers(0, MAX_TS)
KEY = st.binary(max_size=12)
LOCKS = st.builds(Lock, TS, st.sampled_from([records.PUT, records.DELETE]), KEY, KEY, TS,
                  st.booleans(), st.one_of(st.none(), st.binary(max_size=300)))


def test_lock_record_bytes_are_as_documented() -> None:
    raw = records.encode_lock(Lock(0x0102030405060708, records.PUT, b"row", b"col", 77,
                                   True, b"v"))
    assert raw.hex(" ") == (
        "02"                          # format version 2
        " 01 02 03 04 05 06 07 08"    # start_ts
        " 50"                         # op P
        " 03"                         # flags: inlined, primary
        " 00 00 00 00 00 00 00 4d"    # expires_at_ms 77
        " 00 00 00 03 72 6f 77"       # primary row
        " 00 00 00 03 63 6f 6c"       # primary column
        " 76")                        # the inlined value
    assert raw.startswith(records.lock_owner(0x0102030405060708))


@settings(max_examples=200, deadline=None)
@given(LOCKS, TS)
def test_lock_records_round_trip_and_start_with_their_owner(lock: Lock, other: int) -> None:
    raw = records.encode_lock(lock)
    assert records.decode_lock(raw) == lock
    assert raw.startswith(records.lock_owner(lock.start_ts))
    assert raw.startswith(records.lock_owner(other)) == (other == lock.start_ts)


def format_1(primary_row: bytes = b"a", primary_column: bytes = b"c") -> bytes:
    """A lock record of format 1, as written before the lock slot (no start_ts)."""
    return (b"\x01P\x03" + (10**13).to_bytes(8, "big") + len(primary_row).to_bytes(4, "big")
            + primary_row + len(primary_column).to_bytes(4, "big") + primary_column + b"v")


@pytest.mark.parametrize("raw", [format_1(), format_1(b"r" * 40, b"c" * 40), b"\x01"])
def test_a_format_1_lock_is_refused_not_misread(raw: bytes) -> None:
    with pytest.raises(DataCorruption, match="format 1"):
        records.decode_lock(raw)


@pytest.mark.parametrize("raw", [
    b"",
    b"\x03" + bytes(30),                                   # an unknown format
    records.lock_owner(5),                                 # the owner prefix alone
    records.lock_bytes(5, records.PUT, b"row", b"col", 1, False, None)[:-1],  # a byte short
])
def test_undecodable_lock_records_are_data_corruption(raw: bytes) -> None:
    with pytest.raises(DataCorruption):
        records.decode_lock(raw)


# --- write records ------------------------------------------------------------------------------

WRITES = st.builds(records.Write, st.sampled_from([records.PUT, records.DELETE]), TS,
                   st.one_of(st.none(), st.binary(max_size=300)))


def test_write_record_bytes_are_as_documented() -> None:
    assert records.write_bytes(records.PUT, 0x0102030405060708, b"v").hex(" ") == (
        "50"                          # kind P
        " 01"                         # flags: inlined
        " 01 02 03 04 05 06 07 08"    # start_ts of the writer
        " 76")                        # the inlined value
    assert records.write_bytes(records.DELETE, 9, None).hex(" ") == (
        "44 00 00 00 00 00 00 00 00 09")  # a delete: kind D, nothing inlined


@settings(max_examples=200, deadline=None)
@given(WRITES)
def test_write_records_round_trip(write: records.Write) -> None:
    assert records.decode_write(records.encode_write(write)) == write


@pytest.mark.parametrize("raw", [
    b"",
    records.write_bytes(records.PUT, 5, None)[:-1],     # a byte short
    b"X" + records.write_bytes(records.PUT, 5, b"v")[1:],  # an unknown kind
])
def test_undecodable_write_records_are_data_corruption(raw: bytes) -> None:
    with pytest.raises(DataCorruption):
        records.decode_write(raw)


@pytest.mark.parametrize("kind", ["embedded", "remote"])
def test_a_corrupt_stored_write_record_is_data_corruption_not_a_bad_request(
        request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    """Served by a node, the error keeps its class (DATA_LOSS), so no client takes the
    store's damage for a mistake in its own request."""
    node = request.getfixturevalue("fake_node") if kind == "remote" else None
    with open_world(kind, tmp_path / "d", node=node, name=request.node.name) as world:
        ts = world.client.timestamp()
        world.backend.store.mutate_rows([RowMutation(world.table, b"a", (
            Put(layout.write_column(b"c"), ts, b"X" + bytes(9)),))])
        with pytest.raises(DataCorruption, match="write record"):
            world.client.begin().get(b"a", b"c")
        with pytest.raises(DataCorruption, match="write record"):
            list(world.client.begin().scan())

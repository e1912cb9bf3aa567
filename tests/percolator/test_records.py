"""records: the lock record's bytes (format 2, with its owner's start_ts), pinned and
round-tripped; every other format is refused with DataCorruption."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bigtable_lite import MAX_TS, DataCorruption
from percolator import records
from percolator.records import Lock

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

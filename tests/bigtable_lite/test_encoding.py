"""Key encoding: round trips, and byte order of keys == tuple order (table, row, column, -ts)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bigtable_lite._encoding import (
    MAX_TS,
    Escaped,
    KeyCache,
    after_row,
    after_table,
    after_versions,
    cell_key,
    column_prefix,
    decode_bytes_list,
    decode_cell_key,
    decode_ts,
    decode_ts_at,
    encode_bytes_list,
    encode_ts,
    escape,
    escape_prefix,
    row_prefix,
    table_prefix,
    unescape_at,
    version_key,
)

# Bytes drawn mostly from the awkward values: the escape byte, the terminator's second
# byte, their neighbours and 0xff, so prefixes and escapes collide often.
AWKWARD = st.lists(st.sampled_from([0x00, 0x01, 0x02, 0x61, 0xfe, 0xff]), max_size=6).map(bytes)
COMPONENT = st.one_of(AWKWARD, st.binary(max_size=12))
NONEMPTY = COMPONENT.filter(bool)
TS = st.one_of(st.sampled_from([0, 1, MAX_TS - 1, MAX_TS]), st.integers(0, MAX_TS))
KEY = st.tuples(NONEMPTY, NONEMPTY, NONEMPTY, TS)

EXAMPLES = settings(max_examples=300, deadline=None)


def order(k: tuple[bytes, bytes, bytes, int]) -> tuple[bytes, bytes, bytes, int]:
    table, row, column, ts = k
    return table, row, column, -ts


@EXAMPLES
@given(COMPONENT, COMPONENT)
def test_escape_round_trips_and_stops_at_its_terminator(a: bytes, rest: bytes) -> None:
    encoded = escape(a) + rest
    assert unescape_at(encoded, 0) == (a, len(escape(a)))


@EXAMPLES
@given(KEY)
def test_cell_key_round_trips(k: tuple[bytes, bytes, bytes, int]) -> None:
    assert decode_cell_key(cell_key(*k)) == k


@EXAMPLES
@given(KEY, KEY)
def test_key_order_is_tuple_order(a: tuple[bytes, bytes, bytes, int],
                                  b: tuple[bytes, bytes, bytes, int]) -> None:
    ka, kb = cell_key(*a), cell_key(*b)
    assert (ka < kb) == (order(a) < order(b))
    assert (ka == kb) == (a == b)


@EXAMPLES
@given(NONEMPTY, COMPONENT, COMPONENT, NONEMPTY, NONEMPTY, TS, TS)
def test_order_holds_for_components_that_prefix_each_other(
        table: bytes, base: bytes, suffix: bytes, col_a: bytes, col_b: bytes,
        ts_a: int, ts_b: int) -> None:
    short, long = base, base + suffix
    if not short:
        return
    for a, b in [((table, short, col_a, ts_a), (table, long, col_b, ts_b)),
                 ((table, col_a, short, ts_a), (table, col_a, long, ts_b)),
                 ((short, col_a, col_b, ts_a), (long, col_a, col_b, ts_b))]:
        assert (cell_key(*a) < cell_key(*b)) == (order(a) < order(b))


@EXAMPLES
@given(KEY, NONEMPTY)
def test_row_and_table_bounds_enclose_exactly_their_keys(k: tuple[bytes, bytes, bytes, int],
                                                         other_row: bytes) -> None:
    table, row, column, ts = k
    key = cell_key(table, row, column, ts)
    tpfx = table_prefix(table)
    rpfx = row_prefix(tpfx, row)
    cpfx = column_prefix(rpfx, column)
    assert key.startswith(cpfx) and key.startswith(rpfx) and key.startswith(tpfx)
    assert key < after_versions(cpfx) and key < after_row(rpfx) and key < after_table(tpfx)
    other = cell_key(table, other_row, column, ts)
    inside = other.startswith(rpfx)
    assert inside == (other_row == row)
    if other_row > row:
        assert other >= after_row(rpfx)
    elif other_row < row:
        assert other < rpfx


@EXAMPLES
@given(COMPONENT, COMPONENT)
def test_escape_prefix_is_a_prefix_of_every_extension(a: bytes, suffix: bytes) -> None:
    assert escape(a + suffix).startswith(escape_prefix(a))


@EXAMPLES
@given(TS, TS)
def test_timestamps_invert(a: int, b: int) -> None:
    assert decode_ts(encode_ts(a)) == a
    assert (encode_ts(a) < encode_ts(b)) == (a > b)


@EXAMPLES
@given(KEY)
def test_the_engine_builds_keys_as_cell_key(k: tuple[bytes, bytes, bytes, int]) -> None:
    """The engine's way: a cached row prefix, a cached escaped column, version_key."""
    table, row, column, ts = k
    keys = KeyCache()
    cpfx = keys.row_prefix(table, row) + keys.columns[column]
    key = version_key(cpfx, ts)
    assert key == cell_key(table, row, column, ts)
    assert decode_ts_at(key, len(cpfx)) == ts


def test_the_escape_cache_is_bounded() -> None:
    cache = Escaped(escape, 3)
    names = [b"a\x00%d" % i for i in range(10)]
    assert [cache[n] for n in names] == [escape(n) for n in names]
    assert len(cache) == 3
    assert [cache[n] for n in names] == [escape(n) for n in names]  # past the bound: computed


@EXAMPLES
@given(st.lists(COMPONENT, max_size=8))
def test_bytes_list_round_trips(items: list[bytes]) -> None:
    assert decode_bytes_list(encode_bytes_list(items)) == items


def test_decode_refuses_malformed_input() -> None:
    with pytest.raises(ValueError):
        decode_bytes_list(encode_bytes_list([b"a"]) + b"x")
    with pytest.raises(ValueError):
        decode_cell_key(b"\x00meta")
    with pytest.raises(ValueError):
        decode_cell_key(cell_key(b"t", b"r", b"c", 1)[:-1])
    with pytest.raises(ValueError):
        unescape_at(b"abc", 0)


def test_layout_bytes_are_pinned() -> None:
    """The persisted format (docs/storage.md); changing it breaks existing data."""
    assert cell_key(b"t", b"r\x00", b"c", 1) == (
        b"\x01" + b"t\x00\x01" + b"r\x00\xff\x00\x01" + b"c\x00\x01"
        + (MAX_TS - 1).to_bytes(8, "big"))

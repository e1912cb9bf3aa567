"""Citation schema: cell encodings round-trip and reject malformed data with ValueError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observers.citations import schema
from observers.citations.schema import decode_count, decode_refs, encode_count, encode_refs

ids = st.text(min_size=1).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))


def test_column_names() -> None:
    assert (schema.REFS, schema.REF_COUNT, schema.CITED_BY) == (
        b"paper:refs", b"paper:ref_count", b"paper:cited_by")


@given(st.lists(ids, max_size=20))
def test_refs_round_trip(refs: list[str]) -> None:
    assert decode_refs(encode_refs(refs)) == refs


def test_refs_encoding_is_canonical() -> None:
    assert encode_refs(["b", "a", "b", "é"]) == '["b","a","b","é"]'.encode()
    assert encode_refs(("x",)) == encode_refs(["x"])
    assert encode_refs([]) == b"[]"


def test_decode_refs_missing_cell_is_no_refs() -> None:
    assert decode_refs(None) == []


def test_decode_refs_accepts_any_json_spacing() -> None:
    assert decode_refs(b' [ "a" , "b" ] ') == ["a", "b"]


@pytest.mark.parametrize("value, problem", [
    (b'["a",', "malformed JSON"),
    (b"", "malformed JSON"),
    (b'{"a": 1}', "expected a JSON list"),
    (b'"a"', "expected a JSON list"),
    (b'["a", 1]', "element 1"),
    (b'["a", null]', "element 1"),
    (b'[["a"]]', "element 0"),
    (b'[""]', "element 0"),
    (b'["\xff"]', "not UTF-8"),
])
def test_decode_refs_rejects_malformed(value: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_refs(value)


def test_encode_refs_rejects_bad_ids() -> None:
    with pytest.raises(TypeError):
        encode_refs("abc")  # a str is a Sequence[str]: refused at run time
    with pytest.raises(TypeError):
        encode_refs(["a", 1])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        encode_refs(["a", ""])


@given(st.integers(min_value=0, max_value=10**12))
def test_count_round_trip(n: int) -> None:
    assert decode_count(encode_count(n)) == n


def test_count_format() -> None:
    assert encode_count(0) == b"0"
    assert encode_count(1234) == b"1234"
    assert decode_count(None) == 0


@pytest.mark.parametrize("value", [b"", b"-1", b"+1", b"01", b" 1", b"1 ", b"1.0", b"x",
                                   b"\xd9\xa1"])
def test_decode_count_rejects_malformed(value: bytes) -> None:
    with pytest.raises(ValueError):
        decode_count(value)


def test_encode_count_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        encode_count(-1)
    with pytest.raises(TypeError):
        encode_count(True)
    with pytest.raises(TypeError):
        encode_count(1.0)  # type: ignore[arg-type]


def test_row_keys() -> None:
    assert schema.row_key("p0000001") == b"p0000001"
    assert schema.paper_id("é".encode()) == "é"
    with pytest.raises(ValueError):
        schema.row_key("")
    with pytest.raises(ValueError):
        schema.paper_id(b"\xff")

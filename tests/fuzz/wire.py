"""Request bytes built at the wire level from message descriptors, as another language's
encoder would write them -- or a broken one.

A message is a sequence of fields, each a tag (field number, wire type) and a payload.
For every field of a descriptor the strategy draws one of: absent, a value from the
field's pool (:class:`Pools`: by field name, so tables, rows and timestamps are ones
the node holds and a step gets past its checks into the store), an edge value of the
field's type (0, 2**64 - 1, empty, huge), or a wrong encoding (another wire type, an
out-of-range enum, invalid UTF-8, a message of another type, random bytes).  Repeated
fields get a few elements or a huge count of one; a oneof gets none, one or two
members; and the whole message may get unknown fields, a duplicated field, a cut end,
or be replaced by random bytes.

Building at the wire level (not through generated classes) is what lets a message
carry what no generated class would write: a foreign client's bytes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
U64 = (1 << 64) - 1
MAX_FIELD_NUMBER = (1 << 29) - 1
FILL = -1
HUGE_COUNTS = (1_000, 10_000, 10_001, 100_000) + (
    (FILL,) if os.environ.get("PERCOLATOR_FUZZ_FILL") else ())
"""Counts of one repeated element: around the store's batch limit (10,000), past it, and
with ``PERCOLATOR_FUZZ_FILL=1`` as many as fill a message the node accepts
(:data:`FILL_BYTES`: tens of millions of tiny elements, which once took a node to
gigabytes; seconds per call, so only in long runs)."""
FILL_BYTES = 60 << 20
MAX_BUILD_BYTES = 70 << 20
"""A huge count is cut so that a message stays below this (just past the node's 64 MiB
message limit, which must then refuse it)."""
MAX_DEPTH = 5

UINT_EDGES = (0, 1, 2, 127, 128, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32,
              (1 << 63) - 1, 1 << 63, U64 - 1, U64)
INT_EDGES = (0, 1, -1, (1 << 31) - 1, -(1 << 31), (1 << 63) - 1, -(1 << 63))

_VARINT_TYPES = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_UINT32,
                 FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_INT32,
                 FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM,
                 FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64}


def varint(n: int) -> bytes:
    """``n`` as a base-128 varint; negative numbers as their 64-bit two's complement."""
    n &= U64
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def len_field(number: int, payload: bytes) -> bytes:
    return tag(number, LEN) + varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    return tag(number, VARINT) + varint(value)


@dataclass(frozen=True)
class Pools:
    """Values to draw from, by field: ``"package.Message.field"`` first, then ``"field"``.

    ``good`` values pass the node's checks (names it holds, timestamps it handed out);
    ``edges`` are at or past a limit.  ``oneofs`` forces a oneof's member
    (``"package.Message": "member"``) in most draws, so that one RPC's examples exercise
    one command kind.  ``exclusive`` names fields of a message of which a plausible one
    sets only one (a contract's rule no descriptor states).  ``messages`` are request
    types to nest where they do not belong.
    """

    good: Mapping[str, Sequence[Any]]
    edges: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    oneofs: Mapping[str, str] = field(default_factory=dict)
    exclusive: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    messages: Sequence[Descriptor] = ()

    def pool(self, desc: Descriptor, f: FieldDescriptor
             ) -> tuple[Sequence[Any], Sequence[Any]]:
        """(good, edge) values of field ``f`` of ``desc``."""
        def find(table: Mapping[str, Sequence[Any]]) -> Sequence[Any]:
            return table.get(f"{desc.full_name}.{f.name}") or table.get(f.name) or ()
        return find(self.good), find(self.edges)


def random_bytes(max_size: int = 64) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=max_size)


PICKS = 1 << 12


def pick(draw: st.DrawFn, pool: Sequence[Any]) -> Any:
    """One of ``pool``, drawn the same way whatever its size: pools hold what the node
    holds now (pending transactions, sessions), and a stateful test's draws must not
    depend on state outside the test's data."""
    return pool[draw(st.integers(0, PICKS - 1)) % len(pool)]


def _chance(draw: st.DrawFn, one_in: int) -> bool:
    """True one time in ``one_in`` (shrinks towards False)."""
    return draw(st.integers(0, one_in - 1)) == one_in - 1


@st.composite
def message(draw: st.DrawFn, desc: Descriptor, pools: Pools) -> bytes:
    """A request of type ``desc``: plausible seven times in ten, else hostile."""
    if draw(st.integers(0, 9)) < 7:
        return _message(draw, desc, pools, 0, hostile=False)
    return _mangled(draw, _message(draw, desc, pools, 0, hostile=True), pools)


def _message(draw: st.DrawFn, desc: Descriptor, pools: Pools, depth: int, *, hostile: bool
             ) -> bytes:
    forced = pools.oneofs.get(desc.full_name)
    chosen: dict[str, str | None] = {}
    for oneof in desc.oneofs:
        names = [f.name for f in oneof.fields]
        if forced in names and draw(st.integers(0, 9)) < 8:
            chosen[oneof.name] = forced
        else:
            chosen[oneof.name] = draw(st.sampled_from([*names, None] if hostile else names))
    exclusive = pools.exclusive.get(desc.full_name, ())
    keep = draw(st.sampled_from(exclusive)) if exclusive and not hostile else None
    parts: list[bytes] = []
    for f in desc.fields:
        member = f.containing_oneof
        if member is not None and chosen.get(member.name) != f.name:
            if not (hostile and _chance(draw, 12)):  # a second member, now and then
                continue
        elif _chance(draw, 3 if hostile else 30) or (f.name in exclusive and f.name != keep):
            continue  # absent
        parts.append(_field(draw, desc, f, pools, depth, hostile=hostile))
    if hostile and _chance(draw, 6):
        parts = draw(st.permutations(parts))
    raw = b"".join(parts)
    if hostile and depth > 0 and _chance(draw, 10):
        return _mangled(draw, raw, pools)
    return raw


def _field(draw: st.DrawFn, desc: Descriptor, f: FieldDescriptor, pools: Pools, depth: int,
           *, hostile: bool) -> bytes:
    """Every entry of field ``f``: one, two of a non-repeated field, any of a repeated one."""
    def one() -> bytes:
        if hostile and _chance(draw, 8):
            return _wrong(draw, f)
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            return len_field(f.number, _nested(draw, f, pools, depth, hostile=hostile))
        return _scalar(draw, desc, f, pools, hostile=hostile)

    if not f.is_repeated:
        # A non-repeated field twice: the last wins (messages merge); a parser must cope.
        return one() + one() if hostile and _chance(draw, 8) else one()
    shape = draw(st.integers(0, 29))
    if shape >= 28:  # a huge count of one element
        element = one()
        count = draw(st.sampled_from(HUGE_COUNTS))
        size = max(1, len(element))
        count = FILL_BYTES // size if count == FILL else min(count, MAX_BUILD_BYTES // size)
        return element * max(1, count)
    count = shape % 4 if hostile else 1 + shape % 3
    return b"".join(one() for _ in range(count))


def _nested(draw: st.DrawFn, f: FieldDescriptor, pools: Pools, depth: int, *, hostile: bool
            ) -> bytes:
    if depth >= MAX_DEPTH:
        return b""
    if hostile and _chance(draw, 8):  # wrong nesting: random bytes, or another type
        if not pools.messages or _chance(draw, 2):
            return draw(random_bytes())
        other = draw(st.sampled_from(list(pools.messages)))
        return _message(draw, other, pools, MAX_DEPTH - 1, hostile=False)
    assert f.message_type is not None
    return _message(draw, f.message_type, pools, depth + 1, hostile=hostile)


def _scalar(draw: st.DrawFn, desc: Descriptor, f: FieldDescriptor, pools: Pools, *,
            hostile: bool) -> bytes:
    """One entry (tag and payload) of a scalar field, correctly encoded."""
    good, edges = pools.pool(desc, f)
    n = f.number
    if good and (not hostile and not _chance(draw, 12) or hostile and _chance(draw, 2)):
        value = pick(draw, good)
    elif edges and (not hostile or _chance(draw, 2)):
        value = pick(draw, edges)
    else:
        value = draw(_any_value(f, hostile=hostile))
    if f.type in _VARINT_TYPES:
        return varint_field(n, value)
    if isinstance(value, str):
        value = value.encode("utf-8")
    if f.type in (FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_STRING):
        return len_field(n, value)
    width = I32 if f.type in (FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32,
                              FieldDescriptor.TYPE_FLOAT) else I64
    return tag(n, width) + bytes(value)  # fixed-width types: none in our contracts


def _any_value(f: FieldDescriptor, *, hostile: bool) -> st.SearchStrategy[Any]:
    """A value of the field's type, from nowhere in particular."""
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.sampled_from([0, 1, 2, U64] if hostile else [0, 1])
    if f.type == FieldDescriptor.TYPE_ENUM:
        assert f.enum_type is not None
        known = [v.number for v in f.enum_type.values]
        return st.sampled_from([*known, max(known) + 1, -1, (1 << 31) - 1] if hostile
                               else known)
    if f.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
        return st.one_of(st.sampled_from(INT_EDGES), st.integers(-1000, 1000))
    if f.type in _VARINT_TYPES:
        return st.one_of(st.sampled_from(UINT_EDGES), st.integers(0, 1 << 20))
    if f.type == FieldDescriptor.TYPE_STRING:
        text = st.text(max_size=40).map(lambda s: s.encode("utf-8"))
        if not hostile:
            return text
        return st.one_of(text, st.sampled_from([b"\xff\xfe", b"\xc3", b"a\x00b",
                                                b"x" * 70_000]))  # not UTF-8; big
    if f.type == FieldDescriptor.TYPE_BYTES:
        return random_bytes() if hostile else st.binary(min_size=1, max_size=16)
    size = 4 if f.type in (FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32,
                           FieldDescriptor.TYPE_FLOAT) else 8
    return st.binary(min_size=size, max_size=size)


def _wrong(draw: st.DrawFn, f: FieldDescriptor) -> bytes:
    """Field ``f`` encoded as no correct encoder would."""
    n = f.number
    is_len = f.type in (FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_STRING,
                        FieldDescriptor.TYPE_MESSAGE)
    how = draw(st.integers(0, 3))
    if how == 0:  # another wire type
        return varint_field(n, draw(st.integers(0, U64))) if is_len else \
            len_field(n, draw(random_bytes(16)))
    if how == 1:
        return draw(st.sampled_from([tag(n, SGROUP), tag(n, EGROUP), tag(n, 6), tag(n, 7),
                                     tag(n, I64) + b"\x00" * 8, tag(n, I32) + b"\x00" * 4]))
    if how == 2:
        return tag(n, VARINT) + b"\xff" * 10 + b"\x01"  # an 11-byte varint
    return tag(n, LEN) + varint(1 << 40)  # a length past the end


def _mangled(draw: st.DrawFn, raw: bytes, pools: Pools) -> bytes:
    """The message as built (mostly), or with unknown fields, a cut end, random bytes."""
    how = draw(st.integers(0, 11))
    if how < 6:
        return raw
    if how == 6:  # unknown fields, of every wire type, low and high numbers
        number = draw(st.sampled_from([15, 16, 99, 1000, 19000, MAX_FIELD_NUMBER]))
        extra = draw(st.sampled_from([varint_field(number, 7), len_field(number, b"junk"),
                                      tag(number, I32) + b"\x01\x02\x03\x04",
                                      tag(number, I64) + b"\x00" * 8,
                                      tag(number, SGROUP) + tag(number, EGROUP)]))
        return raw + extra
    if how == 7 and raw:  # cut short
        return raw[:draw(st.integers(0, len(raw) - 1))]
    if how == 8:
        return draw(random_bytes(256))
    if how == 9 and pools.messages:  # a message of another type
        other = draw(st.sampled_from(list(pools.messages)))
        return _message(draw, other, pools, MAX_DEPTH - 1, hostile=False)
    return raw + raw  # everything twice: repeated fields doubled, the rest merged

"""Framing: a batch message built by joining bytes, not by copying messages.

A protobuf message's encoding is the concatenation of its fields' encodings, and a
field holding a message is ``tag, varint length, bytes``.  So a ``BatchRequest`` is the
concatenation of framed commands and a ``BatchResponse`` of framed results: each side
serializes a command's or result's inner message once with the generated code and
joins bytes, instead of building ``Command``/``Result`` messages and copying the inner
messages into them (measured ~2x cheaper per command).  Tags are derived from the
generated descriptors (field number << 3 | 2, "length-delimited"), never written by
hand; tests/percolator/test_framing.py checks frames against the generated code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["field", "frame", "tags", "varint"]

_SMALL = [bytes((n,)) for n in range(128)]  # one-byte varints
_LENGTH_DELIMITED = 2


def varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tags(message: Any) -> dict[str, bytes]:
    """The tag (a varint: one byte up to field 15, two from 16) of every length-delimited
    field of ``message`` (a message Descriptor), by field name."""
    return {f.name: varint(f.number << 3 | _LENGTH_DELIMITED) for f in message.fields
            if f.type in (f.TYPE_MESSAGE, f.TYPE_BYTES, f.TYPE_STRING)}


def field(tag: bytes, payload: bytes) -> bytes:
    """``payload`` (a serialized message) as the length-delimited field ``tag``."""
    return tag + varint(len(payload)) + payload


def frame(entry_tag: bytes, tag: bytes, payload: bytes) -> bytes:
    """``payload`` as field ``tag`` of one entry of a repeated field ``entry_tag``
    (``BatchRequest.commands``, ``BatchResponse.results``): the bytes to join."""
    inner = tag + varint(len(payload)) + payload
    return entry_tag + varint(len(inner)) + inner

"""Bytes as text on the command line: the one escaping of rows, columns and values.

Rows, columns and values are bytes; the commands take and print them as text that maps
back to exactly those bytes:

* valid UTF-8 shows as itself, except control characters (C0, DEL) and any byte that
  is not part of valid UTF-8, which show as ``\\xNN``;
* a backslash shows as ``\\\\``.

:func:`parse` reads the same form back (``\\xNN`` is byte NN, ``\\\\`` a backslash, every
other character its UTF-8), so what ``percolator scan`` prints -- also in its JSON --
can be passed to ``percolator get`` or ``percolator repair`` as it is.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["argument", "parse", "show"]

_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|\\)")


def parse(text: str) -> bytes:
    """The bytes ``text`` names; ValueError for a backslash not followed by ``xNN`` or ``\\``."""
    if "\\" in _ESCAPE.sub("", text):
        raise ValueError(f"{text!r}: a backslash starts \\xNN (a byte) or \\\\ (a backslash)")
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(text):
        out += text[pos:match.start()].encode("utf-8")
        escape = match.group(1)
        out += b"\\" if escape == "\\" else bytes((int(escape[1:], 16),))
        pos = match.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def _printable(char: str) -> bool:
    code = ord(char)
    return not (code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0)


def show(data: bytes) -> str:
    """``data`` as text that :func:`parse` maps back to it."""
    out: list[str] = []
    pos = 0
    while pos < len(data):
        byte = data[pos]
        if byte < 0x80:
            char = chr(byte)
            out.append("\\\\" if char == "\\" else char if _printable(char) else f"\\x{byte:02x}")
            pos += 1
            continue
        length = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else \
            4 if byte >> 3 == 0b11110 else 0
        try:
            char = data[pos:pos + length].decode("utf-8") if length else ""
        except UnicodeDecodeError:
            char = ""
        if char and _printable(char):
            out.append(char)
            pos += length
        else:
            out.append(f"\\x{byte:02x}")
            pos += 1
    return "".join(out)


def argument(text: str) -> bytes:
    """argparse type: a non-empty row or column in the form :func:`show` prints."""
    try:
        data = parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not data:
        raise argparse.ArgumentTypeError("must not be empty")
    return data

"""argparse types shared by the commands: each refuses bad input with a one-line usage error."""

from __future__ import annotations

import argparse


def positive_int(value: str) -> int:
    """An integer >= 1."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value!r}")
    return int(value)


def positive_float(value: str) -> float:
    """A number > 0."""
    try:
        f = float(value)
    except ValueError:
        f = 0.0
    if not f > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {value!r}")
    return f


def listen_address(value: str) -> str:
    """HOST:PORT with a numeric port (0 = pick a free one)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {value!r}")
    return value

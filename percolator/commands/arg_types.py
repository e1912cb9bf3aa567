"""argparse types shared by the commands: each refuses bad input with a one-line usage error."""

from __future__ import annotations

import argparse


def positive_int(value: str) -> int:
    """An integer >= 1."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value!r}")
    return int(value)


def non_negative_int(value: str) -> int:
    """An integer >= 0."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, not {value!r}")
    return int(value)


MOST_SECONDS = 1e9
"""The largest number of seconds a flag takes (~31 years): beyond it waits and deadlines
overflow the clocks' types (inf, 1e300: a traceback at the first wait)."""


def positive_float(value: str) -> float:
    """A number of seconds > 0 (at most MOST_SECONDS)."""
    try:
        f = float(value)
    except ValueError:
        f = 0.0
    if not 0 < f <= MOST_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected a positive number up to {MOST_SECONDS:g}, not {value!r}")
    return f


def non_negative_float(value: str) -> float:
    """A number of seconds >= 0 (at most MOST_SECONDS)."""
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if not 0 <= f <= MOST_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected a number from 0 to {MOST_SECONDS:g}, not {value!r}")
    return f


def _host_port(value: str, what: str, *, port_zero: bool) -> str:
    host, sep, port = value.rpartition(":")
    example = "127.0.0.1:7070"
    if not sep or not port:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT {what}, not {value!r}: the port is missing (e.g. {example})")
    if not host:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT {what}, not {value!r}: the host is missing (e.g. {example})")
    lowest = 0 if port_zero else 1
    if not port.isdigit() or not lowest <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT {what}, not {value!r}: the port must be a number from"
            f" {lowest} to 65535")
    return value


def listen_address(value: str) -> str:
    """HOST:PORT to serve on, with a numeric port (0 = pick a free one)."""
    return _host_port(value, "to listen on", port_zero=True)


def node_address(value: str) -> str:
    """HOST:PORT of a running node, with a numeric port from 1 to 65535."""
    return _host_port(value, "of a `percolator serve` node", port_zero=False)


def native_listen_address(value: str) -> str:
    """``auto``, ``off``, or HOST:PORT to serve the native transport on (0 = pick one)."""
    if value in ("auto", "off"):
        return value
    return _host_port(value, "for the native transport (or auto, or off)", port_zero=True)

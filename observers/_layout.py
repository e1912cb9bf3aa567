"""Layout: where the observers layer keeps its state in the data (the one owner of its bytes).

Acknowledgements live in the data table, as transactional system cells (so an
observer's commit and its acknowledgement are one atomic write)::

    row     the observed cell's row
    column  b"\\x00" + b"ack:" + observed column    (``Transaction.set_system``)
    value   uint64 big-endian: start_ts of the last observer transaction that committed
            for this cell; it saw every change committed below that timestamp

A park note (why a worker gave up on a cell), kept by the node with the parked entries
(``percolator._notify.parking``): JSON ``{"failures", "error", "parked_at_ms",
"worker"}``.

The notification log, the registrations, the parking table and the workers' reported
counters are the node's (``percolator._notify``): workers reach them only through the
notification verbs.  The JSON keys are persisted: do not rename.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, TypeVar

ACK_PREFIX = b"ack:"

_U64 = struct.Struct(">Q")
T = TypeVar("T")


# --- acknowledgements ---------------------------------------------------------------------

def ack_column(column: bytes) -> bytes:
    """The system column (without the 0x00 the transaction layer adds) acknowledging ``column``."""
    return ACK_PREFIX + column


def encode_ack(start_ts: int) -> bytes:
    return _U64.pack(start_ts)


def decode_ack(raw: bytes | None) -> int:
    """0 when the cell was never acknowledged."""
    if raw is None:
        return 0
    if len(raw) != _U64.size:
        raise ValueError(f"malformed acknowledgement of {len(raw)} bytes")
    value: int = _U64.unpack(raw)[0]
    return value


def describe_system_cell(column: bytes, value: bytes) -> str | None:
    """What an observers' system cell holds, for ``percolator scan --raw`` (entry point of
    group ``percolator.system_cells``); None for a cell of another package."""
    if not column.startswith(ACK_PREFIX):
        return None
    observed = column[len(ACK_PREFIX):].decode("utf-8", "backslashreplace")
    try:
        return f"ack of {observed}: changes up to observer transaction {decode_ack(value)}"
    except ValueError as exc:
        return f"ack of {observed}: {exc}"


# --- park notes -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ParkInfo:
    """Why and when a notification was parked."""

    failures: int
    error: str
    parked_at_ms: int
    worker: str


def encode_park_info(info: ParkInfo) -> bytes:
    return json.dumps({"failures": info.failures, "error": info.error,
                       "parked_at_ms": info.parked_at_ms, "worker": info.worker},
                      sort_keys=True).encode()


def decode_park_info(raw: bytes) -> ParkInfo:
    """ValueError if ``raw`` is not a note."""
    d = _json_object(raw, "park info")
    return ParkInfo(_field(d, "failures", int, 0, "park info"),
                    _field(d, "error", str, "", "park info"),
                    _field(d, "parked_at_ms", int, 0, "park info"),
                    _field(d, "worker", str, "", "park info"))


def _field(d: dict[str, Any], key: str, kind: type[T], default: T, what: str) -> T:
    """``d[key]`` if it is a ``kind`` (never a bool for an int), ``default`` if absent;
    ValueError otherwise."""
    value = d.get(key, default)
    if type(value) is not kind:
        raise ValueError(f"malformed {what} record: {key} is not a {kind.__name__}")
    return value


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        d = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed {what} record: {exc}") from exc
    if not isinstance(d, dict):
        raise ValueError(f"malformed {what} record: not an object")
    return d

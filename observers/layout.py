"""Layout: where the observers layer keeps its state (the one owner of its names and bytes).

Acknowledgements live in the data table, as transactional system cells (so an
observer's commit and its acknowledgement are one atomic write)::

    row     the observed cell's row
    column  b"\\x00" + b"ack:" + observed column    (``Transaction.set_system``)
    value   uint64 big-endian: start_ts of the last observer transaction that committed
            for this cell; it saw every change committed below that timestamp

Parked notifications, table ``<table>.parked`` (one row per data row)::

    column  b"n" + data column   ts = the notification's ts (writer's start_ts)
                                 value = the notification record, unchanged
    column  b"i" + data column   ts = 0, value = JSON {"failures", "error",
                                 "parked_at_ms", "worker"}

Workers, table ``<table>.workers`` (one row per worker id)::

    column  b"lease"   ts = 0, JSON {"expires_ms", "columns": [hex], "host", "pid",
                       "threads"}; deleted by a worker that stops cleanly
    column  b"stats"   ts = 0, JSON of observers.stats.WorkerStats, rewritten periodically

The kind bytes and JSON keys are persisted: do not rename.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, TypeVar

from percolator.layout import PARKED_SUFFIX, WORKERS_SUFFIX

ACK_PREFIX = b"ack:"
PARKED_NOTE = b"n"  # do not renumber
PARKED_INFO = b"i"  # do not renumber
LEASE_COLUMN = b"lease"
STATS_COLUMN = b"stats"

_U64 = struct.Struct(">Q")
T = TypeVar("T")


def parked_table(table: bytes) -> bytes:
    return table + PARKED_SUFFIX


def workers_table(table: bytes) -> bytes:
    return table + WORKERS_SUFFIX


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


# --- parked notifications -------------------------------------------------------------------

def parked_note_column(column: bytes) -> bytes:
    return PARKED_NOTE + column


def parked_info_column(column: bytes) -> bytes:
    return PARKED_INFO + column


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
    d = _json_object(raw, "park info")
    return ParkInfo(_field(d, "failures", int, 0, "park info"),
                    _field(d, "error", str, "", "park info"),
                    _field(d, "parked_at_ms", int, 0, "park info"),
                    _field(d, "worker", str, "", "park info"))


# --- worker leases ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's claim to be alive until ``expires_ms`` (wall clock), observing ``columns``."""

    worker: str
    expires_ms: int
    columns: frozenset[bytes]
    host: str = ""
    pid: int = 0
    threads: int = 0


def encode_lease(lease: Lease) -> bytes:
    return json.dumps({"expires_ms": lease.expires_ms,
                       "columns": sorted(c.hex() for c in lease.columns),
                       "host": lease.host, "pid": lease.pid, "threads": lease.threads},
                      sort_keys=True).encode()


def decode_lease(worker: str, raw: bytes) -> Lease:
    """The lease in ``raw``; ValueError for anything but a well-formed one (a row anyone
    with a write token may write: ``{"expires_ms": null}`` once stopped every worker)."""
    d = _json_object(raw, "lease")
    if "expires_ms" not in d:
        raise ValueError("malformed lease record: no expires_ms")
    columns = _field(d, "columns", list, [], "lease")
    if not all(type(c) is str for c in columns):
        raise ValueError("malformed lease record: columns must be hex strings")
    return Lease(worker, _field(d, "expires_ms", int, 0, "lease"),
                 frozenset(bytes.fromhex(c) for c in columns),  # ValueError if not hex
                 _field(d, "host", str, "", "lease"), _field(d, "pid", int, 0, "lease"),
                 _field(d, "threads", int, 0, "lease"))


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

"""Records and locks as text lines and JSON objects: what scan --raw, locks and repair print.

Bytes are shown by ``byte_text`` (reversible), long values cut in text (whole in
JSON), an undecodable record as the error and its bytes in hex.  A system cell
(column starting 0x00, e.g. the observers' acknowledgements) is described by the
packages that own it: entry points of group ``percolator.system_cells`` name functions
``(column without the 0x00, value) -> str | None`` (observers provides the one for
its acks), so this module never imports the layers above.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from functools import cache
from typing import Any

from .. import records
from .._inspection import DATA_KIND, ROLLBACK_KIND, LockInfo, Record
from ..layout import SYSTEM_PREFIX
from .byte_text import show

__all__ = ["SYSTEM_CELLS_GROUP", "lock_json", "lock_text", "record_json", "record_text",
           "value_text"]

log = logging.getLogger(__name__)

SYSTEM_CELLS_GROUP = "percolator.system_cells"
VALUE_CHARS = 80
"""Characters of a value shown in text (JSON carries it whole)."""
HEX_BYTES = 64

Describe = Callable[[bytes, bytes], "str | None"]


@cache
def _describers() -> tuple[Describe, ...]:
    found: list[Describe] = []
    for ep in importlib.metadata.entry_points(group=SYSTEM_CELLS_GROUP):
        try:
            found.append(ep.load())
        except (ImportError, AttributeError) as exc:
            log.warning("entry point %s of %s does not load: %s", ep.name, SYSTEM_CELLS_GROUP,
                        exc)
    return tuple(found)


def describe_system(column: bytes, value: bytes | None) -> str | None:
    """What the package owning system cell ``column`` says its ``value`` is."""
    if not column.startswith(SYSTEM_PREFIX) or value is None:
        return None
    for describe in _describers():
        said = describe(column[len(SYSTEM_PREFIX):], value)
        if said is not None:
            return said
    return None


def value_text(value: bytes) -> str:
    text = show(value)
    if len(text) <= VALUE_CHARS:
        return text
    return f"{text[:VALUE_CHARS]}... ({len(value)} bytes)"


def _hex(raw: bytes) -> str:
    shown = raw[:HEX_BYTES].hex(" ")
    return shown if len(raw) <= HEX_BYTES else f"{shown} ... ({len(raw)} bytes)"


def _op(op: bytes) -> str:
    return "put" if op == records.PUT else "delete" if op == records.DELETE else show(op)


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.3f}s"


def record_text(r: Record, now_ms: int | None) -> str:
    """One line (without the row) describing ``r``."""
    head = f"{show(r.column)}  {r.kind:<8}"
    if r.error is not None:
        return f"{head} UNDECODABLE at ts {r.ts} ({show(r.store_column)}): {r.error}; bytes" \
               f" {_hex(r.raw)}"
    system = describe_system(r.column, _value_of(r))
    suffix = f"  [{system}]" if system else ""
    if r.lock is not None:
        lock = r.lock
        parts = [f"start_ts={lock.start_ts}", _op(lock.op),
                 "primary" if lock.is_primary else
                 f"primary=({show(lock.primary_row)}, {show(lock.primary_column)})"]
        if now_ms is not None:
            parts.append(f"ttl_left={_seconds(lock.expires_at_ms - now_ms)}")
        if r.ts != 0:
            parts.append(f"at ts {r.ts}, outside the lock slot: readers ignore it")
        if lock.value is not None:
            parts.append(f"value={value_text(lock.value)}")
        elif lock.op == records.PUT:
            parts.append(f"value in data at {lock.start_ts}")
        return f"{head} {' '.join(parts)}{suffix}"
    if r.write is not None:
        write = r.write
        parts = [f"commit_ts={r.ts}", f"start_ts={write.start_ts}", _op(write.kind)]
        if write.value is not None:
            parts.append(f"value={value_text(write.value)}")
        elif write.kind == records.PUT:
            parts.append(f"value in data at {write.start_ts}")
        return f"{head} {' '.join(parts)}{suffix}"
    if r.kind == DATA_KIND:
        return f"{head} start_ts={r.ts} {len(r.raw)} bytes value={value_text(r.raw)}{suffix}"
    if r.kind == ROLLBACK_KIND:
        return f"{head} start_ts={r.ts} (rolled back)"
    if r.notification is not None:
        flags = [name for name, on in (("weak", r.notification.weak),
                                       ("backfill", r.notification.backfill)) if on]
        return f"{head} commit_ts={r.ts}{' ' + ' '.join(flags) if flags else ''}"
    return f"{head} ts={r.ts} bytes {_hex(r.raw)}"


def _value_of(r: Record) -> bytes | None:
    if r.lock is not None:
        return r.lock.value
    if r.write is not None:
        return r.write.value
    return r.raw if r.kind == DATA_KIND else None


def record_json(r: Record, now_ms: int | None) -> dict[str, Any]:
    """``r`` as a JSON object (bytes as ``byte_text``; an undecodable record's in hex)."""
    out: dict[str, Any] = {"table": show(r.table), "row": show(r.row),
                           "column": show(r.column), "kind": r.kind, "ts": r.ts}
    if r.error is not None:
        out.update(undecodable=True, error=r.error, store_column=show(r.store_column),
                   bytes_hex=r.raw.hex())
        return out
    out["undecodable"] = False
    system = describe_system(r.column, _value_of(r))
    if system:
        out["system"] = system
    if r.lock is not None:
        lock = r.lock
        out.update(start_ts=lock.start_ts, op=_op(lock.op), primary_row=show(lock.primary_row),
                   primary_column=show(lock.primary_column), is_primary=lock.is_primary,
                   expires_at_ms=lock.expires_at_ms,
                   ttl_left_ms=None if now_ms is None else lock.expires_at_ms - now_ms,
                   value=None if lock.value is None else show(lock.value))
    elif r.write is not None:
        out.update(commit_ts=r.ts, start_ts=r.write.start_ts, op=_op(r.write.kind),
                   value=None if r.write.value is None else show(r.write.value))
    elif r.kind == DATA_KIND:
        out.update(start_ts=r.ts, value_bytes=len(r.raw), value=show(r.raw))
    elif r.kind == ROLLBACK_KIND:
        out.update(start_ts=r.ts)
    elif r.notification is not None:
        out.update(commit_ts=r.ts, weak=r.notification.weak,
                   backfill=r.notification.backfill)
    return out


def lock_text(info: LockInfo, now_ms: int) -> str:
    """One line: the cell, its lock, the owner's status."""
    r = info.record
    cell = f"({show(r.row)}, {show(r.column)})"
    if r.lock is None:
        return f"{cell} UNDECODABLE lock: {info.detail}; bytes {_hex(r.raw)} (percolator" \
               " repair removes it)"
    lock = r.lock
    left = lock.expires_at_ms - now_ms
    state = f"expires in {_seconds(left)}" if left > 0 else f"expired {_seconds(-left)} ago"
    owner = info.owner if not info.commit_ts else f"{info.owner} at {info.commit_ts}"
    primary = "primary" if lock.is_primary else \
        f"primary ({show(lock.primary_row)}, {show(lock.primary_column)})"
    detail = f" ({info.detail})" if info.detail else ""
    return f"{cell} start_ts={lock.start_ts} {_op(lock.op)} {primary} {state}; owner" \
           f" {owner}{detail}"


def lock_json(info: LockInfo, now_ms: int) -> dict[str, Any]:
    out = record_json(info.record, now_ms)
    out.update(owner=info.owner, owner_commit_ts=info.commit_ts or None,
               detail=info.detail or None)
    return out

"""Mail: counter deltas sent in bulk to the worker that owns their targets.

Why: a refs batch of one worker updates the counters of papers whose buckets other
workers own (with K workers, (K-1)/K of them).  Written directly, those counters would
collide with the owners' own writes; sent one target at a time through a slot and a
fold (observers.citations.combine), each costs a slot write, a notification, a fold
run and its acknowledgement: with 2 workers a 20,000-paper load made 33,000 fold runs
and cost 3x the CPU per paper of one worker.  Mail sends them per *bucket*: one cell
holding every delta of one transaction for the targets of one bucket, one notification,
folded by the bucket's owner -- the worker that writes those counters directly anyway,
so the fold never collides across workers.  A batch mails its own buckets too: the
owner's fold gathers the mail of many batches (``Observer.gather``), so a counter is
written once for all of them instead of once per batch (at 100,000 papers a batch of
8,192 covers 8% of the corpus, and its papers share few targets).

Layout, one row per (sending transaction, destination bucket), written once and
emptied by the fold that applies it::

    row     QUEUE_PREFIX 0x00 <start_ts of the sender: 8 bytes, big-endian> <1 byte>
    column  "deltas"                  value: compact JSON object {target id: delta}
    column  citations:fold            never written: its weak notification

The last byte is chosen so that the row falls in the destination bucket of the fold
column (registered with partition prefix QUEUE_PREFIX: the bucket hashes the row
after the prefix, ``percolator.notifications.bucket_of``); for any fixed first bytes
the 256 values of one more byte reach all 256 buckets.  The sender's start_ts makes the
row unique: no two transactions ever write the same mail row, so senders never
conflict, and a fold that applies a mail deletes it in the same transaction (two folds
of one mail conflict on that delete, and the acknowledgement makes a re-run skip).
A target id never starts with 0x00, so mail rows never look like a target's slot row.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping

from percolator.notifications import BUCKETS, bucket_of

__all__ = ["DELTAS", "MAIL_MIN", "decode_mail", "encode_mail", "is_mail_row", "mail_rows"]

MAIL_PREFIX_BYTE = b"\x00"
DELTAS = b"deltas"
"""Column of a mail row holding its deltas; persisted, do not rename."""
MAIL_MIN = 4
"""Deltas for one bucket in one transaction from which they travel as one mail (fewer go
through slots: a single edit's few updates do not leave a mail row each)."""


def _rows(queue_prefix: bytes, start_ts: int) -> list[bytes]:
    body = MAIL_PREFIX_BYTE + start_ts.to_bytes(8, "big")
    seed = zlib.crc32(body)
    rows: list[bytes] = [b""] * BUCKETS
    for last in range(256):
        rows[zlib.crc32(bytes((last,)), seed) % BUCKETS] = queue_prefix + body + bytes((last,))
    if not all(rows):  # never with crc32 and 256 buckets; a changed bucket count would
        raise AssertionError("mail rows do not reach every bucket")
    return rows


def mail_rows(queue_prefix: bytes, start_ts: int) -> list[bytes]:
    """The mail row of the transaction at ``start_ts`` for each bucket (index = bucket)."""
    if not 0 < start_ts < 1 << 64:
        raise ValueError(f"start_ts {start_ts} out of range")
    rows = _rows(queue_prefix, start_ts)
    assert bucket_of(rows[0], queue_prefix) == 0
    return rows


def is_mail_row(queue_prefix: bytes, row: bytes) -> bool:
    return row.startswith(queue_prefix + MAIL_PREFIX_BYTE)


def encode_mail(deltas: Mapping[bytes, int]) -> bytes:
    return json.dumps({t.decode("utf-8"): d for t, d in deltas.items()},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_mail(value: bytes) -> dict[bytes, int]:
    """A mail's deltas; ValueError if it is not what :func:`encode_mail` writes."""
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"mail {value[:40]!r} is not JSON") from exc
    if not isinstance(raw, dict) or not all(
            isinstance(t, str) and t and type(d) is int for t, d in raw.items()):
        raise ValueError(f"mail {value[:40]!r} is not an object of target ids to integers")
    return {t.encode("utf-8"): d for t, d in raw.items()}

"""Combining counters: conflict-free increments of contended counters and of other
workers' counters, folded by their owner.

Why: a paper cited by thousands is a hot cell.  If every citing paper's observer
read-modified-wrote its ``paper:cited_by``, concurrent observer transactions would
collide on it under snapshot isolation (first committer wins) and re-run whole
observers again and again (Percolator 2.4; measured in docs/citations.md).  Apache
Fluo's CombineQueue is the model: writers put deltas into buckets, and one
transaction per key later folds them into the value.

Ours differs in one respect, forced by the store: bigtable_lite keeps every version
and the transaction layer has no garbage collection, so a queue whose cells are
written once and deleted leaves dead versions behind that every later fold scan must
walk (a fold slowed from milliseconds to hundreds of milliseconds after one load).
So the buckets here are *slots that are overwritten, never deleted*: reading a cell
costs one seek however many versions it has.

Layout, per combined target (the counter cell itself stays in the target's row)::

    row     QUEUE_PREFIX + target row        (a reserved row range: not a paper)
    column  "slot:" + 2 hex digits           value: signed decimal, the cumulative
                                             sum of the deltas written to this slot
    column  "folded"                         value: signed decimal, the sum of all
                                             slots already added to the counter

    column  "owed"                           value: signed decimal <= 0, what a fold
                                             could not take from the counter

    invariant, in every snapshot:
        true count = counter + owed + sum(slots) - folded + the target's deltas in mail

A writer adds delta d to target t, in its own transaction (:meth:`add_many`):

* if ``mail_min`` (4) or more updates of the transaction fall in t's bucket: all of
  them in one **mail** to that bucket (``observers.citations.mail``: one cell, one weak
  notification, folded by the bucket's owner), whoever owns it -- this worker too.
  This is the bulk path: a refs batch of 8,192 papers sends its updates as at most 256
  mails, and the owner's fold gathers the mail of many batches (``FoldObserver.gather``:
  it waits while refs are queued, up to 120 s or 4,096 rows), so a counter is written
  once for all of them rather than once per batch.
* otherwise, t is *its own* and *quiet*: counter += d directly.  One transaction, no
  extra hop: the lowest latency (single edits).
* otherwise: slot[s] += d, and a weak notification on (QUEUE_PREFIX + t, FOLD).

**Its own**: the worker owns t's bucket of ``FOLD`` (the fold observer registers
``QUEUE_PREFIX`` as its partition prefix, so the fold row of t is in t's bucket, and
the workers observing both columns own the same buckets of each: the fold of t runs
where t's refs run).  So a counter is written directly by one worker only, whichever
papers cite it: no two workers ever collide on a counter.  **Quiet**: no other
running transaction of this process is updating t
(:class:`~observers.citations.contention.InFlight`: a fold of t, or another writer),
its counter is below ``hot`` (a paper cited by thousands is contended by its own
worker's writers at any rate worth the name; the claim comes after a writer's snapshot,
so two writers of one process can still collide on it), and, optionally, this process
did not update it less than ``burst`` seconds ago.  **The slot** is the worker's own
(its member index picks a group of :data:`SLOTS_PER_MEMBER` slots, the in-process
writer one of them), so slots collide
neither across workers (while there are at most 32 / 16 of them; more share, which only
costs a retry) nor between the running writers of one worker.  Correctness never
depends on any of it: both paths keep the invariant.

The fold observer on ``FOLD`` (:meth:`fold_many`), run by t's owner, many targets per
transaction: counter += sum(slots) - folded; folded := sum(slots); and for a mail row,
each counter += its delta, and the mail is deleted.  It reads the slots and writes
only ``folded`` and the counter, so it never conflicts with slot writers (nor with
senders of mail: every mail row is written by one transaction); the worker runs it at
most once at a time per row (the observers layer's ack), and claims its targets
in-process while it runs, so direct writers of its own process combine instead of
colliding with it.  The refs and fold observers share a batch group
(:data:`COUNTERS_GROUP`), so their batches, which write the same counters directly,
never run at once in one worker.  Re-running a fold is a no-op (sum(slots) - folded =
0; a mail applied is gone), and any number of pending deltas are folded by one run.

A direct write never takes the counter below 0: if the counter alone cannot absorb a
decrement (some increments are still in slots), the decrement goes to a slot too --
in the naive configuration as well, which matters after switching modes on a live
table.
A fold's result is below 0 when it folds a decrement before the increment it undoes:
the increment is in a mail whose fold had a setback (the worker folds a cell whose
batch failed apart from the others), the decrement in the target's slot row.  Then the
counter is set to 0 and the rest is *owed*, in the target's combining row; every fold
of the target reads it, and the fold of that mail takes it.  (Failing the fold instead
parked the slot row after its retries, and the count stayed wrong until a replay.)

Paper ids must not start with ``\\x00``: readers of papers skip ``[QUEUE_PREFIX,
QUEUE_END)`` (``observers.citations.verify``) and loaders refuse such ids.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from observers import Observer, Placement
from percolator.notifications import bucket_of

from .contention import DEFAULT_SLOTS, InFlight, RecentTargets
from .mail import DELTAS, MAIL_MIN, decode_mail, encode_mail, is_mail_row, mail_rows
from .schema import CITED_BY, decode_count, encode_count

if TYPE_CHECKING:
    from percolator import Transaction

QUEUE_PREFIX = b"\x00cq/"
"""First bytes of every combining row; persisted, do not change."""
QUEUE_END = b"\x00cq0"
"""Smallest row after every combining row ("0" follows "/")."""
RESERVED_ROW_PREFIX = b"\x00"
"""Row keys starting with this byte are not papers."""
FOLD = b"citations:fold"
"""Observed column of combining rows (slot rows and mail rows); only weak notifications
ever target it."""
SLOT_PREFIX = b"slot:"
FOLDED = b"folded"
OWED = b"owed"
"""Column of a target's combining row: what a fold could not take from the counter (a
decrement folded before the increment it undoes, still in a mail); <= 0."""
DEFAULT_HOT: int | None = 1000
"""Counters at or above this value are always combined: a paper cited by thousands is
contended by the running writers of its own worker at any rate worth the name."""
SLOTS_PER_MEMBER = 16
"""Slots of one worker: its in-process writers spread over them."""
COUNTERS_GROUP = "citations.counters"
"""Batch group of the refs and fold observers: both write counters directly, so a worker
runs their batches one at a time (the observers' ``batch_group``)."""
DEFAULT_FOLD_BATCH = 4096
"""Combining rows (slot rows, mail rows) one fold transaction folds at most: the mail of
16 refs batches of one worker, which hold ~470 deltas each."""
FOLD_GATHER = 120.0
"""Seconds the fold's cells wait while refs are queued (``Observer.gather``): during a
backlog the mail of many refs batches is folded at once, each counter written once for
all of them (a bulk load's counts appear when the backlog is done, or every 2 minutes)."""
DEFAULT_BURST = 0.0
"""Seconds: a target updated this recently by this process is combined (0: off)."""

_SIGNED = re.compile(rb"0|-?[1-9][0-9]*")


def combine_row(target: bytes) -> bytes:
    return QUEUE_PREFIX + target


def target_of(row: bytes) -> bytes:
    if not row.startswith(QUEUE_PREFIX):
        raise ValueError(f"row {row!r} is not a combining row")
    return row[len(QUEUE_PREFIX):]


def slot_column(source: bytes, slots: int) -> bytes:
    """The slot of a source when no in-flight tracking picks one: stable across processes
    (crc32, not the salted hash())."""
    return SLOT_PREFIX + b"%02x" % (zlib.crc32(source) % slots)


def encode_signed(n: int) -> bytes:
    return str(n).encode("ascii")


def decode_signed(value: bytes | None) -> int:
    """A slot or ``folded`` cell; None (no cell) is 0."""
    if value is None:
        return 0
    if not _SIGNED.fullmatch(value):
        raise ValueError(f"combining cell {value[:40]!r} is not a canonical signed decimal")
    return int(value)


def is_reserved(row: bytes) -> bool:
    return row.startswith(RESERVED_ROW_PREFIX)


def check_target(target: bytes) -> None:
    """Refuse rows in the reserved range: their counters would land among combining rows."""
    if is_reserved(target):
        raise ValueError(f"paper id {target!r} starts with 0x00, which is reserved")


class CombiningCounter:
    """Decimal counters in ``column`` (missing = 0); hot ones combined through ``slots`` slots.

    A target is hot when another transaction of this process is updating it
    (``track=True``), or its counter is at least ``hot`` (None: never by count), or this
    process updated it less than ``burst`` seconds ago (0: never by rate).  With
    ``track=False, hot=None, burst=0`` every update is a direct read-modify-write (the
    naive version); ``hot=0`` combines everything.  Combined updates of a transaction
    that share a bucket, ``mail_min`` or more of them, go by mail to the bucket's owner
    (observers.citations.mail), the others through slots.  Writers call :meth:`done`
    with their source after committing (the observers' ``committed`` hook).
    """

    def __init__(self, column: bytes = CITED_BY, *, slots: int = DEFAULT_SLOTS,
                 hot: int | None = DEFAULT_HOT, burst: float = DEFAULT_BURST,
                 track: bool = True, mail_min: int = MAIL_MIN) -> None:
        if not 1 <= slots <= 256:
            raise ValueError(f"slots must be in [1, 256], got {slots}")
        if hot is not None and hot < 0:
            raise ValueError(f"hot must be >= 0 or None, got {hot}")
        if burst < 0:
            raise ValueError(f"burst must be >= 0, got {burst}")
        if mail_min < 1:
            raise ValueError(f"mail_min must be >= 1, got {mail_min}")
        self.mail_min = mail_min
        self.column = column
        self.slots = slots
        self.hot = hot
        self.recent = RecentTargets(burst) if burst > 0 else None
        self.in_flight = InFlight(min(slots, SLOTS_PER_MEMBER)) if track else None
        self.placement: Placement | None = None  # the worker's, once it runs (attach)
        self._slot_columns = tuple(SLOT_PREFIX + b"%02x" % i for i in range(slots))

    @property
    def combining(self) -> bool:
        """Whether any update can be combined (False: the naive version)."""
        return self.hot is not None or self.recent is not None or self.in_flight is not None

    def owns(self, target: bytes) -> bool:
        """Whether this worker may write ``target``'s counter directly (it owns the
        target's fold bucket; outside a worker, always)."""
        placement = self.placement
        return placement is None or placement.owns(combine_row(target), FOLD)

    def _slot(self, source: bytes) -> bytes:
        """The slot of writer ``source``: the worker's group, the writer's place in it."""
        if self.in_flight is None:
            return slot_column(source, self.slots)
        member = self.placement.member_index if self.placement is not None else 0
        index = (max(0, member) * SLOTS_PER_MEMBER + self.in_flight.slot(source)) % self.slots
        return self._slot_columns[index]

    def _busy(self, source: bytes, targets: list[bytes]) -> list[bool]:
        busy = [False] * len(targets)
        if self.in_flight is not None:
            busy = self.in_flight.claim(source, targets)
        if self.recent is not None:
            busy = [a or b for a, b in zip(busy, self.recent.touch_all(targets))]
        return busy

    def done(self, source: bytes) -> None:
        """The writer ``source`` committed: its targets are no longer being updated."""
        if self.in_flight is not None:
            self.in_flight.release(source)

    def add_many(self, txn: Transaction, deltas: Sequence[tuple[bytes, int]],
                 source: bytes) -> None:
        """Add each (target, delta) in ``txn``; ``source`` picks the slot (one writer, one slot).

        Where ``mail_min`` or more updates share a bucket (a batch's), all of them go by
        mail to the bucket's owner, this worker's own too (observers.citations.mail):
        the owner's fold gathers the mail of many batches and writes each counter once.
        Otherwise this worker's quiet counters are written directly and the rest go
        through the writer's slot of each target.
        """
        column = self.column
        for target, _ in deltas:
            check_target(target)
        busy = self._busy(source, [t for t, _ in deltas])
        combining = self.combining
        owns = self.owns if combining else (lambda target: True)
        buckets = [bucket_of(target) for target, _ in deltas]
        per_bucket: dict[int, int] = {}
        for bucket in buckets:
            per_bucket[bucket] = per_bucket.get(bucket, 0) + 1
        mail: dict[int, dict[bytes, int]] = {}
        combined: list[tuple[bytes, int]] = []
        mine: list[tuple[bytes, int]] = []
        for (target, delta), bucket, hot_now in zip(deltas, buckets, busy):
            if combining and per_bucket[bucket] >= self.mail_min:
                mail.setdefault(bucket, {})[target] = delta
            elif hot_now or not owns(target):
                combined.append((target, delta))
            else:
                mine.append((target, delta))
        # Only this worker's counters are read: another worker's may be locked by its
        # running batch, and reading it would wait for that batch to commit.
        counts = txn.get_many([(target, column) for target, _ in mine])
        for target, delta in mine:
            n = decode_count(counts[(target, column)])
            if (self.hot is None or n < self.hot) and n + delta >= 0:
                _set_count(txn, target, column, n + delta)
            else:
                combined.append((target, delta))
        if mail:
            rows = mail_rows(QUEUE_PREFIX, txn.start_ts)
            for bucket, group in mail.items():
                txn.set(rows[bucket], DELTAS, encode_mail(group))
                txn.notify(rows[bucket], FOLD)
        if combined:  # none of them in a mailed bucket
            self._slot_all(txn, combined, source)

    def _slot_all(self, txn: Transaction, slotted: list[tuple[bytes, int]],
                  source: bytes) -> None:
        """Add each update to the writer's slot of its target, with a fold notification."""
        slot = self._slot(source)
        slot_rows = [combine_row(target) for target, _ in slotted]
        current = txn.get_many([(row, slot) for row in slot_rows])
        for row, (_, delta) in zip(slot_rows, slotted):
            txn.set(row, slot, encode_signed(decode_signed(current[(row, slot)]) + delta))
            txn.notify(row, FOLD)

    def fold(self, txn: Transaction, row: bytes) -> int:
        """Add the target's unfolded slot sums to its counter in ``txn``; return the amount."""
        return self.fold_many(txn, [row])[row]

    def fold_many(self, txn: Transaction, rows: Sequence[bytes]) -> dict[bytes, int]:
        """Fold the combining ``rows`` in ``txn`` (slot rows and mail rows, three batched
        reads); the amount each added.

        Claims the targets while running (key: the first row), so direct writers of this
        process combine instead of colliding with the fold; call :meth:`done` with that
        row after the commit.
        """
        slot_rows = [row for row in rows if not is_mail_row(QUEUE_PREFIX, row)]
        mail = [row for row in rows if is_mail_row(QUEUE_PREFIX, row)]
        wanted = [(row, c) for row in slot_rows for c in (*self._slot_columns, FOLDED)]
        cells = txn.get_many(wanted + [(row, DELTAS) for row in mail])
        amounts: dict[bytes, int] = {}
        moved: dict[bytes, int] = {}
        for row in slot_rows:
            total = sum(decode_signed(cells[(row, c)]) for c in self._slot_columns)
            folded = decode_signed(cells[(row, FOLDED)])
            amounts[row] = total - folded
            if total != folded:
                txn.set(row, FOLDED, encode_signed(total))
                target = target_of(row)
                moved[target] = moved.get(target, 0) + total - folded
        for row in mail:
            value = cells[(row, DELTAS)]
            amounts[row] = 0
            if value is None:
                continue  # applied already (a re-delivery)
            for target, delta in decode_mail(value).items():
                check_target(target)
                moved[target] = moved.get(target, 0) + delta
                amounts[row] += delta
            txn.delete(row, DELTAS)
        if self.in_flight is not None and rows:
            self.in_flight.claim(rows[0], list(moved))
        targets = [t for t, d in moved.items() if d]
        if targets:
            counts = txn.get_many([(target, self.column) for target in targets] +
                                  [(combine_row(target), OWED) for target in targets])
            for target in targets:
                owed = decode_signed(counts[(combine_row(target), OWED)])
                n = decode_count(counts[(target, self.column)]) + owed + moved[target]
                # Below 0 when a decrement is folded before the increment it undoes (in a
                # mail whose fold had a setback): the counter stays at 0 and the rest is
                # owed, taken by the fold of that mail, which reads it too.
                _set_count(txn, target, self.column, max(n, 0))
                if min(n, 0) != owed:
                    if n < 0:
                        txn.set(combine_row(target), OWED, encode_signed(n))
                    else:
                        txn.delete(combine_row(target), OWED)
        return amounts


def _set_count(txn: Transaction, row: bytes, column: bytes, n: int) -> None:
    if n:
        txn.set(row, column, encode_count(n))
    else:
        txn.delete(row, column)  # a missing count reads as 0


def unfolded(txn: Transaction) -> dict[bytes, int]:
    """Targets with deltas not yet in their counter (in slots or mail), in ``txn``'s
    snapshot."""
    sums: dict[bytes, int] = {}
    for row, column, value in txn.scan(QUEUE_PREFIX, QUEUE_END):
        if is_mail_row(QUEUE_PREFIX, row):
            if column == DELTAS:
                for target, delta in decode_mail(value).items():
                    sums[target] = sums.get(target, 0) + delta
        elif column.startswith(SLOT_PREFIX):
            sums[target_of(row)] = sums.get(target_of(row), 0) + decode_signed(value)
        elif column == FOLDED:
            sums[target_of(row)] = sums.get(target_of(row), 0) - decode_signed(value)
        elif column == OWED:
            sums[target_of(row)] = sums.get(target_of(row), 0) + decode_signed(value)
    return {target: d for target, d in sums.items() if d}


class FoldObserver(Observer):
    """Observer of ``FOLD``: folds the slots of many targets into their counters per
    transaction, where the targets' own refs run (``partition_prefix``)."""

    column = FOLD
    partition_prefix = QUEUE_PREFIX
    batch_group = COUNTERS_GROUP
    gather = FOLD_GATHER

    def __init__(self, counter: CombiningCounter | None = None, *,
                 name: str = "citations.fold", max_batch: int = DEFAULT_FOLD_BATCH) -> None:
        super().__init__(name=name, max_batch=max_batch)
        self.counter = counter or CombiningCounter()

    def attach(self, placement: Placement) -> None:
        self.counter.placement = placement

    def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
        self.counter.fold(txn, row)

    def process_batch(self, txn: Transaction, rows: Sequence[bytes], column: bytes) -> None:
        self.counter.fold_many(txn, rows)

    def committed(self, row: bytes, column: bytes, commit_ts: int) -> None:
        self.counter.done(row)


def rows_of(targets: Iterable[str]) -> list[bytes]:
    """Row keys of paper ids, refusing reserved ones."""
    rows = [t.encode("utf-8") for t in targets]
    for row in rows:
        check_target(row)
    return rows

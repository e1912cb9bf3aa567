"""Assignment: which live worker owns which bucket of each observed column.

The node is the coordinator: every worker talks to it anyway, and it sees every entry
it writes.  A worker is a *member* while its lease lasts (renewed by each of its
pulls, ``lease_ms`` of the node's monotonic clock).  For each column, the owner of
bucket *b* should be the live member observing the column with the highest
rendezvous weight blake2b(b, key = worker id) (Thaler and Ravishankar's highest random
weight) among those not yet at their share, ceil(buckets / members), buckets taken in
order (rendezvous with bounded loads): the split is even within one bucket, a member
joining or leaving moves few buckets besides those it takes or leaves, and two columns
observed by the same members get the same owners -- the citations' fold of paper *t*
runs where *t*'s refs run.  (The weights were crc32(worker id, b) at first: crc32 is
linear, so the weights of two workers differ by a constant XOR and the highest one
follows a few bits of the bucket -- 4 workers always split 256 buckets 128/64/32/32,
and the one with 128 held up every 4-worker run.)

Ownership moves **revoke before grant**: a bucket whose target changed is marked
revoking on its owner, who drops its queued cells of it, lets the running ones finish
and lists it as released; only then is it granted to the new owner, who reads it from
its start.  A member whose lease expired loses its buckets at once (it fenced itself
before that: a worker stops starting observer transactions half a lease after its
last pull was sent).  A revocation not answered within ``handover`` seconds is forced:
effects stay exactly-once by the ack, only work may be repeated.  After a node
restart, members claim the buckets they hold; a claim of a free bucket is granted.

**The first assignment of a column waits for its workers to join** (``quiet``,
``most``; as Kafka's ``group.initial.rebalance.delay.ms``): while no bucket of a column
has an owner, its buckets are granted only once no worker observing it joined for
``quiet`` seconds, or ``most`` seconds after the first one joined.  Workers started
together (a cluster, a deployment) join over a second or so -- each process imports,
connects, registers -- and the first to join would otherwise own every bucket, take a
batch of all of them and hold the others' share until that batch commits.  The node
holds it (``FIRST_QUIET``); in one process (embedded) nothing is held.

Each member also gets a small ``index`` (the smallest free, or the one it claims), which
the citations use to name their slot columns.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .log import BUCKETS

__all__ = ["Assignment", "FIRST_MOST", "FIRST_QUIET", "HANDOVER", "MAX_INDEX", "Member"]

_log = logging.getLogger(__name__)

HANDOVER = 30.0
"""Seconds a revoked bucket may stay with its owner before it is granted anyway."""
FIRST_QUIET = 0.5
"""A node's first assignment of a column waits until no worker joined for this long..."""
FIRST_MOST = 3.0
"""...or this long after its first worker joined."""
MAX_INDEX = 1024

Buckets = dict[bytes, frozenset[int]]


@dataclass(slots=True)
class Member:
    worker: str
    columns: frozenset[bytes]
    expires: float
    index: int
    weights: tuple[int, ...]
    joined: float = 0.0
    wake: threading.Event = field(default_factory=threading.Event)
    stats: bytes = b""
    # The first bucket its last pull had no room for: the next pull reads from there.
    resume: tuple[bytes, int] | None = None


def _weights(worker: str) -> tuple[int, ...]:
    """The member's rendezvous weight of every bucket: a keyed hash, so the weights of two
    members are independent (the order between them is a coin toss per bucket)."""
    key = hashlib.blake2b(worker.encode("utf-8", "surrogatepass"), digest_size=32).digest()
    return tuple(int.from_bytes(hashlib.blake2b(b.to_bytes(2, "big"), digest_size=8,
                                                key=key).digest(), "big")
                 for b in range(BUCKETS))


class Assignment:
    """Members, owners and revocations of one table.  Not thread-safe: the feed holds its
    lock around every call."""

    def __init__(self, *, handover: float = HANDOVER, quiet: float = 0.0,
                 most: float = 0.0) -> None:
        self.handover = handover
        self.quiet = quiet
        self.most = most
        self.holding: dict[bytes, float] = {}
        """Columns whose first assignment waits, each until when (at the latest)."""
        self.members: dict[str, Member] = {}
        self._owners: dict[bytes, list[str | None]] = {}
        self._revoking: dict[tuple[bytes, int], float] = {}
        self._targets: dict[tuple[str, ...], list[str]] = {}
        self._dirty = False

    # --- membership -------------------------------------------------------------------

    def renew(self, worker: str, columns: Iterable[bytes], lease: float, now: float,
              held: Buckets, index: int) -> Member:
        """Join or renew ``worker``; a new member's claims (``held``, ``index``) of free
        buckets and a free index are granted."""
        cols = frozenset(columns)
        member = self.members.get(worker)
        if member is None:
            used = {m.index for m in self.members.values()}
            if not 0 <= index < MAX_INDEX or index in used:
                index = next(i for i in range(MAX_INDEX + 1) if i not in used)
            member = self.members[worker] = Member(worker, cols, now + lease, index,
                                                   _weights(worker), now)
            for column, buckets in held.items():
                if column in cols:
                    owners = self._owners_of(column)
                    for b in buckets:
                        if owners[b] is None:
                            owners[b] = worker
            self._dirty = True
        else:
            member.expires = now + lease
            if member.columns != cols:
                self._drop_columns(member, member.columns - cols)
                member.columns = cols
                self._dirty = True
        return member

    def leave(self, worker: str) -> None:
        member = self.members.pop(worker, None)
        if member is not None:
            self._drop_columns(member, member.columns)
            self._dirty = True

    def expire(self, now: float) -> list[str]:
        gone = [w for w, m in self.members.items() if m.expires < now]
        for worker in gone:
            self.leave(worker)
        return gone

    def _drop_columns(self, member: Member, columns: Iterable[bytes]) -> None:
        for column in columns:
            owners = self._owners.get(column)
            if owners is None:
                continue
            for b, owner in enumerate(owners):
                if owner == member.worker:
                    owners[b] = None
                    self._revoking.pop((column, b), None)

    def release(self, worker: str, released: Buckets) -> None:
        """``worker`` no longer holds these buckets (revoked, or dropped)."""
        for column, buckets in released.items():
            owners = self._owners.get(column)
            if owners is None:
                continue
            for b in buckets:
                if owners[b] == worker:
                    owners[b] = None
                    self._revoking.pop((column, b), None)
                    self._dirty = True

    # --- balance ----------------------------------------------------------------------

    def _owners_of(self, column: bytes) -> list[str | None]:
        owners = self._owners.get(column)
        if owners is None:
            owners = self._owners[column] = [None] * BUCKETS
        return owners

    def _target(self, observing: list[Member]) -> list[str]:
        key = tuple(m.worker for m in observing)
        found = self._targets.get(key)
        if found is None:
            if len(self._targets) > 64:
                self._targets.clear()
            share = -(-BUCKETS // len(observing))
            load = {m.worker: 0 for m in observing}
            found = []
            for b in range(BUCKETS):
                owner = max((m for m in observing if load[m.worker] < share),
                            key=lambda m: (m.weights[b], m.worker)).worker
                load[owner] += 1
                found.append(owner)
            self._targets[key] = found
        return found

    def rebalance(self, now: float, wake: Callable[[str], None]) -> None:
        """Grant free buckets to their targets, revoke the misplaced ones; wake every member
        whose buckets changed."""
        if not self._dirty and not self._revoking and not self.holding:
            return
        self._dirty = False
        self.holding = {}
        columns = {c for m in self.members.values() for c in m.columns} | set(self._owners)
        changed: set[str] = set()
        for column in columns:
            observing = sorted((m for m in self.members.values() if column in m.columns),
                               key=lambda m: m.worker)
            owners = self._owners_of(column)
            if not observing:
                continue
            until = self._held_until(observing, owners, now)
            if until is not None:
                self.holding[column] = until
                continue
            if self.quiet > 0 and all(owner is None for owner in owners):
                _log.info("first assignment of column %r: %d workers, %.2f s after the first"
                          " joined", column, len(observing),
                          now - min(m.joined for m in observing))
            target = self._target(observing)
            for b in range(BUCKETS):
                current, wanted = owners[b], target[b]
                if current == wanted:
                    self._revoking.pop((column, b), None)
                elif current is None:
                    owners[b] = wanted
                    changed.add(wanted)
                else:
                    since = self._revoking.get((column, b))
                    if since is None:
                        self._revoking[(column, b)] = now
                        changed.add(current)
                    elif now - since > self.handover:
                        owners[b] = wanted
                        del self._revoking[(column, b)]
                        changed.update((current, wanted))
        for worker in changed:
            wake(worker)

    def _held_until(self, observing: list[Member], owners: list[str | None], now: float
                    ) -> float | None:
        """Until when a column's first assignment waits (None: not held, or no longer)."""
        if self.quiet <= 0 or any(owner is not None for owner in owners):
            return None
        until = min(max(m.joined for m in observing) + self.quiet,
                    min(m.joined for m in observing) + self.most)
        return until if now < until else None

    def hold_left(self, now: float) -> float | None:
        """Seconds until the next held first assignment may be granted (None: none held)."""
        if not self.holding:
            return None
        return max(0.0, min(self.holding.values()) - now)

    # --- queries ----------------------------------------------------------------------

    def owner(self, column: bytes, bucket: int) -> str | None:
        owners = self._owners.get(column)
        return None if owners is None else owners[bucket]

    def owned(self, worker: str) -> tuple[Buckets, Buckets]:
        """(buckets ``worker`` owns, those of them it is asked to release), per column."""
        member = self.members.get(worker)
        owned: Buckets = {}
        revoking: Buckets = {}
        if member is None:
            return owned, revoking
        for column in member.columns:
            owners = self._owners.get(column)
            if owners is None:
                continue
            mine = frozenset(b for b, w in enumerate(owners) if w == worker)
            if mine:
                owned[column] = mine
                going = frozenset(b for b in mine if (column, b) in self._revoking)
                if going:
                    revoking[column] = going
        return owned, revoking

    def observers_of(self, column: bytes) -> tuple[str, ...]:
        return tuple(sorted(w for w, m in self.members.items() if column in m.columns))

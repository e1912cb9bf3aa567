"""ClientLeases: what each remote client of a node holds of the GC safe point.

A remote client's running transactions are in its own process, so the node learns of
them from two things (docs/protocol.md, "Garbage collection"): every timestamp handed
to the client is **pinned** until a report of the client covers it, and each
**report** (``report_snapshots``) holds the oldest start_ts it names for one lease.
This module keeps both, per client, and three rules about them:

* **Whose**: a lease is keyed by the caller's principal and the batch's ``client_id``
  (:func:`client_key`): on a node with tokens a caller reports for its own clients
  only, so one that learnt another's id cannot release that client's hold.  On a node
  without tokens every caller is the same principal, and the id alone tells clients
  apart.
* **In order**: each report carries a sequence number its client takes when it reads
  what it holds (``ActiveSnapshots.report``); a report numbered at or below the last
  one applied for the client is ignored.  Without it a late report (reordered, sent
  again) could name an older state -- no transactions, say -- after a newer one had
  released the pins of a transaction begun since, and release that transaction too.
* **Across a restart**: each client holding anything has a **floor** persisted in the
  ``_gc`` table, at or below everything it holds and will hold until the floor is
  rewritten: written (fsync) when a client first holds anything -- before the
  timestamp that makes it hold is handed out -- and lowered (fsync) before a report
  naming an older start_ts holds (one that outlived its lease: the pass raised the
  floor past it, or deleted the row); rewritten by each GC pass where the client's
  oldest hold moved, and deleted by the pass once the client holds nothing (as PD
  keeps each service's GC safe point in etcd, under a TTL).  While a pass writes,
  the rows it rewrites count at the higher of their old and new floors (those it
  deletes as none), and a failed write leaves them so, to be written again: the
  floor is never taken as lower than the store may hold.  A node
  that opens the store holds the safe point at every persisted floor until the
  client reports again with a timestamp of this process, or one lease after the open
  (leases run on the monotonic clock, which starts again at a restart: so a lease
  from the open, not from the old expiry).  A fresh store has none, and holds nothing.

* **How many**: one principal holds leases for at most :data:`MAX_CLIENTS_PER_PRINCIPAL`
  clients at once (:meth:`ClientLeases.full`); a new client beyond it is refused before
  anything is written.  Each client is a persisted row (an fsync to write) and memory
  until its lease passes, and a caller that made up a new ``client_id`` per call
  added both without end.  On a node without tokens the bound is the node's.

Not thread-safe: ``SafePoint`` calls it under its lock, and orders the persisted rows'
writes (``percolator._safe_point``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["MAX_CLIENTS_PER_PRINCIPAL", "ClientLeases", "client_key", "principal_of"]

MAX_CLIENTS_PER_PRINCIPAL = 10_000
"""Clients one principal may hold leases for at once (a client is a process: one
``client_id`` per ``Client``; those of a process that ended count until their lease
passes)."""


def client_key(caller: bytes, client_id: bytes) -> bytes:
    """The key of a client's lease: its caller's principal (``bigtable_lite.auth.caller_of``,
    ``b""`` on a node without tokens) and its ``client_id``; ``b""`` (anonymous, no lease)
    for an empty ``client_id``."""
    if not client_id:
        return b""
    return bytes((len(caller),)) + caller + client_id


def principal_of(client: bytes) -> bytes:
    """The principal of a :func:`client_key` (``b""`` for the anonymous key)."""
    return client[1:1 + client[0]] if client else b""


@dataclass(slots=True)
class _Client:
    """What one remote client holds: its last report, the timestamps handed to it since
    (ascending, each with its own expiry), and its persisted floor."""

    reported: int | None = None
    reported_until_ms: int = 0
    pins: deque[tuple[int, int]] = field(default_factory=deque)  # (ts, expires_ms)
    seq: int = 0  # of the last report applied
    # The persisted floor: a row is stored, at or below it (None: perhaps no row).
    row: int | None = None
    unsure: bool = False  # the stored row may differ from ``row`` (a write in flight or failed)
    restored: int | None = None  # the floor persisted before the store was opened
    restored_until_ms: int = 0

    def holds(self, now_ms: int, at_least: int) -> tuple[int | None, int | None]:
        """(the oldest timestamp held by its reports and pins, by its restored floor), now,
        ``at_least`` at least.

        A pin below ``at_least`` (the safe point) holds nothing: its snapshot is refused
        already.  A report below it is taken as ``at_least``: it is the minimum of the
        client's transactions, and one of them may be a stale transaction the client
        still keeps; until its next report, which names only what is at or above the
        safe point it learned from this one's answer, the others may be anywhere above.
        """
        pins = self.pins
        while pins and (pins[0][1] <= now_ms or pins[0][0] < at_least):
            pins.popleft()
        found = pins[0][0] if pins else None
        reported = self.reported
        if reported is not None and self.reported_until_ms > now_ms:
            reported = max(reported, at_least)
            found = reported if found is None else min(found, reported)
        restored = self.restored
        if restored is not None and self.restored_until_ms <= now_ms:
            restored = self.restored = None
        return found, None if restored is None else max(restored, at_least)

    def expired(self, now_ms: int) -> bool:
        """Nothing of it is left to remember (its last report's lease passed too)."""
        return (not self.pins and self.restored is None
                and self.reported_until_ms <= now_ms)


class ClientLeases:
    """The remote clients' leases of one safe point; their persisted floors."""

    def __init__(self, lease_ms: int, persisted: Mapping[bytes, int], now_ms: int,
                 first_ts: int) -> None:
        """``persisted``: the floors found in the store (key -> floor), held until a
        lease from ``now_ms``; ``first_ts``: the first timestamp this process hands out
        (a report that saw it was read after the open)."""
        self.lease_ms = lease_ms
        self._first_ts = first_ts
        self._clients: dict[bytes, _Client] = {}
        self._per_principal: dict[bytes, int] = {}  # clients of each principal
        for key, floor in persisted.items():
            self._add(key, _Client(row=floor, restored=floor,
                                   restored_until_ms=now_ms + lease_ms))

    def __len__(self) -> int:
        return len(self._clients)

    def _add(self, key: bytes, entry: _Client) -> _Client:
        self._clients[key] = entry
        principal = principal_of(key)
        self._per_principal[principal] = self._per_principal.get(principal, 0) + 1
        return entry

    def _forget(self, key: bytes) -> None:
        del self._clients[key]
        principal = principal_of(key)
        left = self._per_principal[principal] - 1
        if left:
            self._per_principal[principal] = left
        else:
            del self._per_principal[principal]

    def full(self, client: bytes) -> bool:
        """Whether ``client`` is new and its principal already holds leases for
        :data:`MAX_CLIENTS_PER_PRINCIPAL` clients."""
        return client not in self._clients and self._per_principal.get(
            principal_of(client), 0) >= MAX_CLIENTS_PER_PRINCIPAL

    def row(self, client: bytes) -> int | None:
        """``client``'s persisted floor: a row is stored at or below it; None if there may
        be none (one is written before the client holds anything)."""
        entry = self._clients.get(client)
        return None if entry is None else entry.row

    def registered(self, client: bytes, floor: int) -> None:
        """``client``'s floor ``floor`` is persisted."""
        entry = self._clients.get(client)
        if entry is None:
            entry = self._add(client, _Client())
        entry.row = floor
        entry.unsure = False

    def pin(self, client: bytes, ts: int, now_ms: int) -> None:
        """``ts`` was handed to ``client`` (which has a row): held until a report covers it,
        or a lease passes."""
        self._clients[client].pins.append((ts, now_ms + self.lease_ms))

    def report(self, client: bytes, seq: int, oldest: int | None, seen: int, now_ms: int
               ) -> bool:
        """Apply ``client``'s report number ``seq``: its ``oldest`` start_ts (None: none),
        which accounts for every timestamp it was handed up to ``seen``, held for a
        lease.  False (and nothing changed) if a report numbered ``seq`` or later was
        applied already."""
        entry = self._clients.get(client)
        if entry is None:
            if oldest is None:
                return True  # holds nothing, and held nothing here
            entry = self._add(client, _Client())
        if seq <= entry.seq:
            return False
        entry.seq = seq
        pins = entry.pins
        while pins and pins[0][0] <= seen:
            pins.popleft()
        entry.reported = oldest
        entry.reported_until_ms = now_ms + self.lease_ms
        if seen >= self._first_ts:  # read after the open: it names every older transaction
            entry.restored = None
        return True

    def oldest(self, now_ms: int, at_least: int = 0) -> tuple[int | None, int | None]:
        """The oldest timestamp, ``at_least`` at least, held (by reports and pins, by the
        floors persisted before the open)."""
        live: int | None = None
        restored: int | None = None
        for entry in self._clients.values():
            mine, theirs = entry.holds(now_ms, at_least)
            if mine is not None and (live is None or mine < live):
                live = mine
            if theirs is not None and (restored is None or theirs < restored):
                restored = theirs
        return live, restored

    def settle(self, now_ms: int, at_least: int) -> tuple[dict[bytes, int], list[bytes]]:
        """The floors to persist now (each client's oldest hold where its row differs)
        and the rows to delete (clients holding nothing).  Until :meth:`settled`, each
        such row counts at the higher of its old and new floor (a deleted one as none):
        the write may land or fail.  The caller writes them before a client whose row
        is deleted here is handed anything again (``SafePoint``)."""
        puts: dict[bytes, int] = {}
        deletes: list[bytes] = []
        for key, entry in self._clients.items():
            mine, theirs = entry.holds(now_ms, at_least)
            floor = theirs if mine is None else mine if theirs is None else min(mine, theirs)
            if floor is not None:
                if floor != entry.row or entry.unsure:
                    puts[key] = floor
                    entry.row = None if entry.row is None else max(entry.row, floor)
                    entry.unsure = True
            elif entry.row is not None or entry.unsure:
                deletes.append(key)
                entry.row = None
                entry.unsure = True
        return puts, deletes

    def settled(self, puts: Mapping[bytes, int], deletes: Iterable[bytes], now_ms: int
                ) -> None:
        """The rows of :meth:`settle` are written: take their floors as persisted, and
        forget the clients whose leases have all passed (``now_ms``: settle's)."""
        clients = self._clients
        for key, floor in puts.items():
            entry = clients[key]
            entry.row, entry.unsure = floor, False
        for key in deletes:
            clients[key].unsure = False
        for key, entry in list(clients.items()):
            if entry.row is None and not entry.unsure and entry.expired(now_ms):
                self._forget(key)  # its lease passed: forgotten

"""Kept outcomes: what the Transactions service remembers of finished transactions, for
calls retried after a lost reply.

A caller whose Commit reply was lost sends the same Commit again; while the transaction's
outcome is kept, the retry gets the first answer (the same commit_ts, the same conflict).
Kept outcomes are bounded in time and in count, so that a caller finishing
transactions fast (or on purpose: a Begin and a Rollback need only a ``read`` token)
cannot grow the node's memory without bound:

* each is kept ``retain_ms`` after its transaction ended, no longer;
* at most ``max_kept`` in all, and ``max_kept_per_caller`` of one caller (a token; the
  one caller ``b""`` of a node without tokens has the node's bound only), so a caller's
  churn forgets its own outcomes before anyone else's;
* past a bound, the oldest (first finished) goes first.

Nothing is answered wrong for a forgotten outcome: the sessions answer a Commit of a
transaction they no longer hold from the data (``Sessions._commit_unknown``: its fate
decided through its primary, so the answer is the outcome it had), every other call
NOT_FOUND.  Time and count forget the same way.

Why an ordered dict: every transaction ends ``retain_ms`` before it is forgotten, so the
order they ended in is the order they expire in, and the oldest is the first entry
(``OrderedDict`` finds and pops it in O(1); a plain dict's first entry costs a scan over
the slots emptied before it).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["DEFAULT_MAX_KEPT", "DEFAULT_MAX_KEPT_PER_CALLER", "DEFAULT_RETAIN_MS", "Outcomes"]

DEFAULT_RETAIN_MS = 60_000
DEFAULT_MAX_KEPT = 10_000
"""Outcomes a node keeps: each a few hundred bytes (an aborted one also its conflict's
cell, up to the store's 8 KiB of row and column, and a message naming it)."""
DEFAULT_MAX_KEPT_PER_CALLER = 1_000

T = TypeVar("T")


class Outcomes(Generic[T]):
    """Outcomes by transaction id, bounded as the module says.  Not thread-safe: the
    sessions' lock guards it."""

    def __init__(self, *, retain_ms: int = DEFAULT_RETAIN_MS, max_kept: int = DEFAULT_MAX_KEPT,
                 max_kept_per_caller: int = DEFAULT_MAX_KEPT_PER_CALLER) -> None:
        if max_kept < 1 or max_kept_per_caller < 1:
            raise ValueError("max_kept and max_kept_per_caller must be at least 1")
        self.retain_ms = retain_ms
        self.max_kept = max_kept
        self.max_kept_per_caller = max_kept_per_caller
        # txn_id -> (forgotten at, in ms; caller; outcome), in the order they ended
        self._kept: OrderedDict[int, tuple[int, bytes, T]] = OrderedDict()
        self._by_caller: dict[bytes, OrderedDict[int, None]] = {}  # the same, per caller
        self.evicted = 0
        """Outcomes forgotten before ``retain_ms`` by a bound on their count."""

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, txn_id: int) -> T | None:
        kept = self._kept.get(txn_id)
        return None if kept is None else kept[2]

    def keep(self, txn_id: int, caller: bytes, outcome: T, now_ms: int) -> None:
        """Keep ``outcome`` of ``caller``'s transaction ``txn_id``, which ended now; the
        oldest go if that is one too many."""
        self._kept[txn_id] = (now_ms + self.retain_ms, caller, outcome)
        mine = self._by_caller.setdefault(caller, OrderedDict())
        mine[txn_id] = None
        if caller and len(mine) > self.max_kept_per_caller:
            self._forget(next(iter(mine)))
            self.evicted += 1
        if len(self._kept) > self.max_kept:
            self._forget(next(iter(self._kept)))
            self.evicted += 1

    def forget_expired(self, now_ms: int) -> int:
        """Forget the outcomes kept ``retain_ms``; how many went."""
        gone = 0
        while self._kept:
            txn_id, (until, _, _) = next(iter(self._kept.items()))
            if until > now_ms:
                break
            self._forget(txn_id)
            gone += 1
        return gone

    def _forget(self, txn_id: int) -> None:
        _, caller, _ = self._kept.pop(txn_id)
        mine = self._by_caller[caller]
        del mine[txn_id]
        if not mine:
            del self._by_caller[caller]

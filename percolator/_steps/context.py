"""StepContext: what every protocol step needs of the place it runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bigtable_lite import Limits, MutationResult, RowMutation, TabletStore

from ..clock import Clock
from ..oracle import Oracle
from .check_txn_status import StatusCache
from .notify import NotifyLog, ObservedColumns
from .one_phase import CommitLatches


class StepStore(TabletStore, Protocol):
    """The store where the data is: a ``LocalStore`` or its unchecked view."""

    def mutate_guarded(self, mutations: Sequence[RowMutation], *, sync: bool = False
                       ) -> list[MutationResult]:
        """mutate_rows, but the rows after the first apply only if the first applied."""
        ...

    def mutate_atomic(self, mutations: Sequence[RowMutation],
                      finish: Callable[[], Sequence[RowMutation]] | None = None, *,
                      sync: bool = False) -> list[MutationResult]:
        """All rows or none; ``finish()`` under the rows' locks once their conditions hold."""
        ...


@dataclass(slots=True)
class StepContext:
    # The data, already validated at the entry (requests are well-formed by construction).
    store: StepStore
    oracle: Oracle
    # Judges lock expiry: a lock's TTL becomes an expiry on this clock when it is written.
    clock: Clock
    limits: Limits
    statuses: StatusCache
    observed: ObservedColumns
    latches: CommitLatches
    # Positions of notification-log writes and who hears of them (observers' feed).
    log: NotifyLog

"""Registry: observers and the columns they observe, at most one observer per column.

An observer is user code that runs in a transaction whenever a committed transaction
changed the cell (row, column) it observes (Percolator 2.4).  Write one as a function::

    @observer("paper:refs")
    def on_refs(txn, row, column): ...

or as a class with lifecycle hooks::

    class CountRefs(Observer):
        column = b"paper:refs"
        def setup(self, client): ...          # worker start
        def process(self, txn, row, column): ...
        def close(self): ...                  # worker stop

One column, one observer: with two, a notification could be acknowledged by either
and the other would silently miss changes, so a second registration is refused.

An observer with ``max_batch > 1`` handles up to that many pending cells of its column
in one transaction (:meth:`Observer.process_batch`), when a backlog builds up: it can
share reads and writes between them (the citation counts sum every batch's deltas per
target).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from percolator.layout import SYSTEM_PREFIX

from .errors import ConfigurationError

if TYPE_CHECKING:
    from percolator import Client, Transaction

ObserverFn = Callable[["Transaction", bytes, bytes], None]


class Placement(Protocol):
    """Where a worker stands among its peers (``Observer.attach``): which cells are its
    own now, and its small member index (unique among live workers)."""

    member_index: int

    def owns(self, row: bytes, column: bytes) -> bool:
        """Whether the notifications of (row, column) go to this worker now."""
        ...

MAX_BATCH_LIMIT = 100_000
"""Upper bound of ``Observer.max_batch`` (a transaction of more cells is a mistake)."""


def as_column(column: bytes | str) -> bytes:
    """An observed column as bytes (str is UTF-8 encoded); raises ConfigurationError if unusable."""
    if isinstance(column, str):
        column = column.encode("utf-8")
    if not isinstance(column, bytes):
        raise ConfigurationError(f"observed column must be bytes or str, not"
                                 f" {type(column).__name__}")
    if not column:
        raise ConfigurationError("observed column must not be empty")
    if column.startswith(SYSTEM_PREFIX):
        raise ConfigurationError("columns starting with 0x00 are reserved for the system")
    return column


class Observer:
    """Base of observers: subclass it and override :meth:`process`.

    ``column`` (a class attribute or the constructor argument) is the observed
    column.  A worker calls :meth:`setup` before its first notification and
    :meth:`close` after its last; :meth:`process` may run on several threads at once
    (for different cells), so keep shared state thread-safe.
    """

    column: bytes | str = b""
    max_batch: int = 1
    """Most cells of the column one transaction may handle, via :meth:`process_batch`."""
    partition_prefix: bytes = b""
    """Rows starting with it go to the worker that has the same row without it: the
    citations' fold row of paper *t* (``0x00 "cq/" t``) runs where *t* runs."""
    batch_group: str = ""
    """Observers with the same non-empty group never run batches at once in one worker
    (as batches of one column never do): the citations' refs and fold observers write
    the same counters, so their batches would collide.  Empty: the column alone."""
    gather: float = 0.0
    """Seconds this observer's queued cells may wait while other columns of its batch
    group have cells queued (a backlog), so that they run in fewer, larger batches; they
    go at once when ``max_batch`` of them are queued or nothing else of the group is.
    0: never wait.  The citations' fold gathers the counter mail of many refs batches,
    so a counter is written once for all of them."""

    def __init__(self, column: bytes | str | None = None, *, name: str | None = None,
                 max_batch: int | None = None) -> None:
        if column is not None:
            self.column = column
        if max_batch is not None:
            self.max_batch = max_batch
        self.column = as_column(self.column)
        self.name = name or type(self).__qualname__
        if type(self.max_batch) is not int or not 1 <= self.max_batch <= MAX_BATCH_LIMIT:
            raise ConfigurationError(f"{self.name}: max_batch must be an int in"
                                     f" [1, {MAX_BATCH_LIMIT}], not {self.max_batch!r}")
        if (isinstance(self.gather, bool) or not isinstance(self.gather, (int, float))
                or not 0 <= self.gather < float("inf")):
            raise ConfigurationError(f"{self.name}: gather must be a finite number of"
                                     f" seconds >= 0, not {self.gather!r}")

    def setup(self, client: Client) -> None:
        """Called once when a worker starts, before any :meth:`process`."""

    def attach(self, placement: Placement) -> None:
        """Called when a worker starts, after :meth:`setup`: where it stands among its
        peers, for observers whose writes depend on it (the default ignores it)."""

    def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
        """React to a change of (row, column); everything done through ``txn`` commits atomically
        with the acknowledgement of the change."""
        raise NotImplementedError(f"{type(self).__name__} must override process()")

    def process_batch(self, txn: Transaction, rows: Sequence[bytes], column: bytes) -> None:
        """React to changes of several cells of ``column`` in one transaction (distinct rows).

        The worker calls it with up to :attr:`max_batch` rows when more than one is
        pending, one batch of a column at a time; each cell's acknowledgement commits
        with ``txn``, so effects stay exactly-once per cell.  Override it to share reads
        and writes between the cells (the default runs :meth:`process` for each in
        turn).  If it raises, the worker runs the cells one transaction each (and parks
        the failing one); if the commit lost a conflict, it retries them in halves.
        """
        for row in rows:
            self.process(txn, row, column)

    def committed(self, row: bytes, column: bytes, commit_ts: int) -> None:
        """Called after the observer's transaction for (row, column) committed (metrics, tests)."""

    def close(self) -> None:
        """Called once when the worker stops, after its last :meth:`process`."""

    def __repr__(self) -> str:
        return f"<observer {self.name} on {self.column!r}>"


class FunctionObserver(Observer):
    """An observer made of one function by :func:`observer`; still callable as the function."""

    def __init__(self, fn: ObserverFn, column: bytes | str, *, name: str | None = None) -> None:
        super().__init__(column, name=name or getattr(fn, "__qualname__", repr(fn)))
        self.fn = fn

    def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
        self.fn(txn, row, column)

    def __call__(self, txn: Transaction, row: bytes, column: bytes) -> None:
        self.fn(txn, row, column)


def observer(column: bytes | str, *, name: str | None = None
             ) -> Callable[[ObserverFn], FunctionObserver]:
    """Decorator: make ``fn(txn, row, column)`` the observer of ``column``."""
    col = as_column(column)

    def wrap(fn: ObserverFn) -> FunctionObserver:
        if not callable(fn):
            raise ConfigurationError(f"@observer needs a function, not {type(fn).__name__}")
        return FunctionObserver(fn, col, name=name)

    return wrap


class ObserverRegistry:
    """Column -> observer.  Registering a second, different observer on a column raises
    ConfigurationError naming both; registering the same object again is a no-op."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._by_column: dict[bytes, Observer] = {}
        for obs in observers:
            self.add(obs)

    def add(self, obs: Observer) -> None:
        if not isinstance(obs, Observer):
            raise ConfigurationError(f"not an observer: {obs!r} (use @observer or subclass"
                                     " observers.Observer)")
        column = as_column(obs.column)
        existing = self._by_column.get(column)
        if existing is obs:
            return
        if existing is not None:
            raise ConfigurationError(
                f"two observers registered on column {column!r}: {existing.name} and"
                f" {obs.name}; a column has at most one observer")
        self._by_column[column] = obs

    def get(self, column: bytes) -> Observer | None:
        return self._by_column.get(column)

    @property
    def columns(self) -> frozenset[bytes]:
        return frozenset(self._by_column)

    def __iter__(self) -> Iterator[Observer]:
        return iter(self._by_column.values())

    def __len__(self) -> int:
        return len(self._by_column)

    def __contains__(self, column: object) -> bool:
        return column in self._by_column

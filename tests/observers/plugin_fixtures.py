"""Observers in the shapes a plugin spec may name (see observers._plugins)."""

from __future__ import annotations

from observers import Observer, observer
from percolator import Transaction


@observer("plug:one")
def one(txn: Transaction, row: bytes, column: bytes) -> None:
    txn.set(row, b"plug:seen", b"one")


@observer("plug:two")
def two(txn: Transaction, row: bytes, column: bytes) -> None:
    txn.set(row, b"plug:seen", b"two")


@observer("plug:one")
def one_again(txn: Transaction, row: bytes, column: bytes) -> None:
    """A second observer of plug:one: loading it beside ``one`` is a configuration error."""


class Three(Observer):
    column = "plug:three"

    def process(self, txn: Transaction, row: bytes, column: bytes) -> None:
        txn.set(row, b"plug:seen", b"three")


LIST = [one, two]


def factory() -> list[Observer]:
    return [Three()]


NOT_AN_OBSERVER = 42


def small_batch_citations() -> list[Observer]:
    """The citation observers with at most 8 papers per transaction: a worker that makes
    many small commits, for crash tests that must catch it mid-work."""
    from observers.citations import make_observers

    return make_observers(batch=8)


@observer("plug:fragile")
def fragile(txn: Transaction, row: bytes, column: bytes) -> None:
    """Fails on row ``bad``: its notification ends parked."""
    if row == b"bad":
        raise ValueError("cannot handle bad")
    txn.set(row, b"plug:seen", b"fragile")

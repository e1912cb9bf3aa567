"""Remote clients' GC leases belong to their caller's principal, a bounded number each.

On a node with tokens, a caller cannot move the lease of another caller's client, even
knowing its client_id; the client's own principal can.

Each remote client holding anything is a persisted lease row (written with an fsync)
and memory until its lease passes; a caller that made up a new ``client_id`` per call
grew both without end.  Beyond ``MAX_CLIENTS_PER_PRINCIPAL`` a new client of the
principal is refused ``TooManyClients`` (RESOURCE_EXHAUSTED, named), before anything
is written; other principals are not held up; once a client's lease passed and a pass
forgot it, its principal may add one again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bigtable_lite import MAX_TS
from bigtable_lite.auth import Role, TokenTable
from bigtable_lite.server import ServerPolicy
from percolator import Client, SnapshotTooOld
from percolator import _leases as leases_module
from percolator._gc_table import read_leases
from percolator._leases import ClientLeases, client_key, principal_of
from percolator._node_client import NodeClient
from percolator._node_codec import CLIENT_ID_TAG
from percolator._snapshots import SnapshotReport
from percolator._transport.framing import field
from percolator.clock import FakeClock
from percolator.errors import TooManyClients
from percolator.node import Node

TOKENS = {"alice": "alice-token-0123456789abcdef", "mallory": "mallory-token-0123456789ab"}
LEASE = 30.0
CAP = 2
KEY = (b"row", b"v")


def must_read(value: bytes | None, expected: bytes) -> None:
    assert value == expected, value


@pytest.fixture
def capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases_module, "MAX_CLIENTS_PER_PRINCIPAL", CAP)


# --- whose ----------------------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    policy = ServerPolicy(tokens=TokenTable({t: Role.WRITE for t in TOKENS.values()}))
    with Node(tmp_path / "data", "127.0.0.1:0", policy=policy, gc_life_time=0.0,
              gc_interval=None) as served:
        yield served


def _posing_as(node: Node, who: str, client_id: bytes, transport: str) -> NodeClient:
    """A client of ``who``'s token whose batches carry ``client_id`` (another's)."""
    impostor = NodeClient(node.address, token=TOKENS[who], transport=transport)  # type: ignore[arg-type]
    impostor._reporter.close()
    impostor.client_id = client_id
    impostor._client_field = field(CLIENT_ID_TAG, client_id)
    return impostor


@pytest.mark.parametrize("transport", ["grpc", "native"])
def test_another_principal_cannot_release_a_clients_lease(node: Node, transport: str
                                                          ) -> None:
    """Mallory, knowing alice's client_id, reports for it "nothing running, everything
    seen": alice's reader stays held.  The same report with alice's token releases it
    (so the report is a real threat, and only the principal stops it)."""
    with Client.connect(node.address, token=TOKENS["alice"]) as alice:
        backend = alice.backend
        assert isinstance(backend, NodeClient)
        backend._reporter.close()  # alice's reader is held by its pins alone
        with alice.transaction() as t:
            t.set(*KEY, b"old")
        reader = alice.begin()
        must_read(reader.get(*KEY), b"old")
        with alice.transaction() as t:
            t.set(*KEY, b"new")
        release = SnapshotReport(None, MAX_TS, 1 << 40)
        mallory = _posing_as(node, "mallory", backend.client_id, transport)
        try:
            mallory.report_snapshots(release)
        finally:
            mallory.close()
        assert node.backend.collect_garbage().safe_point <= reader.start_ts
        must_read(reader.get(*KEY), b"old")
        own = _posing_as(node, "alice", backend.client_id, transport)
        try:
            own.report_snapshots(replace(release, seq=release.seq + 1))
        finally:
            own.close()
        assert node.backend.collect_garbage().safe_point > reader.start_ts
        with pytest.raises(SnapshotTooOld):
            reader.get(*KEY)


# --- how many: the book ----------------------------------------------------------------


def test_the_book_counts_clients_per_principal_restored_ones_too(capped: None) -> None:
    restored = client_key(b"alice", b"old")
    book = ClientLeases(int(LEASE * 1000), {restored: 5}, now_ms=0, first_ts=10)
    assert principal_of(restored) == b"alice"
    first = client_key(b"alice", b"c1")
    assert not book.full(first)
    book.registered(first, 10)
    assert book.full(client_key(b"alice", b"c2")), "the restored floor counts"
    assert not book.full(first), "a client it holds already is never refused"
    assert not book.full(client_key(b"bob", b"c2")), "another principal's own bound"
    # The restored lease passes, a pass deletes its row and forgets it: room again.
    later = int(LEASE * 1000) + 1
    puts, deletes = book.settle(later, 0)
    assert restored in deletes
    book.settled(puts, deletes, later)
    assert not book.full(client_key(b"alice", b"c2"))


def test_the_anonymous_key_has_the_empty_principal() -> None:
    assert principal_of(client_key(b"alice", b"")) == b""


# --- over the wire ----------------------------------------------------------------------


@pytest.fixture
def capped_node(tmp_path: Path, capped: None) -> Iterator[tuple[Node, FakeClock]]:
    clock = FakeClock()
    policy = ServerPolicy(tokens=TokenTable({t: Role.WRITE for t in TOKENS.values()}))
    with Node(tmp_path / "data", "127.0.0.1:0", policy=policy, clock=clock,
              gc_life_time=0.0, gc_interval=None, gc_client_lease=LEASE) as served:
        yield served, clock


def _client(node: Node, clock: FakeClock, who: str, transport: str) -> Client:
    return Client(NodeClient(node.address, token=TOKENS[who], transport=transport),  # type: ignore[arg-type]
                  clock=clock)


def _persisted(node: Node) -> dict[bytes, int]:
    return read_leases(node.backend.ctx.store)


@pytest.mark.parametrize("transport", ["grpc", "native"])
def test_a_principal_past_its_clients_is_refused_until_a_lease_passes(
        capped_node: tuple[Node, FakeClock], transport: str) -> None:
    served, clock = capped_node
    opened: list[Client] = []
    try:
        for _ in range(CAP):
            client = _client(served, clock, "alice", transport)
            opened.append(client)
            with client.transaction() as txn:
                txn.set(*KEY, b"x")
        rows = _persisted(served)
        assert len(rows) == CAP
        one_more = _client(served, clock, "alice", transport)
        opened.append(one_more)
        with pytest.raises(TooManyClients) as refused:
            one_more.begin().start_ts  # noqa: B018 -- takes a timestamp: holds the lease
        assert f"{CAP} clients" in str(refused.value)
        assert _persisted(served) == rows, "a refused client wrote a lease row"
        mallory = _client(served, clock, "mallory", transport)
        opened.append(mallory)
        with mallory.transaction() as txn:  # another principal: its own bound
            txn.get(*KEY)
        # The first client ends; its lease passes, and a pass forgets it: room again.
        opened.pop(0).close()
        clock.advance(LEASE + 1)
        served.backend.collect_garbage()
        with one_more.transaction() as txn:
            txn.set(*KEY, b"y")
    finally:
        for client in opened:
            client.close()

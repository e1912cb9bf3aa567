"""Combining counters: encodings, the in-flight and rate trackers, folds, and the invariant
counter + sum(slots) - folded = true count whatever path each update took."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from observers import Worker
from observers.citations import CITED_BY, make_observers
from observers.citations.combine import (
    FOLD,
    FOLDED,
    OWED,
    QUEUE_END,
    QUEUE_PREFIX,
    CombiningCounter,
    check_target,
    combine_row,
    decode_signed,
    encode_signed,
    slot_column,
    target_of,
    unfolded,
)
from observers.citations.contention import InFlight, RecentTargets
from observers.citations.mail import (
    DELTAS,
    decode_mail,
    encode_mail,
    is_mail_row,
    mail_rows,
)
from observers.citations.schema import decode_count
from percolator import Client
from percolator.notifications import BUCKETS, bucket_of

from .observer_fixtures import draw_seed, read


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_signed_cells_round_trip_and_reject_non_canonical() -> None:
    for n in (0, 1, -1, 42, -1000):
        assert decode_signed(encode_signed(n)) == n
    assert decode_signed(None) == 0
    for bad in (b"", b"-0", b"+1", b"01", b"1.0", b" 1", b"x"):
        with pytest.raises(ValueError):
            decode_signed(bad)


def test_rows_and_slots() -> None:
    assert combine_row(b"p1") == QUEUE_PREFIX + b"p1"
    assert target_of(combine_row(b"p/1")) == b"p/1"
    assert QUEUE_PREFIX < combine_row(b"\xff" * 8) < QUEUE_END
    with pytest.raises(ValueError):
        target_of(b"p1")
    # crc32, not hash(): the same in every process; always within the slot count.
    assert slot_column(b"source", 16) == slot_column(b"source", 16)
    assert {slot_column(b"s%d" % i, 4) for i in range(200)} == {
        b"slot:00", b"slot:01", b"slot:02", b"slot:03"}
    with pytest.raises(ValueError, match="reserved"):
        check_target(b"\x00cq/x")


def test_in_flight_claims_release_and_expire() -> None:
    clock = FakeClock()
    flight = InFlight(4, max_age=2.0, clock=clock)
    assert flight.claim(b"w1", [b"a", b"b"]) == [False, False]
    assert flight.claim(b"w2", [b"b", b"c"]) == [True, False]
    flight.release(b"w1")
    assert flight.claim(b"w3", [b"a", b"b"]) == [False, True], "b is still w2's"
    # A retry under the same key replaces its earlier claim instead of seeing itself.
    assert flight.claim(b"w3", [b"a"]) == [False]
    # w2 aborted and never released: its claim expires.
    clock.now += 2.5
    assert flight.claim(b"w4", [b"c"]) == [False]
    assert len(flight) == 1


def test_in_flight_slots_are_distinct_and_not_reused_at_once() -> None:
    flight = InFlight(4, clock=FakeClock())
    for key in (b"w1", b"w2", b"w3"):
        flight.claim(key, [b"hot"])
    slots = [flight.slot(k) for k in (b"w1", b"w2", b"w3")]
    assert len(set(slots)) == 3, "running writers never share a slot"
    assert flight.slot(b"w2") == slots[1], "a writer keeps its slot"
    flight.release(b"w1")
    flight.claim(b"w4", [b"hot"])
    assert flight.slot(b"w4") not in slots, "the slot w1 just released comes last"


def test_recent_targets_window() -> None:
    clock = FakeClock()
    recent = RecentTargets(0.05, clock=clock)
    assert recent.touch_all([b"a"]) == [False]
    clock.now += 0.03
    assert recent.touch_all([b"a", b"b"]) == [True, False]
    clock.now += 0.06
    assert recent.touch_all([b"b"]) == [True], "the previous window still counts"
    clock.now += 0.2
    assert recent.touch_all([b"a", b"b"]) == [False, False]


def test_constructor_checks() -> None:
    for kwargs in ({"slots": 0}, {"slots": 257}, {"hot": -1}, {"burst": -0.1},
                   {"mail_min": 0}):
        with pytest.raises(ValueError):
            CombiningCounter(**kwargs)  # type: ignore[arg-type]
    naive = CombiningCounter(hot=None, burst=0.0, track=False)
    assert not naive.combining


def add(client: Client, counter: CombiningCounter, deltas: list[tuple[bytes, int]],
        source: bytes) -> None:
    client.run(lambda txn: counter.add_many(txn, deltas, source))
    counter.done(source)


def count(client: Client, target: bytes) -> int:
    return decode_count(read(client, [(target, CITED_BY)])[(target, CITED_BY)])


def test_fold_adds_unfolded_slots_once(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "d") as client:
        always = CombiningCounter(hot=0)
        for i in range(5):
            add(client, always, [(b"t", 1)], b"src%d" % i)
        add(client, always, [(b"t", -1)], b"src0")
        assert count(client, b"t") == 0, "combined deltas wait for the fold"
        with client.transaction() as txn:
            assert unfolded(txn) == {b"t": 4}
        assert client.run(lambda txn: always.fold(txn, combine_row(b"t"))) == 4
        assert client.run(lambda txn: always.fold(txn, combine_row(b"t"))) == 0, "idempotent"
        assert count(client, b"t") == 4
        cells = read(client, [(combine_row(b"t"), FOLDED)])
        assert decode_signed(cells[(combine_row(b"t"), FOLDED)]) == 4
        with client.transaction() as txn:
            assert unfolded(txn) == {}


def test_mail_rows_land_in_their_buckets_and_are_unique_per_sender() -> None:
    rows = mail_rows(QUEUE_PREFIX, 12345)
    assert [bucket_of(row, QUEUE_PREFIX) for row in rows] == list(range(BUCKETS))
    assert all(is_mail_row(QUEUE_PREFIX, r) and QUEUE_PREFIX < r < QUEUE_END for r in rows)
    assert not set(rows) & set(mail_rows(QUEUE_PREFIX, 12346)), "one sender, its own rows"
    assert not is_mail_row(QUEUE_PREFIX, combine_row(b"p1"))
    with pytest.raises(ValueError):
        mail_rows(QUEUE_PREFIX, 0)


def test_mail_round_trips_and_rejects_junk() -> None:
    deltas = {b"p1": 3, "\u00e9t\u00e9".encode(): -1}
    assert decode_mail(encode_mail(deltas)) == deltas
    for bad in (b"", b"[1]", b'{"p": 1.5}', b'{"p": true}', b'{"": 1}', b"\xff"):
        with pytest.raises(ValueError):
            decode_mail(bad)


class OwnsNothing:
    """A placement of a worker that owns no counter: every update is another's."""

    member_index = 0

    def owns(self, row: bytes, column: bytes) -> bool:
        return False


SAME = [t for t in (b"p%d" % i for i in range(5000)) if bucket_of(t) == 7][:3]
"""Three targets of one bucket (7): their updates share a mail."""
ALONE = next(t for t in (b"q%d" % i for i in range(100)) if bucket_of(t) != 7)
"""A target of another bucket."""


def add_shared_and_alone(client: Client, counter: CombiningCounter) -> bytes:
    """One transaction adds 2 to each of SAME and 1 to ALONE: the row of bucket 7's mail."""
    txn = client.begin()
    counter.add_many(txn, [(t, 2) for t in SAME] + [(ALONE, 1)], b"w")
    start_ts = txn.start_ts
    txn.commit()
    counter.done(b"w")
    return mail_rows(QUEUE_PREFIX, start_ts)[7]


def test_updates_of_other_workers_buckets_travel_as_one_mail_per_bucket(tmp_path: Path
                                                                        ) -> None:
    counter = CombiningCounter(hot=None, mail_min=2)
    counter.placement = OwnsNothing()
    same, alone = SAME, ALONE
    with Client.embedded(tmp_path / "d") as client:
        mail = add_shared_and_alone(client, counter)
        cells = read(client, [(mail, DELTAS)])
        assert decode_mail(cells[(mail, DELTAS)] or b"") == {t: 2 for t in same}
        with client.transaction() as txn:
            assert unfolded(txn) == {**{t: 2 for t in same}, alone: 1}
        folder = CombiningCounter()  # the owner's
        assert client.run(lambda txn: folder.fold_many(txn, [mail, combine_row(alone)])
                          ) == {mail: 6, combine_row(alone): 1}
        assert client.run(lambda txn: folder.fold_many(txn, [mail])) == {mail: 0}, \
            "a mail is applied once: the fold deletes it"
        assert [count(client, t) for t in (*same, alone)] == [2, 2, 2, 1]
        with client.transaction() as txn:
            assert unfolded(txn) == {}


def test_a_batchs_own_updates_that_share_a_bucket_go_by_mail_too(tmp_path: Path) -> None:
    counter = CombiningCounter(hot=None, mail_min=2)  # outside a worker: owns every counter
    same, alone = SAME, ALONE
    with Client.embedded(tmp_path / "d") as client:
        mail = add_shared_and_alone(client, counter)
        assert [count(client, t) for t in (*same, alone)] == [0, 0, 0, 1], \
            "the lone update is written directly, the bucket's three are mailed"
        with client.transaction() as txn:
            assert unfolded(txn) == {t: 2 for t in same}
        assert client.run(lambda txn: counter.fold_many(txn, [mail])) == {mail: 6}
        assert [count(client, t) for t in (*same, alone)] == [2, 2, 2, 1]


def test_direct_decrement_never_goes_below_zero(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "d") as client:
        add(client, CombiningCounter(hot=0), [(b"t", 1)], b"a")  # pending in a slot
        direct = CombiningCounter(hot=1000, track=False)
        add(client, direct, [(b"t", -1)], b"a")  # the counter alone (0) cannot absorb it
        assert count(client, b"t") == 0
        client.run(lambda txn: direct.fold(txn, combine_row(b"t")))
        assert count(client, b"t") == 0
        # The naive configuration too (a table switched from combining to naive).
        add(client, CombiningCounter(hot=0), [(b"t", 1)], b"b")
        add(client, CombiningCounter(hot=None, burst=0.0, track=False), [(b"t", -1)], b"b")
        client.run(lambda txn: direct.fold(txn, combine_row(b"t")))
        assert count(client, b"t") == 0


def test_a_decrement_folded_before_its_increment_is_owed_until_that_is_folded(
        tmp_path: Path) -> None:
    """An edit's -1 in the target's slot row is folded before the +1 it undoes, which is
    in a mail whose fold had a setback: the count stays at 0 and the -1 is owed, then
    taken by the mail's fold.  (It failed as "corrupt data": the worker parked the slot
    row after its retries, and the count stayed wrong until a replay.)"""
    with Client.embedded(tmp_path / "d") as client:
        mail = mail_rows(QUEUE_PREFIX, 12345)[0]
        with client.transaction() as txn:
            txn.set(mail, DELTAS, encode_mail({b"t": 1}))
            txn.set(combine_row(b"t"), slot_column(b"x", 16), b"-1")
        counter = CombiningCounter()
        assert client.run(lambda txn: counter.fold(txn, combine_row(b"t"))) == -1
        assert count(client, b"t") == 0
        with client.transaction() as txn:
            assert unfolded(txn) == {}, "the mail's +1 and the -1 owed: nothing in all"
        assert client.run(lambda txn: counter.fold_many(txn, [mail])) == {mail: 1}
        assert count(client, b"t") == 0
        assert read(client, [(combine_row(b"t"), OWED)]) == {(combine_row(b"t"), OWED): None}
        with client.transaction() as txn:
            assert unfolded(txn) == {}


def test_a_fold_below_zero_with_nothing_pending_stays_visible_as_unfolded(
        tmp_path: Path) -> None:
    """A slot nothing will make up for (damaged, or written behind the app's back): the
    count stays at 0, and the shortfall shows in ``unfolded`` (which verify reports)."""
    with Client.embedded(tmp_path / "d") as client:
        with client.transaction() as txn:
            txn.set(combine_row(b"t"), slot_column(b"x", 16), b"-3")
        counter = CombiningCounter()
        client.run(lambda txn: counter.fold(txn, combine_row(b"t")))
        assert count(client, b"t") == 0
        with client.transaction() as txn:
            assert unfolded(txn) == {b"t": -3}


@pytest.mark.parametrize("policy", ["always", "never", "threshold", "burst", "mail"])
def test_any_mix_of_paths_converges_to_the_true_count(tmp_path: Path, policy: str) -> None:
    """Random +-1 updates from many sources through one policy and then another: after the
    folds, every counter equals the sum of its updates."""
    rng = random.Random(draw_seed(f"combine {policy}"))
    kwargs = {"always": {"hot": 0}, "never": {"hot": None, "track": False},
              "threshold": {"hot": 3}, "burst": {"hot": None, "burst": 10.0},
              "mail": {"hot": 0, "mail_min": 1}}[policy]
    counter = CombiningCounter(**kwargs)  # type: ignore[arg-type]
    other = CombiningCounter(hot=0)
    truth: dict[bytes, int] = {}
    with Client.embedded(tmp_path / "d") as client:
        worker = Worker(client, make_observers(), threads=2)  # registers FOLD
        for i in range(60):
            src = b"s%d" % rng.randrange(10)
            deltas: dict[bytes, int] = {}
            for _ in range(rng.randrange(1, 5)):
                t = b"t%d" % rng.randrange(6)
                if t in deltas:
                    continue
                d = 1 if truth.get(t, 0) == 0 or rng.random() < 0.7 else -1
                deltas[t] = d
                truth[t] = truth.get(t, 0) + d
            add(client, counter if i % 3 else other, sorted(deltas.items()), src)
        worker.run_until_idle(timeout=60)
        got = {t: count(client, t) for t in truth}
    assert got == truth
    assert FOLD in worker.columns

"""The in-process oracle: strictly increasing, contiguous ranges, durable blocks, errors."""

from __future__ import annotations

import itertools
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from bigtable_lite import (
    MAX_TS,
    InvalidArgument,
    LocalStore,
    MutationResult,
    Put,
    RowMutation,
    StoreClosed,
    Unavailable,
)
from percolator import Client
from percolator.errors import OracleError
from percolator.oracle import (
    FIRST_TIMESTAMP,
    MAX_COUNT,
    ORACLE_TABLE,
    RECOVERY_MARGIN,
    Oracle,
    OracleConflict,
    OracleExhausted,
    OracleStats,
    TimestampSource,
    rewrite_mark,
    stored_mark,
)
from tests.procs import percolator_command


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    with LocalStore(tmp_path / "data") as s:
        yield s


class CountingStore:
    """A LocalStore that counts durable writes and can fail the next ones."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.synced_writes = 0
        self.fail_next = 0

    def read_rows(self, reads: Sequence[object]) -> object:
        return self.store.read_rows(reads)  # type: ignore[arg-type]

    def mutate_rows(self, mutations: Sequence[RowMutation], *, sync: bool = False
                    ) -> list[MutationResult]:
        assert [m.table for m in mutations] == [ORACLE_TABLE]
        assert sync, "the high-water mark must be written with sync=True"
        if self.fail_next:
            self.fail_next -= 1
            raise Unavailable("injected write failure")
        self.synced_writes += 1
        return self.store.mutate_rows(mutations, sync=sync)


def must_increase(values: Sequence[int]) -> None:
    assert all(a < b for a, b in itertools.pairwise(values)), "not strictly increasing"


def test_timestamps_start_at_one_and_strictly_increase(store: LocalStore) -> None:
    oracle = Oracle(store)
    values = [oracle.get_timestamp() for _ in range(1000)]
    assert values[0] == FIRST_TIMESTAMP
    must_increase(values)


def test_ranges_are_contiguous_and_above_everything_before(store: LocalStore) -> None:
    oracle = Oracle(store)
    before = oracle.get_timestamp()
    first = oracle.get_timestamps(100)
    assert first == before + 1
    assert oracle.get_timestamp() == first + 100
    assert oracle.get_timestamps(MAX_COUNT) == first + 101


@pytest.mark.parametrize("count", [0, -1, MAX_COUNT + 1])
def test_bad_counts_are_refused_before_anything_changes(store: LocalStore, count: int) -> None:
    oracle = Oracle(store)
    with pytest.raises(InvalidArgument):
        oracle.get_timestamps(count)
    assert oracle.get_timestamp() == FIRST_TIMESTAMP


@pytest.mark.parametrize("count", [True, 1.0, "1"])
def test_non_int_counts_are_type_errors(store: LocalStore, count: object) -> None:
    with pytest.raises(TypeError):
        Oracle(store).get_timestamps(count)  # type: ignore[arg-type]


def test_one_fsynced_write_per_block(store: LocalStore) -> None:
    counting = CountingStore(store)
    oracle = Oracle(counting, block_size=100)  # type: ignore[arg-type]
    for _ in range(1000):
        oracle.get_timestamp()
    assert counting.synced_writes == 10
    assert oracle.stats().persisted_high_water >= 1000


def test_restart_starts_strictly_above_the_persisted_mark(tmp_path: Path) -> None:
    seen: list[int] = []
    for _ in range(3):
        with LocalStore(tmp_path / "data") as store:
            oracle = Oracle(store, block_size=50)
            seen += [oracle.get_timestamp() for _ in range(120)]
            mark = oracle.stats().persisted_high_water
            # No close(): the oracle keeps nothing that a crash would lose.
        with LocalStore(tmp_path / "data") as store:
            assert Oracle(store).get_timestamp() == mark + 1
            seen.append(mark + 1)
    must_increase(seen)


def test_a_failed_persist_changes_nothing_and_is_retried(store: LocalStore) -> None:
    counting = CountingStore(store)
    oracle = Oracle(counting, block_size=10)  # type: ignore[arg-type]
    values = [oracle.get_timestamp()]
    mark = oracle.stats().persisted_high_water
    values += [oracle.get_timestamp() for _ in range(mark - values[0])]  # the block, used up
    counting.fail_next = 1
    with pytest.raises(Unavailable):
        oracle.get_timestamp()
    values.append(oracle.get_timestamp())
    assert values == list(range(1, mark + 2))
    assert counting.synced_writes == 2


def test_second_oracle_on_one_store_conflicts_instead_of_repeating(store: LocalStore) -> None:
    first, second = Oracle(store, block_size=10), Oracle(store, block_size=10)
    first.get_timestamp()
    with pytest.raises(OracleConflict) as info:
        second.get_timestamp()
    assert isinstance(info.value, OracleError)


def test_exhaustion_at_the_top_of_the_64_bit_range(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "data") as store:
        assert rewrite_mark(store, MAX_TS - 9, None)  # as if near the end
    with LocalStore(tmp_path / "data") as store:
        oracle = Oracle(store, block_size=1000)
        assert oracle.get_timestamps(8) == MAX_TS - 8
        with pytest.raises(OracleExhausted):
            oracle.get_timestamps(2)
        assert oracle.get_timestamp() == MAX_TS
        with pytest.raises(OracleExhausted):
            oracle.get_timestamp()


def test_closed_oracle_refuses_and_store_stays_open(store: LocalStore) -> None:
    oracle = Oracle(store)
    oracle.get_timestamp()
    oracle.close()
    oracle.close()
    with pytest.raises(StoreClosed):
        oracle.get_timestamp()
    with pytest.raises(StoreClosed):
        oracle.get_timestamps(5)
    assert store.read_row(ORACLE_TABLE, b"high_water")


def test_stats_and_protocol(store: LocalStore) -> None:
    oracle = Oracle(store)
    assert isinstance(oracle, TimestampSource)
    assert oracle.stats().mean_batch_size == 0.0
    oracle.get_timestamp()
    oracle.get_timestamps(9)
    stats = oracle.stats()
    assert stats == OracleStats(10, 2, stats.persisted_high_water)
    assert stats.mean_batch_size == 5.0
    assert stats.persisted_high_water >= 10


def test_many_threads_get_unique_increasing_timestamps(store: LocalStore) -> None:
    oracle = Oracle(store, block_size=1000)
    per_thread: list[list[int]] = [[] for _ in range(16)]
    start = threading.Barrier(len(per_thread))

    def take(out: list[int], index: int) -> None:
        start.wait(timeout=30)
        for i in range(2000):
            if (i + index) % 7 == 0:
                first = oracle.get_timestamps(3)
                out.extend((first, first + 1, first + 2))
            else:
                out.append(oracle.get_timestamp())

    threads = [threading.Thread(target=take, args=(out, i)) for i, out in enumerate(per_thread)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    everything = [ts for out in per_thread for ts in out]
    assert len(set(everything)) == len(everything)
    for out in per_thread:
        must_increase(out)
    assert max(everything) == len(everything)  # no gaps within one process lifetime


def test_a_timestamp_if_ready_never_persists_nor_waits_long(store: LocalStore) -> None:
    """What a one-phase commit may ask while holding store row locks (see one_phase)."""
    oracle = Oracle(store, block_size=2)
    assert oracle.timestamp_if_ready(0.0) is None  # the first block is not yet persisted
    first = oracle.get_timestamp()  # persists a mark covering first + 2
    assert oracle.timestamp_if_ready(0.0) == first + 1
    assert oracle.timestamp_if_ready(0.0) == first + 2
    assert oracle.timestamp_if_ready(0.0) is None  # the next needs a new mark
    assert oracle.get_timestamp() == first + 3  # ...which the plain call persists
    held = threading.Event()
    release = threading.Event()

    def hold_the_lock() -> None:
        with oracle._lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold_the_lock)
    thread.start()
    try:
        assert held.wait(10)
        assert oracle.timestamp_if_ready(0.01) is None  # busy: gives up, does not wait
    finally:
        release.set()
        thread.join(10)
    assert oracle.timestamp_if_ready(0.0) == first + 4


def five_commits(data: Path) -> int:
    """Five transactions committed in a new data directory; a timestamp after them."""
    with Client.embedded(data) as client:
        for i in range(5):
            with client.transaction() as txn:
                txn.set(b"r%d" % i, b"c", b"v%d" % i)
        return client.timestamp()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``percolator ARGS`` run to its end, with nothing on stdin (no confirmation)."""
    return subprocess.run(percolator_command(*args), capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)


def test_a_damaged_mark_stops_the_node_with_the_repair_and_the_repair_is_safe(
        tmp_path: Path) -> None:
    """A mark that does not decode is never skipped (timestamps could go backwards):
    `percolator serve` refuses to start, naming the cell and the repair command, and
    `percolator repair --oracle` restarts the oracle above every timestamp stored."""
    data = tmp_path / "data"
    last = five_commits(data)
    with LocalStore(data) as store:
        store.mutate_rows([RowMutation(ORACLE_TABLE, b"high_water", (
            Put(b"mark", 0, b"\x01\x02\x03"),))], sync=True)

    refused = cli("serve", "--data-dir", str(data), "--listen", "127.0.0.1:0")
    assert refused.returncode == 1, refused
    for named in ("table _oracle, row high_water, column mark", "3 bytes, expected 8",
                  "percolator repair --oracle --data-dir DIR"):
        assert named in refused.stderr, refused.stderr
    not_confirmed = cli("repair", "--oracle", "--data-dir", str(data))
    assert not_confirmed.returncode == 1 and "nothing written" in not_confirmed.stderr
    repaired = cli("repair", "--oracle", "--data-dir", str(data), "--yes")
    assert repaired.returncode == 0, repaired.stderr
    assert "oracle high-water mark: \\x01\\x02\\x03 (3 bytes)" in repaired.stdout
    with Client.embedded(data) as client:
        assert client.timestamp() > RECOVERY_MARGIN > last  # above all it handed out
        assert client.begin().get(b"r4", b"c") == b"v4"
    assert "nothing to repair" in cli("repair", "--oracle", "--data-dir", str(data)).stdout


def test_repair_raises_a_mark_that_decodes_below_a_stored_timestamp(tmp_path: Path) -> None:
    """Eight bytes, but below the timestamps of the cells (a damaged disk, a raw write):
    the oracle would hand out timestamps again.  `repair --oracle` says so and writes the
    recovered mark; a sound mark is left alone."""
    data = tmp_path / "data"
    last = five_commits(data)

    sound = cli("repair", "--oracle", "--data-dir", str(data))
    assert sound.returncode == 0, sound.stderr
    assert "nothing to repair: the mark decodes" in sound.stdout
    with LocalStore(data) as store:
        sound_mark = stored_mark(store)
        store.mutate_rows([RowMutation(ORACLE_TABLE, b"high_water", (
            Put(b"mark", 0, (2).to_bytes(8, "big")),))], sync=True)
    assert sound_mark is not None and int.from_bytes(sound_mark, "big") >= last

    not_confirmed = cli("repair", "--oracle", "--data-dir", str(data))
    assert not_confirmed.returncode == 1 and "nothing written" in not_confirmed.stderr
    assert "the mark decodes (2) but is below timestamp" in not_confirmed.stdout
    repaired = cli("repair", "--oracle", "--data-dir", str(data), "--yes")
    assert repaired.returncode == 0, repaired.stderr
    with Client.embedded(data) as client:
        assert client.timestamp() > RECOVERY_MARGIN > last
        assert client.begin().get(b"r4", b"c") == b"v4"

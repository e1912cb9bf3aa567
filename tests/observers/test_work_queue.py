"""The work queue between a worker's feed and its processors, on its own: a cell queued
or in flight once, coalescing, entries arriving while a cell runs kept for after it,
backing-off cells held until due, batches of one column at a time, requeue at the
front, cells of buckets no longer owned dropped, no work while fenced, room and
stopping."""

from __future__ import annotations

import threading
from collections.abc import Callable

from observers._batch_limits import BatchLimits
from observers._notifications import Entry, PendingCell
from observers._registry import Observer
from observers._retry import Backoff, RetryBook
from observers._work_queue import WorkQueue
from percolator.clock import FakeClock

A, B = b"col:a", b"col:b"  # A's observer takes batches of up to 3 cells, B's one at a time


def cell(row: bytes, column: bytes = A, *changes: int, bucket: int = 0) -> PendingCell:
    return PendingCell(row, column, tuple(
        Entry(b"log%d" % ts, row, column, bucket, ts) for ts in (changes or (10,))))


def new_queue(size: int = 100, owns: Callable[[bytes, int], bool] | None = None,
              may_run: Callable[[], bool] = lambda: True,
              clock: FakeClock | None = None) -> tuple[WorkQueue, RetryBook, threading.Event]:
    retry = RetryBook(clock or FakeClock(), retry_backoff=Backoff(1.0, 2.0, 10.0))
    stopping = threading.Event()
    limits = BatchLimits([Observer(A, max_batch=3), Observer(B)])
    queue = WorkQueue(size, limits, retry, owns or (lambda column, bucket: True), stopping,
                      may_run=may_run)
    return queue, retry, stopping


def take(queue: WorkQueue) -> tuple[list[bytes], bool]:
    taken = queue.take()
    assert taken is not None
    cells, batching = taken
    return [c.row for c in cells], batching


def held(queue: WorkQueue) -> tuple[int, int]:
    with queue.lock:
        return queue.counts()


def test_a_cell_is_queued_once_and_its_entries_coalesce() -> None:
    queue, _, _ = new_queue()
    assert queue.offer([cell(b"r1", A, 10), cell(b"r2", B)]) == 2
    assert queue.offer([cell(b"r1", A, 11, 10)]) == 0  # queued already: merged
    taken = queue.take()
    assert taken is not None
    cells, _ = taken
    assert [e.change_ts for e in cells[0].entries] == [10, 11], "each entry once"


def test_entries_arriving_while_a_cell_runs_are_queued_after_it() -> None:
    queue, _, _ = new_queue()
    queue.offer([cell(b"r", B, 10)])
    cells, batching = queue.take()  # type: ignore[misc]
    assert queue.offer([cell(b"r", B, 12)]) == 0, "in flight: held beside it"
    assert held(queue) == (1, 1)
    queue.done(cells, batching, False)
    again = queue.take()
    assert again is not None and [e.change_ts for e in again[0][0].entries] == [12]


def test_a_batch_is_the_head_cell_and_its_columns_cells_behind_it() -> None:
    queue, _, _ = new_queue()
    queue.offer([*(cell(b"a%d" % i) for i in range(5)), cell(b"b0", B), cell(b"a9")])
    assert take(queue) == ([b"a0", b"a1", b"a2"], True)  # A's limit: 3


def test_a_batch_takes_its_columns_cells_however_the_columns_interleave() -> None:
    queue, _, _ = new_queue()
    queue.offer([cell(b"a0"), cell(b"b0", B), cell(b"a1"), cell(b"b1", B), cell(b"a2"),
                 cell(b"a3")])
    assert take(queue) == ([b"a0", b"a1", b"a2"], True), "B's cells between do not cut it"
    assert take(queue) == ([b"b0"], False), "then the oldest head of another column"
    assert take(queue) == ([b"b1"], False)


def test_a_batch_takes_its_groups_cells_and_groups_run_one_batch_at_a_time() -> None:
    c = b"col:c"
    retry = RetryBook(FakeClock(), retry_backoff=Backoff(1.0, 2.0, 10.0))
    limits = BatchLimits([Observer(A, max_batch=3), Observer(B), Observer(c, max_batch=2)])
    queue = WorkQueue(100, limits, retry, lambda column, bucket: True, threading.Event(),
                      groups={A: b"\x00g", c: b"\x00g"})
    queue.offer([cell(b"a0"), cell(b"a1"), cell(b"c0", c), cell(b"c1", c), cell(b"c2", c),
                 cell(b"b0", B), cell(b"a2"), cell(b"a3")])
    first = queue.take()
    assert first is not None and first[1]
    assert [(x.row, x.column) for x in first[0]] == [
        (b"a0", A), (b"a1", A), (b"a2", A), (b"c0", c), (b"c1", c)], \
        "A's cells up to its limit, then C's (same group) up to theirs"
    assert take(queue) == ([b"b0"], False), "B is in no group: it runs meanwhile"
    waiting: list[tuple[list[bytes], bool]] = []
    processor = threading.Thread(target=lambda: waiting.append(take(queue)))
    processor.start()
    processor.join(0.2)
    assert processor.is_alive(), "no batch of the group while one runs"
    queue.done(*first, False)
    processor.join(10)
    assert waiting == [([b"c2", b"a3"], True)], "the oldest head first, its group with it"


def test_a_gathering_column_waits_while_its_group_has_cells_queued() -> None:
    g = b"col:g"  # gathers for 5 s, batches of up to 3, in A's group
    clock = FakeClock()
    retry = RetryBook(clock, retry_backoff=Backoff(1.0, 2.0, 10.0))
    limits = BatchLimits([Observer(A, max_batch=3), Observer(g, max_batch=3)])
    queue = WorkQueue(100, limits, retry, lambda column, bucket: True, threading.Event(),
                      groups={A: b"\x00g", g: b"\x00g"}, gather={g: 5.0},
                      clock=lambda: clock.now_ms() / 1000.0)

    def run(expected: list[bytes], why: str) -> None:
        taken = queue.take()
        assert taken is not None
        assert [x.row for x in taken[0]] == expected, why
        queue.done(*taken, False)

    queue.offer([cell(b"g0", g), cell(b"a0"), cell(b"a1")])
    run([b"a0", b"a1"],
        "g's head came first, but waits while A has cells queued, and stays out of A's batch")
    run([b"g0"], "nothing else of the group queued: it runs")
    queue.offer([cell(b"g1", g), cell(b"g2", g), cell(b"a2"), cell(b"g3", g)])
    run([b"g1", b"g2", b"g3", b"a2"],
        "a full batch of g waits no longer (its group's cells come with it)")
    queue.offer([cell(b"g4", g), cell(b"a3"), cell(b"a4")])
    run([b"a3", b"a4"], "g4 waits again")
    queue.offer([cell(b"a5")])
    clock.advance(5.0)
    run([b"g4", b"a5"], "after its gather time it goes, first, its group's cells with it")


def test_batches_of_one_column_run_one_at_a_time() -> None:
    queue, _, _ = new_queue()
    queue.offer([cell(b"a%d" % i) for i in range(5)])
    first = queue.take()
    assert first is not None and first[1]
    second: list[tuple[list[bytes], bool]] = []
    processor = threading.Thread(target=lambda: second.append(take(queue)))
    processor.start()
    processor.join(0.2)
    assert processor.is_alive(), "waits while a batch of the column is in flight"
    queue.done(*first, False)
    processor.join(10)
    assert second == [([b"a3", b"a4"], True)]


def test_a_cell_with_a_setback_goes_alone() -> None:
    queue, retry, _ = new_queue()
    queue.offer([cell(b"a1"), cell(b"a2")])
    retry.retry_later((b"a1", A), "conflict")  # queued, then set back: not batched
    retry.retry_later((b"a1", A), "again")
    retry._cells[(b"a1", A)].due_ms = 0  # noqa: SLF001 -- due, but with a record
    assert take(queue) == ([b"a1"], False)


def test_a_backing_off_cell_is_held_until_due_then_queued() -> None:
    clock = FakeClock()
    queue, retry, _ = new_queue(clock=clock)
    retry.retry_later((b"later", A), "conflict")  # due in 1 s of the clock
    assert queue.offer([cell(b"later"), cell(b"now", B)]) == 1
    assert held(queue) == (2, 0), "held, not forgotten: nothing is read twice"
    assert take(queue) == ([b"now"], False)
    clock.advance(1.0)
    assert take(queue) == ([b"later"], False)


def test_a_cell_retried_after_a_setback_keeps_its_entries() -> None:
    clock = FakeClock()
    queue, retry, _ = new_queue(clock=clock)
    queue.offer([cell(b"r", B, 10)])
    cells, batching = queue.take()  # type: ignore[misc]
    queue.offer([cell(b"r", B, 11)])
    retry.retry_later((b"r", B), "conflict")
    queue.done(cells, batching, False, retry=cells)
    assert held(queue) == (1, 0)
    clock.advance(1.0)
    again = queue.take()
    assert again is not None and [e.change_ts for e in again[0][0].entries] == [10, 11]


def test_a_requeued_batch_goes_back_to_the_front() -> None:
    queue, _, _ = new_queue()
    queue.offer([cell(b"a0"), cell(b"a1"), cell(b"b0", B)])
    taken = queue.take()
    assert taken is not None
    cells, batching = taken
    queue.requeue(cells)
    queue.done(cells, batching, True)
    assert held(queue) == (3, 0)
    assert take(queue) == ([b"a0", b"a1"], True)


def test_cells_of_buckets_no_longer_owned_are_dropped() -> None:
    mine = {0}
    queue, _, _ = new_queue(owns=lambda column, bucket: bucket in mine)
    queue.offer([cell(b"r1", B, bucket=1), cell(b"r0", B, bucket=0), cell(b"r2", B, bucket=2)])
    assert queue.drop({B: frozenset({2})}) == 1, "revoked: dropped at once"
    assert take(queue) == ([b"r0"], False), "bucket 1, lost meanwhile, dropped when reached"
    assert held(queue) == (0, 1)


def test_entries_of_one_cell_in_several_buckets_are_dropped_one_by_one() -> None:
    """Entries written under an older partition prefix sit in another bucket: a cell's
    entries are dropped, and taken, by their own buckets."""
    mine = {0, 1}
    queue, _, _ = new_queue(owns=lambda column, bucket: bucket in mine)
    old, new = cell(b"r", B, 10, bucket=0), cell(b"r", B, 11, bucket=1)
    queue.offer([old, new])
    assert queue.drop({B: frozenset({0})}) == 1
    mine.discard(0)
    taken = queue.take()
    assert taken is not None and [e.change_ts for e in taken[0][0].entries] == [11]
    queue.offer([cell(b"r", B, 12, bucket=0)])  # arrives while r runs: held beside it
    assert queue.drop({B: frozenset({0})}) == 1, "dropped from beside the running cell too"


def test_nothing_is_taken_while_fenced() -> None:
    fenced = [True]
    queue, _, stopping = new_queue(may_run=lambda: not fenced[0])
    queue.offer([cell(b"r", B)])
    result: list[tuple[list[bytes], bool]] = []
    processor = threading.Thread(target=lambda: result.append(take(queue)))
    processor.start()
    processor.join(0.2)
    assert processor.is_alive() and held(queue) == (1, 0)
    fenced[0] = False
    queue.notify_everyone()
    processor.join(10)
    assert result == [([b"r"], False)]


def test_room_and_stopping() -> None:
    queue, _, stopping = new_queue(size=4)
    queue.offer([cell(b"b%d" % i, B) for i in range(3)])
    assert queue.room() == 1
    stopping.set()
    assert queue.take() is None


def test_a_released_bucket_is_not_claimed_by_the_pull_that_releases_it() -> None:
    """If the node hands the bucket straight back (its new owner left meanwhile), it must
    read it from its start: this worker dropped the bucket's cells when it released it."""
    import dataclasses

    from observers._feed import Feed
    from observers._ownership import Ownership
    from observers._stats import Counters
    from percolator.notifications import Cursors, PullReply

    queue, _, stopping = new_queue()
    ownership = Ownership({B: b""}, lease=10.0)
    reply = PullReply({B: frozenset({1, 2})}, {B: frozenset({2})}, 0, (), Cursors(9, {}))
    ownership.apply(reply, 0.0)
    feed = Feed(None, b"t", "w", ownership, queue, Counters(),  # type: ignore[arg-type]
                heartbeat=1.0, stats=lambda: (b"", b""), stats_interval=60.0,
                stopping=stopping)
    queue.offer([cell(b"r1", B, bucket=1), cell(b"r2", B, bucket=2)])
    feed._release_idle(ownership.revoking)  # noqa: SLF001 -- the step under test
    request, _, _ = feed._request(0.0)  # noqa: SLF001
    assert request.released == {B: frozenset({2})}
    assert request.held == {B: frozenset({1})}, "released: not held"
    assert held(queue) == (1, 0) and dataclasses.replace(request, released={}).held


def test_a_bucket_whose_revocation_is_cancelled_is_read_again_from_its_start() -> None:
    """The node revokes a bucket, this worker drops its queued cells (one still runs, so
    it is not released yet), then the node cancels the revocation (the assignment
    changed back): the worker's cursor is past the dropped cells, so its next pull must
    not claim the bucket, and the node reads it from its start."""
    from observers._feed import Feed
    from observers._ownership import Ownership
    from observers._stats import Counters
    from percolator.notifications import Cursors, PullReply

    queue, _, stopping = new_queue()
    ownership = Ownership({B: b""}, lease=10.0)
    feed = Feed(None, b"t", "w", ownership, queue, Counters(),  # type: ignore[arg-type]
                heartbeat=1.0, stats=lambda: (b"", b""), stats_interval=60.0,
                stopping=stopping)
    both = {B: frozenset({1, 2})}
    feed._apply(PullReply(both, {}, 0, (), Cursors(9, {})), 0.0)  # noqa: SLF001
    queue.offer([cell(b"r1", B, bucket=2)])
    assert take(queue) == ([b"r1"], False), "r1 runs"
    queue.offer([cell(b"r2", B, bucket=2)])
    feed._apply(PullReply(both, {B: frozenset({2})}, 0, (), Cursors(9, {})),  # noqa: SLF001
                0.0)
    assert held(queue) == (0, 1), "r2 dropped; r1 still running"
    request, _, _ = feed._request(0.0)  # noqa: SLF001
    assert request.released == {} and request.held == both, "not released while r1 runs"
    feed._apply(PullReply(both, {}, 0, (), Cursors(10, {})), 0.0)  # noqa: SLF001 -- cancelled
    request, _, _ = feed._request(0.0)  # noqa: SLF001
    assert request.held == {B: frozenset({1})}, "bucket 2 is read again from its start"


def test_a_dropped_cell_leaves_no_retry_record_behind() -> None:
    """A cell that failed and whose bucket went to another worker: its backoff record
    goes with it (else `percolator status` counts it backing off for good)."""
    queue, retry, _ = new_queue()
    queue.offer([cell(b"r1", B, bucket=1)])
    retry.failed((b"r1", B), "it failed once")
    assert len(retry) == 1
    assert queue.drop({B: frozenset({1})}) == 1
    assert len(retry) == 0

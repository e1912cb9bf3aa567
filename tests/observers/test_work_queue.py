"""The work queue between a worker's scanners and processors, on its own: a cell queued
or in flight once, coalescing, batches of one column at a time, requeue at the front,
versions already handled hidden from older scans, back-pressure and stopping."""

from __future__ import annotations

import threading
from collections.abc import Callable

from observers.batch_limits import BatchLimits
from observers.notifications import PendingCell
from observers.registry import Observer
from observers.retry import RetryBook
from observers.work_queue import DELETING, WorkQueue
from percolator.clock import FakeClock

A, B = b"col:a", b"col:b"  # A's observer takes batches of up to 3 cells, B's one at a time


def cell(row: bytes, column: bytes = A, *stamps: int) -> PendingCell:
    return PendingCell(row, column, tuple((ts, b"n") for ts in (stamps or (10,))))


def new_queue(size: int = 100, owns: Callable[[bytes, bytes], bool] | None = None
              ) -> tuple[WorkQueue, RetryBook, threading.Event]:
    retry = RetryBook(FakeClock())
    stopping = threading.Event()
    limits = BatchLimits([Observer(A, max_batch=3), Observer(B)])
    queue = WorkQueue(size, limits, retry, owns or (lambda row, column: True), stopping)
    return queue, retry, stopping


def offer(queue: WorkQueue, *cells: PendingCell) -> tuple[int, int]:
    epoch = queue.begin_scan()
    try:
        return queue.offer(list(cells), epoch)
    finally:
        queue.end_scan(epoch)


def take(queue: WorkQueue) -> tuple[list[bytes], bool]:
    taken = queue.take()
    assert taken is not None
    cells, batching = taken
    return [c.row for c in cells], batching


def test_a_cell_is_queued_once_and_its_versions_coalesce() -> None:
    queue, _, _ = new_queue()
    assert offer(queue, cell(b"r1", A, 10), cell(b"r2", B)) == (2, 2)
    assert offer(queue, cell(b"r1", A, 11, 10)) == (0, 1)  # queued already: refreshed
    taken = queue.take()
    assert taken is not None
    cells, _ = taken
    assert cells[0].versions == ((11, b"n"), (10, b"n"))
    assert offer(queue, cell(b"r1", A, 12)) == (0, 1), "in flight: not queued again"
    queue.done(cells, False, False)
    assert offer(queue, cell(b"r1", A, 12)) == (1, 1)


def test_a_batch_is_the_head_cell_and_its_columns_cells_behind_it() -> None:
    queue, _, _ = new_queue()
    offer(queue, *(cell(b"a%d" % i) for i in range(5)), cell(b"b0", B), cell(b"a9"))
    assert take(queue) == ([b"a0", b"a1", b"a2"], True)  # A's limit: 3


def test_batches_of_one_column_run_one_at_a_time() -> None:
    queue, _, _ = new_queue()
    offer(queue, *(cell(b"a%d" % i) for i in range(5)))
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
    retry.retry_later((b"a0", A), "conflict")
    offer(queue, cell(b"a1"), cell(b"a2"))
    retry.retry_later((b"a1", A), "conflict")  # queued, then set back: not batched
    assert take(queue) == ([b"a1"], False)


def test_backing_off_and_foreign_cells_are_not_queued() -> None:
    queue, retry, _ = new_queue(owns=lambda row, column: row != b"theirs")
    retry.retry_later((b"later", A), "conflict")
    # Seen: the share's pending cells (the backlog), backing off or not; queued: "mine".
    assert offer(queue, cell(b"later"), cell(b"theirs"), cell(b"mine")) == (1, 2)
    with queue.lock:
        assert queue.counts() == (1, 0)


def test_a_requeued_batch_goes_back_to_the_front() -> None:
    queue, _, _ = new_queue()
    offer(queue, cell(b"a0"), cell(b"a1"), cell(b"b0", B))
    taken = queue.take()
    assert taken is not None
    cells, batching = taken
    queue.requeue(cells)
    queue.done(cells, batching, True)
    with queue.lock:
        assert queue.counts() == (3, 0)
    assert take(queue) == ([b"a0", b"a1"], True)


def test_handled_versions_are_hidden_from_scans_that_began_before() -> None:
    queue, _, _ = new_queue()
    old_scan = queue.begin_scan()
    queue.note_done(b"r", A, [10])  # handled (deleted) after the old scan's snapshot
    assert queue.offer([cell(b"r", A, 10)], old_scan) == (0, 0)
    queue.end_scan(old_scan)
    assert offer(queue, cell(b"r", A, 11, 10)) == (1, 1)
    taken = queue.take()
    assert taken is not None and taken[0][0].versions == ((11, b"n"), (10, b"n")), \
        "a scan that began after the note sees a version it still holds (not yet deleted)"


def test_versions_whose_delete_is_queued_are_hidden_from_every_scan() -> None:
    queue, _, _ = new_queue()
    queue.note_done(b"r", A, [10], DELETING)
    assert offer(queue, cell(b"r", A, 10)) == (0, 0)
    assert offer(queue, cell(b"r", A, 10)) == (0, 0)
    queue.clear()  # the worker stopped: its queued deletes are gone with it
    assert offer(queue, cell(b"r", A, 10)) == (1, 1)


def test_a_full_queue_holds_scanners_until_it_drains_to_half() -> None:
    queue, _, stopping = new_queue(size=4)
    offer(queue, *(cell(b"b%d" % i, B) for i in range(4)))
    result: list[bool] = []
    scanner = threading.Thread(target=lambda: result.append(queue.wait_for_room()))
    scanner.start()
    scanner.join(0.2)
    assert scanner.is_alive(), "waits while the queue is full"
    for _ in range(2):
        taken = queue.take()
        assert taken is not None
        queue.done(*taken, False)
    scanner.join(10)
    assert result == [True]
    stopping.set()
    assert not queue.wait_for_room() and queue.take() is None

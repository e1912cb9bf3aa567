"""The citation observers, embedded and over gRPC: the exact refs diff (edits, deletes,
re-adds, duplicates, self-citations, missing papers), loading (generated and SNAP),
verification and its diff, and the OBSERVERS plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from observers import Worker, load_spec
from observers.citations import (
    CITED_BY,
    OBSERVERS,
    PROCESSED_REFS,
    REF_COUNT,
    REFS,
    FoldObserver,
    RefsObserver,
    encode_refs,
    generate_graph,
    load_graph,
    load_snap_file,
    make_observers,
    snapshot_papers,
    stored_counts,
    verify,
)
from observers.citations.combine import QUEUE_PREFIX, combine_row
from observers.citations.schema import decode_count
from percolator import Client

from .observer_fixtures import REPO, client_fixture, read, server_fixture  # noqa: F401

SAMPLE = REPO / "tests" / "observers" / "data" / "cit-sample.txt"


def set_refs(client: Client, refs: dict[str, list[str] | None]) -> None:
    with client.transaction() as txn:
        for paper, r in refs.items():
            if r is None:
                txn.delete(paper, REFS)
            else:
                txn.set(paper, REFS, encode_refs(r))


def counts(client: Client, ids: list[str]) -> dict[str, tuple[int, int]]:
    """{id: (ref_count, cited_by)}, missing cells as 0."""
    cells = read(client, [(i.encode(), c) for i in ids for c in (REF_COUNT, CITED_BY)])
    return {i: (decode_count(cells[(i.encode(), REF_COUNT)]),
                decode_count(cells[(i.encode(), CITED_BY)])) for i in ids}


def settle(worker: Worker) -> None:
    worker.run_until_idle(timeout=60)


@pytest.mark.parametrize("combine", [True, False], ids=["combining", "naive"])
def test_refs_diff_is_exact_through_edits_deletes_and_readds(client: Client,
                                                             combine: bool) -> None:
    # hot=0: every cited_by goes through slots and folds when combining.
    worker = Worker(client, make_observers(combine=combine, hot=0), threads=2)
    ids = ["a", "b", "c", "d", "x", "ghost"]
    set_refs(client, {"a": ["b", "c", "c", "a"], "x": ["b"]})  # duplicate, self-citation
    settle(worker)
    assert counts(client, ids) == {"a": (3, 1), "b": (0, 2), "c": (0, 1), "d": (0, 0),
                                   "x": (1, 0), "ghost": (0, 0)}
    set_refs(client, {"a": ["d", "b", "ghost"]})  # drops c and a, adds d and a missing paper
    settle(worker)
    assert counts(client, ids) == {"a": (3, 0), "b": (0, 2), "c": (0, 0), "d": (0, 1),
                                   "x": (1, 0), "ghost": (0, 1)}
    set_refs(client, {"a": None})  # withdrawn: cites nothing
    settle(worker)
    assert counts(client, ids) == {"a": (0, 0), "b": (0, 1), "c": (0, 0), "d": (0, 0),
                                   "x": (1, 0), "ghost": (0, 0)}
    assert read(client, [(b"a", REF_COUNT)])[(b"a", REF_COUNT)] is None, "0 is a missing cell"
    set_refs(client, {"a": ["c"], "ghost": ["a"]})  # re-added; the ghost appears
    settle(worker)
    assert counts(client, ids) == {"a": (1, 1), "b": (0, 1), "c": (0, 1), "d": (0, 0),
                                   "x": (1, 0), "ghost": (1, 0)}
    assert verify(client).ok


def test_coalesced_edits_and_order_only_changes(client: Client) -> None:
    """Several edits before the observer runs are one diff; reordering refs changes nothing."""
    worker = Worker(client, OBSERVERS, threads=2)  # registers the columns; not started yet
    set_refs(client, {"p": ["a", "b"]})
    set_refs(client, {"p": ["b", "c"]})
    set_refs(client, {"p": None})
    set_refs(client, {"p": ["c", "d", "c"]})
    settle(worker)
    assert counts(client, ["p", "a", "b", "c", "d"]) == {
        "p": (2, 0), "a": (0, 0), "b": (0, 0), "c": (0, 1), "d": (0, 1)}
    before = worker.stats().processed
    set_refs(client, {"p": ["d", "c"]})
    settle(worker)
    assert counts(client, ["p", "c", "d"]) == {"p": (2, 0), "c": (0, 1), "d": (0, 1)}
    assert worker.stats().processed == before + 1


def test_system_and_combining_cells_stay_out_of_user_scans(client: Client) -> None:
    worker = Worker(client, make_observers(hot=0), threads=2)
    set_refs(client, {"p1": ["p2"], "p2": ["p1", "p3"]})
    settle(worker)
    with client.transaction() as txn:
        assert txn.get_system(b"p2", PROCESSED_REFS) == encode_refs(["p1", "p3"])
        papers = dict(snapshot_papers(txn))
        assert papers == {"p1": ["p2"], "p2": ["p1", "p3"]}
        assert stored_counts(txn).backward == {"p1": 1, "p2": 1, "p3": 1}
        rows = {row for row, _, _ in txn.scan()}
    assert combine_row(b"p1") in rows, "combining rows are ordinary cells ..."
    assert all(not r.startswith(QUEUE_PREFIX) for r in {p.encode() for p in papers}), \
        "... in a row range that paper readers skip"
    assert snapshot_papers(client) is not None
    assert dict(snapshot_papers(client)) == papers


def test_verify_reports_a_readable_diff(client: Client) -> None:
    worker = Worker(client, OBSERVERS, threads=2)
    set_refs(client, {"p1": ["p2", "p3"], "p2": ["p3"]})
    settle(worker)
    good = verify(client)
    assert good.ok and good.papers == 2 and good.report().startswith("verified")
    with client.transaction() as txn:  # corrupt two counts behind the observers' back
        txn.set(b"p3", CITED_BY, b"7")
        txn.set(b"p9", REF_COUNT, b"1")
    bad = verify(client)
    assert not bad.ok
    assert bad.diff == ("forward['p9']: stored=1 recount=0",
                        "backward['p3']: stored=7 recount=2")
    assert "MISMATCH: 2 counts differ" in bad.report()


def test_load_graph_batches_and_registers_columns(client: Client) -> None:
    papers = generate_graph(300, seed=7)
    result = load_graph(client, papers, batch=64)  # before any worker: must still notify
    assert (result.papers, result.transactions) == (300, 5)
    Worker(client, OBSERVERS, threads=2).run_until_idle(timeout=120)
    assert verify(client).ok
    with pytest.raises(ValueError, match="reserved"):
        load_graph(client, {"\x00cq/p1": []})
    with pytest.raises(ValueError, match="reserved"):
        load_graph(client, {"p1": ["\x00x"]})
    with pytest.raises(ValueError):
        load_graph(client, {"p1": []}, batch=0)


def test_load_snap_file(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "d") as client:
        result = load_snap_file(client, SAMPLE, progress=False)
        Worker(client, OBSERVERS, threads=2).run_until_idle(timeout=60)
        check = verify(client)
    assert check.ok, check.report()
    assert result.papers == check.papers > 0


def test_observers_list_is_a_loadable_plugin() -> None:
    loaded = load_spec("observers.citations:OBSERVERS")
    assert [type(o) for o in loaded] == [RefsObserver, type(OBSERVERS[1])]
    assert isinstance(loaded[1], FoldObserver)
    assert {o.column for o in loaded} == {REFS, b"citations:fold"}


def test_refs_observer_parks_malformed_refs(tmp_path: Path) -> None:
    with Client.embedded(tmp_path / "d") as client:
        worker = Worker(client, OBSERVERS, threads=1, max_failures=1)
        with client.transaction() as txn:
            txn.set(b"bad", REFS, b"not json")
            txn.set(b"good", REFS, json.dumps(["bad"]).encode())
        stats = worker.run_until_idle(timeout=60)
        assert stats.parked == 1
        assert counts(client, ["good", "bad"]) == {"good": (1, 0), "bad": (0, 1)}

"""Synthetic citation graphs and edit streams: deterministic, heavy-tailed, well-formed.

Seeded; set CITATIONS_SEED to try another seed.  The seed is printed (shown on failure).
"""

from __future__ import annotations

import os
import statistics
from collections import Counter

import pytest

from observers.citations.graph import (
    AddPaper,
    ChangeRefs,
    CiteMissing,
    DeleteRefs,
    Edit,
    ReaddRefs,
    apply_edit,
    edit_stream,
    generate_graph,
    make_id,
)
from observers.citations.recount import expected_counts

SEED = int(os.environ.get("CITATIONS_SEED", "1729"))


def in_degrees(papers: dict[str, list[str]]) -> Counter[str]:
    return Counter(expected_counts(papers).backward)


def test_generation_is_deterministic_per_seed() -> None:
    print(f"seed={SEED}")
    a = generate_graph(20_000, SEED)
    assert a == generate_graph(20_000, SEED)
    assert a != generate_graph(20_000, SEED + 1)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 150])
def test_tiny_graphs(n: int) -> None:
    papers = generate_graph(n, SEED)
    assert list(papers) == [make_id(i) for i in range(n)]
    for i, refs in enumerate(papers.values()):
        # Without earlier papers, only ids that do not exist yet can be cited.
        assert all(int(r[1:]) < i or int(r[1:]) >= n for r in refs)


def test_graph_100k_is_realistic() -> None:
    print(f"seed={SEED}")
    n = 100_000
    papers = generate_graph(n, SEED)
    assert list(papers) == [make_id(i) for i in range(n)]

    out = sorted(len(refs) for refs in papers.values())
    mean_out = statistics.fmean(out)
    print(f"out-degree: mean={mean_out:.1f} median={out[n // 2]} max={out[-1]}")
    assert 10 <= mean_out <= 20
    assert out[-1] >= 3 * out[n // 2] and out[0] == 0

    indeg = in_degrees(papers)
    cited = sorted(indeg.get(p, 0) for p in papers)
    median_in, max_in = cited[n // 2], cited[-1]
    print(f"in-degree: median={median_in} p99={cited[int(n * 0.99)]} max={max_in}")
    assert 1 <= median_in <= 20, "most papers are cited a few times"
    assert max_in >= 100 * median_in and sum(c >= 1000 for c in cited) >= 3, (
        "a few papers are cited thousands of times")

    index = {p: i for i, p in enumerate(papers)}
    n_refs = n_missing = n_later = 0
    for i, refs in enumerate(papers.values()):
        for r in refs:
            n_refs += 1
            j = index.get(r)
            if j is None:
                n_missing += 1
                assert int(r[1:]) >= n
            elif j >= i:
                n_later += 1
    print(f"refs={n_refs} to missing ids={n_missing} to later papers={n_later}")
    assert n_later == 0
    assert 0.001 * n_refs <= n_missing <= 0.02 * n_refs


def replay(papers: dict[str, list[str]], edits: list[Edit]) -> dict[str, list[str]]:
    state = {k: list(v) for k, v in papers.items()}
    for e in edits:
        apply_edit(state, e)
    return state


def test_edit_stream_is_deterministic_and_leaves_input_alone() -> None:
    print(f"seed={SEED}")
    papers = generate_graph(2_000, SEED)
    before = {k: list(v) for k, v in papers.items()}
    a = list(edit_stream(papers, 3_000, SEED))
    assert papers == before
    assert a == list(edit_stream(papers, 3_000, SEED))
    assert a != list(edit_stream(papers, 3_000, SEED + 1))


def test_edit_stream_is_well_formed() -> None:
    print(f"seed={SEED}")
    papers = generate_graph(2_000, SEED)
    graph_cites = set(expected_counts(papers).backward)
    state = {k: list(v) for k, v in papers.items()}
    ever: set[str] = set(state)
    deleted: set[str] = set()
    filled_cited_missing = 0
    edits = list(edit_stream(papers, 5_000, SEED))
    kinds = Counter(type(e).__name__ for e in edits)
    print(dict(kinds))
    assert set(kinds) == {"AddPaper", "ChangeRefs", "DeleteRefs", "ReaddRefs", "CiteMissing"}
    for e in edits:
        if isinstance(e, AddPaper):
            assert e.paper not in ever
            filled_cited_missing += e.paper in graph_cites
            ever.add(e.paper)
        elif isinstance(e, ReaddRefs):
            assert e.paper in deleted
            deleted.remove(e.paper)
        elif isinstance(e, DeleteRefs):
            deleted.add(e.paper)
        elif isinstance(e, CiteMissing):
            old = state[e.paper]
            extra = e.refs[len(old):]
            assert list(e.refs[:len(old)]) == old
            assert extra and not set(extra) & ever
        else:
            assert isinstance(e, ChangeRefs)
        if not isinstance(e, DeleteRefs):
            assert isinstance(e.refs, tuple) and all(isinstance(r, str) and r for r in e.refs)
        apply_edit(state, e)  # raises if the edit's precondition does not hold
    assert filled_cited_missing > 0, "new papers fill in ids the graph already cites"


def test_apply_edit_checks_preconditions() -> None:
    papers = {"a": ["b"]}
    with pytest.raises(ValueError, match="already has refs"):
        apply_edit(papers, AddPaper("a", ()))
    with pytest.raises(ValueError, match="has no refs"):
        apply_edit(papers, ChangeRefs("b", ("a",)))
    with pytest.raises(ValueError, match="has no refs"):
        apply_edit(papers, DeleteRefs("b"))
    apply_edit(papers, DeleteRefs("a"))
    apply_edit(papers, ReaddRefs("a", ("a", "a")))
    assert papers == {"a": ["a", "a"]}


def test_edit_stream_on_empty_graph_starts_with_adds() -> None:
    edits = list(edit_stream({}, 50, SEED))
    assert isinstance(edits[0], AddPaper)
    replay({}, edits)

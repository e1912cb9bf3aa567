"""Synthetic citation graphs and edit streams, seeded, for tests and benchmarks.

The graph is a growth model in the spirit of Price (1976): papers arrive in id order
and each cites earlier papers, choosing every reference from a mixture of

* preferential attachment (probability proportional to 1 + citations received), which
  gives the heavy-tailed in-degree of real citation data (a few papers cited thousands
  of times, most a handful);
* a uniform pick among recent papers, because citations mostly go to recent work;
* a uniform pick among all earlier papers;
* rarely, an id that does not exist yet (a preprint cited before it is in the table).

With half the references preferential the in-degree tail is roughly a power law with
exponent 3, close to what cit-HepTh and cit-Patents show.  Out-degree is log-normal
(mean about 15), with a few papers citing nothing.  Duplicates within one refs list
are kept when the sampling produces them, as real data has them and the counters must
ignore them.

Pure Python and :class:`random.Random` so the output depends only on the seed and the
parameters, not on numpy's version; one million papers take about 15 s of one core.
"""

from __future__ import annotations

import gc
import math
import random
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate

ID_PREFIX = "p"
ID_DIGITS = 7


def make_id(index: int) -> str:
    """Paper id of the index-th paper; zero-padded so row order is arrival order up to 10**7."""
    return f"{ID_PREFIX}{index:0{ID_DIGITS}d}"


@dataclass(frozen=True, slots=True)
class GraphParams:
    """Shape of a generated graph; the defaults resemble a physics citation network."""

    median_refs: float = 12.0
    """Median out-degree of papers that cite anything (log-normal)."""
    refs_sigma: float = 0.7
    """Log-normal sigma of the out-degree; 0.7 gives a mean near 15."""
    max_refs: int = 400
    no_refs_rate: float = 0.03
    """Fraction of papers that cite nothing."""
    preferential: float = 0.5
    """Fraction of references chosen proportionally to 1 + in-degree."""
    recent: float = 0.3
    """Fraction of references chosen uniformly among recent papers."""
    recent_window: float = 0.05
    """The recent papers: this fraction of the papers so far (at least 100)."""
    missing_rate: float = 0.005
    """Fraction of references to ids that do not exist (yet)."""
    missing_span: float = 0.1
    """Missing ids are drawn from the next ``missing_span * n`` ids after the graph's."""

    def __post_init__(self) -> None:
        for name in ("no_refs_rate", "preferential", "recent", "recent_window",
                     "missing_rate", "missing_span"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.preferential + self.recent + self.missing_rate > 1.0:
            raise ValueError("preferential + recent + missing_rate must be <= 1")
        if self.median_refs <= 0 or self.refs_sigma < 0 or self.max_refs < 0:
            raise ValueError("median_refs must be > 0, refs_sigma and max_refs >= 0")


DEFAULT_PARAMS = GraphParams()


def _out_degree(rnd: random.Random, p: GraphParams) -> int:
    if rnd.random() < p.no_refs_rate:
        return 0
    k = round(rnd.lognormvariate(math.log(p.median_refs), p.refs_sigma))
    return max(1, min(p.max_refs, k))


def generate_graph(n_papers: int, seed: int,
                   params: GraphParams = DEFAULT_PARAMS) -> dict[str, list[str]]:
    """A citation graph {paper id: refs} of ``n_papers`` papers, ids ``make_id(0..n-1)``.

    Every paper is a key (possibly with no refs).  Deterministic for (n, seed, params).
    """
    if type(n_papers) is not int or n_papers < 0:
        raise ValueError(f"n_papers must be a non-negative int, got {n_papers!r}")
    rnd = random.Random(seed)
    rand = rnd.random
    p = params
    n_missing = max(1, int(n_papers * p.missing_span))
    # Indices >= n_papers are the ids that do not exist (yet).
    ids = [make_id(i) for i in range(n_papers + n_missing)]
    # Cumulative thresholds for one draw of rand() per reference.
    t_missing = p.missing_rate
    t_pref = t_missing + p.preferential
    t_recent = t_pref + p.recent
    # Each paper appears once per citation received plus once for itself, so a uniform
    # pick from this list is a pick proportional to 1 + in-degree.
    # An array, not a list: 4 bytes per entry and no int object to chase per pick.
    attach = array("i")
    papers: dict[str, list[str]] = {}
    # Building a million lists would trigger the cyclic GC over and over, for nothing:
    # nothing here forms a cycle.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(n_papers):
            # Early papers have little to cite: at most one reference per earlier paper.
            k = min(i, _out_degree(rnd, p))
            window = min(i, max(100, int(i * p.recent_window)))
            n_attach = len(attach)
            # One comprehension per paper (not a loop of appends) for speed.
            cited = [
                n_papers + int(rand() * n_missing) if r < t_missing
                else attach[int(rand() * n_attach)] if r < t_pref
                else i - 1 - int(rand() * window) if r < t_recent
                else int(rand() * i)
                for r in [rand() for _ in range(k)]
            ]
            papers[ids[i]] = [ids[j] for j in cited]
            if cited and max(cited) >= n_papers:
                attach.extend(j for j in cited if j < n_papers)
            else:
                attach.extend(cited)
            attach.append(i)
    finally:
        if gc_was_enabled:
            gc.enable()
    return papers


# --- edit streams ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddPaper:
    """A new paper (never in the table before; maybe already cited) gets its refs."""

    paper: str
    refs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChangeRefs:
    """A paper with refs gets a revised list (some refs dropped, some added)."""

    paper: str
    refs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeleteRefs:
    """A paper's refs cell is deleted: it now cites nothing."""

    paper: str


@dataclass(frozen=True, slots=True)
class ReaddRefs:
    """A paper whose refs were deleted gets refs again."""

    paper: str
    refs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CiteMissing:
    """A paper with refs adds citations to ids that have no refs cell and were never added."""

    paper: str
    refs: tuple[str, ...]


Edit = AddPaper | ChangeRefs | DeleteRefs | ReaddRefs | CiteMissing
"""Every edit but DeleteRefs writes ``refs`` as the paper's whole new refs list."""


def apply_edit(papers: dict[str, list[str]], edit: Edit) -> None:
    """Apply one edit to a {paper: refs} map, checking its precondition (ValueError if unmet).

    The reference semantics of an edit: tests replay a stream with this to know what the
    store should hold afterwards.
    """
    if isinstance(edit, (AddPaper, ReaddRefs)):
        if edit.paper in papers:
            raise ValueError(f"{type(edit).__name__}: {edit.paper!r} already has refs")
        papers[edit.paper] = list(edit.refs)
    elif isinstance(edit, (ChangeRefs, CiteMissing)):
        if edit.paper not in papers:
            raise ValueError(f"{type(edit).__name__}: {edit.paper!r} has no refs")
        papers[edit.paper] = list(edit.refs)
    elif isinstance(edit, DeleteRefs):
        if papers.pop(edit.paper, None) is None:
            raise ValueError(f"DeleteRefs: {edit.paper!r} has no refs")
    else:
        raise TypeError(f"not an edit: {edit!r}")


@dataclass(frozen=True, slots=True)
class EditMix:
    """Relative weights of the edit kinds in a stream."""

    add: float = 0.35
    change: float = 0.30
    delete: float = 0.10
    readd: float = 0.10
    cite_missing: float = 0.15

    def __post_init__(self) -> None:
        ws = (self.add, self.change, self.delete, self.readd, self.cite_missing)
        if any(w < 0 for w in ws) or sum(ws) <= 0:
            raise ValueError("edit weights must be >= 0 and not all 0")


class _IdPool:
    """A set with O(1) uniform random choice, for picking papers to edit."""

    __slots__ = ("items", "pos")

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.pos = {x: i for i, x in enumerate(items)}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, x: str) -> bool:
        return x in self.pos

    def add(self, x: str) -> None:
        self.pos[x] = len(self.items)
        self.items.append(x)

    def remove(self, x: str) -> None:
        i = self.pos.pop(x)
        last = self.items.pop()
        if last != x:
            self.items[i] = last
            self.pos[last] = i

    def pick(self, rnd: random.Random) -> str:
        return self.items[int(rnd.random() * len(self.items))]


def edit_stream(papers: Mapping[str, list[str]], n_edits: int, seed: int,
                mix: EditMix = EditMix(),
                params: GraphParams = DEFAULT_PARAMS) -> Iterator[Edit]:
    """``n_edits`` well-formed edits over ``papers``; deterministic for its arguments.

    Each edit's precondition (see :func:`apply_edit`) holds on ``papers`` with the earlier
    edits applied.  New papers take ids ``make_id(k)`` for k = len(papers), len(papers)+1,
    ... skipping ids in use, so on a generated graph they fill in ids that the graph
    already cites but that did not exist; CiteMissing cites ids a little ahead of that,
    which later AddPapers fill in too.  ``papers`` is copied when called; it is never
    modified.
    """
    if type(n_edits) is not int or n_edits < 0:
        raise ValueError(f"n_edits must be a non-negative int, got {n_edits!r}")
    # A shallow copy is enough: the stream replaces refs lists, it never mutates one.
    return _edits(dict(papers), n_edits, random.Random(seed), mix, params)


def _edits(refs_of: dict[str, list[str]], n_edits: int, rnd: random.Random,
           mix: EditMix, params: GraphParams) -> Iterator[Edit]:
    present = _IdPool(sorted(refs_of))
    deleted = _IdPool([])
    next_new = len(refs_of)
    kinds = ("add", "change", "delete", "readd", "cite_missing")
    cum_weights = list(accumulate([mix.add, mix.change, mix.delete, mix.readd, mix.cite_missing]))

    def unused(k: int) -> bool:
        pid = make_id(k)
        return pid not in present and pid not in deleted

    def new_ref() -> str:
        # Copying a random paper's random ref picks proportionally to in-degree (the
        # preferential part); otherwise any paper with refs, or rarely a missing id.
        r = rnd.random()
        if r < params.missing_rate or not present:
            return missing_id()
        if r < params.missing_rate + params.preferential:
            src = refs_of[present.pick(rnd)]
            if src:
                return src[int(rnd.random() * len(src))]
        return present.pick(rnd)

    def missing_id() -> str:
        k = next_new + 1 + int(rnd.random() * 50)
        while not unused(k):
            k += 1
        return make_id(k)

    for _ in range(n_edits):
        kind = rnd.choices(kinds, cum_weights=cum_weights)[0]
        if kind in ("change", "delete", "cite_missing") and not present:
            kind = "add"
        if kind == "readd" and not deleted:
            kind = "add"
        edit: Edit
        if kind == "add":
            while not unused(next_new):
                next_new += 1
            paper = make_id(next_new)
            next_new += 1
            edit = AddPaper(paper, tuple(new_ref() for _ in range(_out_degree(rnd, params))))
            present.add(paper)
        elif kind == "readd":
            paper = deleted.pick(rnd)
            edit = ReaddRefs(paper, tuple(new_ref() for _ in range(_out_degree(rnd, params))))
            deleted.remove(paper)
            present.add(paper)
        elif kind == "delete":
            paper = present.pick(rnd)
            present.remove(paper)
            deleted.add(paper)
            del refs_of[paper]
            yield DeleteRefs(paper)
            continue
        elif kind == "change":
            paper = present.pick(rnd)
            kept = [r for r in refs_of[paper] if rnd.random() < 0.8]
            added = [new_ref() for _ in range(1 + int(rnd.random() * 3))]
            edit = ChangeRefs(paper, tuple(kept + added))
        else:
            paper = present.pick(rnd)
            extra = [missing_id() for _ in range(1 + int(rnd.random() * 2))]
            edit = CiteMissing(paper, tuple(refs_of[paper] + extra))
        refs_of[paper] = list(edit.refs)
        yield edit

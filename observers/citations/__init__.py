"""Citation counts, the example app: per paper, distinct papers cited and citing.

Data side only for now: the schema and its encodings, a synthetic graph and edit-stream
generator, a SNAP edge-list loader and the batch recount that incremental results are
checked against.

Incremental side: the refs observer (counting) and the combining counters that fold
hot papers' backward deltas (combine), exported as ``OBSERVERS`` for any worker
(``percolator worker --observers observers.citations:OBSERVERS``); loading
(loading) and verification against the recount (verify).  docs/citations.md.
"""

from .combine import FOLD, QUEUE_END, QUEUE_PREFIX, CombiningCounter, FoldObserver
from .counting import (
    NAIVE_OBSERVERS,
    OBSERVERS,
    PROCESSED_REFS,
    RefsObserver,
    make_observers,
)
from .graph import (
    AddPaper,
    ChangeRefs,
    CiteMissing,
    DeleteRefs,
    Edit,
    EditMix,
    GraphParams,
    ReaddRefs,
    apply_edit,
    edit_stream,
    generate_graph,
    make_id,
)
from .loading import LoadResult, load_graph, load_snap_file
from .recount import Counts, Recount, Timing, diff_counts, expected_counts, recount
from .schema import (
    CITED_BY,
    REF_COUNT,
    REFS,
    decode_count,
    decode_refs,
    encode_count,
    encode_refs,
    paper_id,
    row_key,
)
from .snap import SnapFormatError, iter_snap_edges, load_snap
from .verify import Verification, batch_recount, snapshot_papers, stored_counts, verify

__all__ = [
    "CITED_BY", "FOLD", "NAIVE_OBSERVERS", "OBSERVERS", "PROCESSED_REFS", "QUEUE_END",
    "QUEUE_PREFIX", "REFS", "REF_COUNT", "AddPaper", "ChangeRefs", "CiteMissing",
    "CombiningCounter",
    "Counts", "DeleteRefs", "Edit", "EditMix", "FoldObserver", "GraphParams", "LoadResult",
    "ReaddRefs", "Recount", "RefsObserver", "SnapFormatError", "Timing", "Verification",
    "apply_edit", "batch_recount", "decode_count", "decode_refs", "diff_counts", "edit_stream",
    "encode_count", "encode_refs", "expected_counts", "generate_graph", "iter_snap_edges",
    "load_graph", "load_snap", "load_snap_file", "make_id", "make_observers", "paper_id",
    "recount", "row_key", "snapshot_papers", "stored_counts", "verify",
]

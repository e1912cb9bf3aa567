"""Citation counts, the example app: per paper, distinct papers cited and citing.

Data side only for now: the schema and its encodings, a synthetic graph and edit-stream
generator, a SNAP edge-list loader and the batch recount that incremental results are
checked against.  The observers and their ``OBSERVERS`` list are added here later.
"""

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

__all__ = [
    "CITED_BY", "REFS", "REF_COUNT", "AddPaper", "ChangeRefs", "CiteMissing", "Counts",
    "DeleteRefs", "Edit", "EditMix", "GraphParams", "ReaddRefs", "Recount", "SnapFormatError",
    "Timing", "apply_edit", "decode_count", "decode_refs", "diff_counts", "edit_stream",
    "encode_count", "encode_refs", "expected_counts", "generate_graph", "iter_snap_edges",
    "load_snap", "make_id", "paper_id", "recount", "row_key",
]

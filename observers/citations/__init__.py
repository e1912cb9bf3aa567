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

__all__ = [
    "CITED_BY", "REFS", "REF_COUNT", "AddPaper", "ChangeRefs", "CiteMissing", "DeleteRefs",
    "Edit", "EditMix", "GraphParams", "ReaddRefs", "apply_edit", "decode_count", "decode_refs",
    "edit_stream", "encode_count", "encode_refs", "generate_graph", "make_id", "paper_id",
    "row_key",
]

"""Schema of the citation example: its column names and the byte format of each cell.

The one owner of these encodings; observers, loaders and tests import from here
instead of repeating literals.

Table layout, one row per paper (row key = paper id, UTF-8)::

    column            value                                 written by
    ----------------  ------------------------------------  ------------------------
    paper:refs        JSON list of cited paper ids, UTF-8   the user / loaders
    paper:ref_count   decimal ASCII, distinct refs          the forward-count observer
    paper:cited_by    decimal ASCII, distinct citing papers the backward-count observer

Grammar::

    refs   = "[" [ id *( "," id ) ] "]"   ; compact JSON: no spaces, non-ASCII kept as UTF-8
    id     = JSON string, non-empty
    count  = "0" / %x31-39 *DIGIT        ; no sign, no leading zeros

A missing ``paper:refs`` cell means "no references"; a missing count cell means 0.
Refs keep the order and duplicates the user wrote; counts are of *distinct* ids, and
a self-citation counts like any other id.  ``cited_by`` may exist for an id that has
no ``paper:refs`` of its own (a citation to a paper not in the table yet).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

REFS = b"paper:refs"
REF_COUNT = b"paper:ref_count"
CITED_BY = b"paper:cited_by"

_COUNT = re.compile(rb"0|[1-9][0-9]*")


def row_key(paper: str) -> bytes:
    """The row key of a paper: its id in UTF-8."""
    _check_id(paper, "paper id")
    return paper.encode("utf-8")


def paper_id(row: bytes) -> str:
    """The paper id of a row key; ValueError if the key is not UTF-8."""
    try:
        return row.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"row key {row!r} is not a UTF-8 paper id") from exc


def encode_refs(refs: Sequence[str]) -> bytes:
    """Canonical bytes of a refs list, so equal lists always write equal cells."""
    if not isinstance(refs, (list, tuple)):
        raise TypeError(f"refs must be a list or tuple of str, not {type(refs).__name__}")
    for i, ref in enumerate(refs):
        _check_id(ref, f"refs[{i}]")
    return json.dumps(list(refs), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_refs(value: bytes | None) -> list[str]:
    """Refs of a ``paper:refs`` cell; None (no cell) is no refs.

    Accepts any JSON spacing, so hand-written cells load; rejects anything that is not
    a list of non-empty strings with a ValueError naming the column and the problem.
    """
    if value is None:
        return []
    try:
        refs = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{REFS.decode()}: not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{REFS.decode()}: malformed JSON: {exc}; value {value[:80]!r}") from exc
    if not isinstance(refs, list):
        # Bad stored data, not a caller's wrong type: ValueError like the other cases.
        raise ValueError(  # noqa: TRY004
            f"{REFS.decode()}: expected a JSON list, got {type(refs).__name__}"
        )
    for i, ref in enumerate(refs):
        if not isinstance(ref, str) or not ref:
            raise ValueError(
                f"{REFS.decode()}: element {i} is {ref!r}; paper ids are non-empty strings"
            )
    return refs


def encode_count(count: int) -> bytes:
    """Decimal ASCII of a non-negative count."""
    if type(count) is not int:
        raise TypeError(f"count must be an int, not {type(count).__name__}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return str(count).encode("ascii")


def decode_count(value: bytes | None) -> int:
    """Count of a ``paper:ref_count`` / ``paper:cited_by`` cell; None (no cell) is 0."""
    if value is None:
        return 0
    if not _COUNT.fullmatch(value):
        raise ValueError(f"count cell {value[:40]!r} is not a canonical decimal count")
    return int(value)


def _check_id(paper: object, what: str) -> None:
    if not isinstance(paper, str):
        raise TypeError(f"{what} must be str, not {type(paper).__name__}")
    if not paper:
        raise ValueError(f"{what} must not be empty")

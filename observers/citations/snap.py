"""Loader for real citation data in SNAP edge-list format (e.g. cit-HepTh.txt, cit-Patents.txt).

Format, one edge per line, plain or gzip-compressed (detected by its magic bytes)::

    # Directed graph (each unordered pair of nodes is saved once): Cit-HepTh.txt
    # FromNodeId	ToNodeId
    9907233	9301011

``#`` lines and blank lines are skipped; the two ids may be separated by any whitespace.
Ids are non-negative decimal integers in SNAP and are kept as their canonical decimal
string ("0042" becomes "42") so that one paper has one id.  An edge "A B" means paper A
cites paper B; duplicate edges and self-loops are kept as written (the counters decide
what they mean, see :mod:`observers.citations.schema`).
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

GZIP_MAGIC = b"\x1f\x8b"
_PROGRESS_EVERY = 1 << 16
"""Lines between progress-bar updates; updating per line would cost more than parsing."""


class SnapFormatError(ValueError):
    """A malformed line; ``path`` and ``line_no`` (1-based) say where."""

    def __init__(self, path: str, line_no: int, problem: str) -> None:
        super().__init__(f"{path}:{line_no}: {problem}")
        self.path = path
        self.line_no = line_no


def iter_snap_edges(path: str | os.PathLike[str], *,
                    progress: bool | None = None) -> Iterator[tuple[str, str]]:
    """Edges (citing, cited) of a SNAP file, streamed in file order.

    ``progress`` shows a tqdm bar over the file's bytes on stderr; None means "if stderr
    is a terminal", so logs and CI output stay clean.
    """
    name = os.fspath(path)
    if progress is None:
        progress = sys.stderr.isatty()
    with open(name, "rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        lines: io.BufferedIOBase = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        with lines, tqdm(total=size, unit="B", unit_scale=True, desc=Path(name).name,
                         disable=not progress, file=sys.stderr) as bar:
            done = 0
            line_no = 0
            # Each id is parsed once and then shared: a paper cited 10,000 times is one
            # str, not 10,000 (cit-Patents has 16.5M edges among 3.8M ids).
            ids: dict[bytes, str] = {}
            try:
                for line_no, line in enumerate(lines, 1):
                    if line_no % _PROGRESS_EVERY == 0:
                        # The raw file's offset: for gzip, compressed bytes read so far.
                        pos = raw.tell()
                        bar.update(pos - done)
                        done = pos
                    fields = line.split()
                    if len(fields) == 2:
                        # Fast path: both ids seen before.
                        src, dst = ids.get(fields[0]), ids.get(fields[1])
                        if src is not None and dst is not None:
                            yield src, dst
                            continue
                    if not fields or fields[0].startswith(b"#"):
                        continue
                    yield _parse_edge(ids, name, line_no, line, fields)
            except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
                raise SnapFormatError(name, line_no + 1, f"corrupt gzip data: {exc}") from exc
            bar.update(size - done)


def load_snap(path: str | os.PathLike[str], *,
              progress: bool | None = None) -> dict[str, list[str]]:
    """{citing paper: [cited papers]} of a SNAP file, in file order.

    Papers that are only ever cited have no key: they have no refs of their own.
    """
    papers: dict[str, list[str]] = {}
    for src, dst in iter_snap_edges(path, progress=progress):
        refs = papers.get(src)
        if refs is None:
            papers[src] = [dst]
        else:
            refs.append(dst)
    return papers


def _parse_edge(ids: dict[bytes, str], path: str, line_no: int, line: bytes,
                fields: list[bytes]) -> tuple[str, str]:
    """Check an edge with a new id, remember its ids, or raise naming the line."""
    if len(fields) != 2:
        raise SnapFormatError(
            path, line_no,
            f"expected 2 node ids 'FromNodeId<TAB>ToNodeId', got {len(fields)} fields: "
            f"{line[:80]!r}",
        )
    for token in fields:
        if not token.isdigit():
            raise SnapFormatError(
                path, line_no, f"node id {token[:40]!r} is not a non-negative decimal integer"
            )
        if token not in ids:
            ids[token] = str(int(token))
    return ids[fields[0]], ids[fields[1]]

"""SNAP edge-list loader: sample file, comments, whitespace, gzip, errors with line numbers."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from observers.citations.snap import SnapFormatError, iter_snap_edges, load_snap

SAMPLE = Path(__file__).parent / "data" / "cit-sample.txt"
SAMPLE_PAPERS = {
    "1001": ["9304045", "9308122", "9309097", "9311042"],
    "1002": ["1001", "9304045", "1001"],
    "9304045": ["9308122"],
    "1003": ["1003"],
    "9309097": ["9901"],
}


def test_sample_file() -> None:
    papers = load_snap(SAMPLE, progress=False)
    assert papers == SAMPLE_PAPERS
    assert list(papers) == list(SAMPLE_PAPERS), "papers in file order"


def test_each_id_is_one_shared_str() -> None:
    # Memory: a paper cited many times must not cost one str per citation.
    papers = load_snap(SAMPLE, progress=False)
    assert papers["1002"][0] is papers["1002"][2]
    assert papers["1001"][0] is papers["1002"][1]


def test_edges_stream_in_file_order() -> None:
    edges = list(iter_snap_edges(str(SAMPLE), progress=False))
    assert len(edges) == 10
    assert edges[0] == ("1001", "9304045") and edges[-1] == ("9309097", "9901")


def test_gzip_is_detected_by_content(tmp_path: Path) -> None:
    for name in ("cit.txt.gz", "cit-no-suffix"):
        with SAMPLE.open("rb") as src, gzip.open(tmp_path / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
        assert load_snap(tmp_path / name, progress=False) == SAMPLE_PAPERS


def test_empty_and_comment_only_files(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "comments.txt").write_bytes(b"# FromNodeId\tToNodeId\n\n  \n#x\n")
    assert load_snap(tmp_path / "empty.txt", progress=False) == {}
    assert load_snap(tmp_path / "comments.txt", progress=False) == {}


def test_crlf_and_no_final_newline(tmp_path: Path) -> None:
    (tmp_path / "crlf.txt").write_bytes(b"# c\r\n1\t2\r\n3 4")
    assert load_snap(tmp_path / "crlf.txt", progress=False) == {"1": ["2"], "3": ["4"]}


@pytest.mark.parametrize("line, problem", [
    (b"1\t2\t3", "expected 2 node ids"),
    (b"12", "expected 2 node ids"),
    (b"1,2", "expected 2 node ids"),
    (b"FromNodeId\tToNodeId", "not a non-negative decimal integer"),
    (b"1\t-2", "not a non-negative decimal integer"),
    (b"1\t2.0", "not a non-negative decimal integer"),
])
def test_malformed_line_names_file_and_line(tmp_path: Path, line: bytes, problem: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"# header\n1\t2\n\n" + line + b"\n5\t6\n")
    with pytest.raises(SnapFormatError, match=problem) as info:
        load_snap(path, progress=False)
    assert info.value.line_no == 4
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}:4: ")
    assert isinstance(info.value, ValueError)


def test_malformed_line_in_gzip_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"1\t2\n" * 100_000 + b"oops\n")
    with pytest.raises(SnapFormatError, match=r"bad\.txt\.gz:100001: "):
        load_snap(path, progress=False)


def test_truncated_gzip_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.txt.gz"
    data = gzip.compress(b"1\t2\n" * 10_000)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapFormatError, match="corrupt gzip"):
        load_snap(path, progress=False)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError):
        load_snap("/nonexistent/cit-HepTh.txt", progress=False)


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"1\t2\n" * 70_000)
    assert len(load_snap(path, progress=True)["1"]) == 70_000
    out, err = capsys.readouterr()
    assert out == "" and "big.txt" in err and "100%" in err


def test_progress_off_when_not_a_tty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load_snap(SAMPLE)  # stderr is captured by pytest: not a terminal
    assert capsys.readouterr().err == ""

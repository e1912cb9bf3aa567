"""The README's tour runs as written: its snippets, pasted in order into one session.

The tour's Python blocks run in order in one namespace, in an empty directory, as a
reader would paste them; its ``percolator serve`` line runs as a real subprocess
(on a free port: the blocks' address is replaced by the one it reports, the only
change made to them).  A ``print(...)  # OUTPUT`` line must print OUTPUT (up to a
trailing ``...``), and a block closes every client it opens: a block that left one
open would have the next depend on it, and fail for a reader who skipped it.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from percolator import Client
from tests.procs import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
PRINTED = re.compile(r"^\s*print\(.*\)\s+# (.+)$", re.M)


def tour() -> list[tuple[str, str, int]]:
    """(language, code, line number in README.md) of each block of the tour section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## A short tour")
    end = text.index("\n## ", start + 1)
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 2)
            for m in BLOCK.finditer(text, start, end)]


def serve_args(command: str) -> tuple[str, str, list[str]]:
    """(data dir, listen address, other arguments) of the tour's `percolator serve` line."""
    argv = shlex.split(command)
    assert argv[0].endswith("percolator") and argv[1] == "serve", command
    values: dict[str, str] = {}
    rest: list[str] = []
    options = iter(argv[2:])
    for arg in options:
        if arg in ("--data-dir", "--listen"):
            values[arg] = next(options)
        else:
            rest.append(arg)
    return values["--data-dir"], values["--listen"], rest


def track_clients(monkeypatch: pytest.MonkeyPatch) -> tuple[list[Client], list[Client]]:
    """(clients made, clients closed), as the README's code makes and closes them."""
    made: list[Client] = []
    closed: list[Client] = []
    init, close = Client.__init__, Client.close

    def tracked_init(self: Client, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    def tracked_close(self: Client) -> None:
        close(self)
        closed.append(self)

    monkeypatch.setattr(Client, "__init__", tracked_init)
    monkeypatch.setattr(Client, "close", tracked_close)
    return made, closed


def test_the_tour_runs_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = tour()
    assert [lang for lang, _, _ in blocks].count("python") >= 3, blocks
    monkeypatch.chdir(tmp_path)
    made, closed = track_clients(monkeypatch)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    with contextlib.ExitStack() as stack:
        address: tuple[str, str] | None = None
        for lang, code, line in blocks:
            if lang == "sh":
                [command] = [c for c in code.splitlines() if c.strip()]
                data, listen, rest = serve_args(command)
                server = stack.enter_context(ServerProcess(tmp_path / data, *rest))
                address = (listen, server.address)
                continue
            assert lang == "python", f"README.md:{line}: unexpected block {lang!r}"
            if address is not None:
                code = code.replace(*address)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102
            left_open = [c for c in made if not any(c is d for d in closed)]
            for client in left_open:
                client.close()
            assert not left_open, f"README.md:{line}: the block leaves a client open"
            for expected in PRINTED.findall(code):
                shown = expected.split("...")[0].strip().rstrip(",")
                assert shown in out.getvalue(), (
                    f"README.md:{line}: printed {out.getvalue()!r}, the README says {expected!r}")
        assert address is not None, "the tour starts no server"

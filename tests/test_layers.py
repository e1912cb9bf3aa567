"""Layers call downward only: bigtable_lite < percolator < observers < applications.

Every module of the packages is read with ``ast`` (nothing is imported) and every
import in it is checked, wherever it stands: at the top, inside a function (a lazy
import is still a dependency), under ``if TYPE_CHECKING:`` (an annotation naming an
upper layer still ties the lower one to it: upward is upward), in a ``try``.
Relative imports are resolved against the importing module, and ``from pkg import
name`` counts as an import of ``pkg.name`` when that is a module.

Ranks, lowest first:

0. ``bigtable_lite`` -- the tablet store;
1. ``percolator`` -- transactions, the oracle, the node;
2. ``observers`` -- the notification workers (a library);
3. applications: the citation example ``observers.citations``, and the command
   line: ``percolator.cli``, ``percolator.__main__`` and every ``commands``
   sub-package (the ``percolator`` script finds commands through the entry-point
   group ``percolator.commands``, so it never imports the packages above it).

Two rules: a module imports nothing of a higher rank, and nothing of a package that
comes later in the order bigtable_lite, percolator, observers (so percolator's own
commands, though applications, never import observers).  Imports by name at run time
(entry points, ``--observers pkg.module:name``) are how a lower layer is handed an
upper one on purpose, and are not imports here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bigtable_lite", "percolator", "observers")  # in layer order
APPLICATION = 3
APPLICATIONS = ("percolator.cli", "percolator.__main__", "percolator.commands",
                "observers.commands", "observers.citations")
LAYER_NAMES = {0: "bigtable_lite", 1: "percolator", 2: "the observers library",
               3: "the applications"}


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def rank(module: str) -> int | None:
    """The layer of one of our modules (None: not ours)."""
    top = module.split(".")[0]
    if top not in PACKAGES:
        return None
    if any(within(module, app) or ".commands." in f".{module}." for app in APPLICATIONS):
        return APPLICATION
    return PACKAGES.index(top)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


@dataclass(frozen=True)
class Import:
    line: int
    text: str        # the statement as written
    target: str      # the module it imports, resolved


def imports(module: str, is_package: bool, source: str, known: set[str]) -> Iterator[Import]:
    """Every import in ``source`` (anywhere in it), resolved to absolute module names."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, ast.unparse(node), alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[:len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                yield Import(node.lineno, ast.unparse(node), child if child in known else base)


def violations(module: str, path: Path, source: str, known: set[str]) -> list[str]:
    """Each upward import of ``module``, as ``file:line: statement (why)``."""
    here = rank(module)
    assert here is not None, module
    top = PACKAGES.index(module.split(".")[0])
    found: list[str] = []
    seen: set[tuple[int, str]] = set()
    for imp in imports(module, path.name == "__init__.py", source, known):
        there = rank(imp.target)
        if there is None or (imp.line, imp.target) in seen:
            continue
        seen.add((imp.line, imp.target))
        where = f"{path.relative_to(ROOT) if path.is_absolute() else path}:{imp.line}: {imp.text}"
        if there > here:
            found.append(f"{where}  -- {module} ({LAYER_NAMES[here]}) imports {imp.target}"
                         f" ({LAYER_NAMES[there]}), a higher layer")
        elif PACKAGES.index(imp.target.split(".")[0]) > top:
            found.append(f"{where}  -- {module} (package {PACKAGES[top]}) imports {imp.target}"
                         f" of package {imp.target.split('.')[0]}, which sits above it")
    return found


def test_no_module_imports_upward() -> None:
    modules = all_modules()
    known = set(modules)
    found = [v for name, path in modules.items()
             for v in violations(name, path, path.read_text(encoding="utf-8"), known)]
    assert not found, "upward imports:\n" + "\n".join(found)


def test_every_module_has_a_layer() -> None:
    modules = all_modules()
    assert len(modules) > 50  # the walk found the tree
    assert {rank(m) for m in modules} == {0, 1, 2, 3}
    assert rank("percolator.commands.serve") == APPLICATION
    assert rank("observers.commands.worker") == APPLICATION
    assert rank("observers.citations.graph") == APPLICATION
    assert rank("observers._worker") == 2


# --- the checker itself catches each kind of upward import -------------------------------


KNOWN = {"observers", "observers._worker", "observers.citations", "observers.citations.graph",
         "percolator", "percolator.client", "percolator.commands", "percolator.commands.serve",
         "bigtable_lite", "bigtable_lite._engine"}


def check(module: str, source: str, *, package: bool = False) -> list[str]:
    path = Path(*module.split("."), "__init__.py" if package else "")
    if not package:
        path = path.with_suffix(".py")
    return violations(module, path, source, KNOWN)


def test_checker_sees_top_level_lazy_and_type_checking_imports() -> None:
    assert check("percolator.client", "from observers import Worker")
    assert check("bigtable_lite._engine", "def f():\n    import percolator.client\n")
    assert check("percolator.client", "from typing import TYPE_CHECKING\n"
                 "if TYPE_CHECKING:\n    from observers._worker import Worker\n")
    assert check("observers._worker", "try:\n    import observers.citations.graph\n"
                 "except ImportError:\n    pass\n")


def test_checker_resolves_relative_imports_and_submodules() -> None:
    [found] = check("observers._worker", "from .citations import graph")
    assert "observers.citations.graph" in found and "observers/_worker.py:1" in found
    assert check("observers._worker", "from . import citations")
    assert check("observers", "from .citations import graph", package=True)
    assert not check("observers.citations.graph", "from .. import worker")
    assert not check("observers._worker", "from percolator import client")


def test_checker_keeps_each_package_below_the_next() -> None:
    [found] = check("percolator.commands.serve", "from observers import Worker")
    assert "package percolator" in found
    assert check("observers._worker", "from percolator.commands import serve")
    assert not check("observers.citations.graph", "from percolator.commands import serve")
